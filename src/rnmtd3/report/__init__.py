"""Paper-style report from the registry's frames: `build_report` computes, `render` writes text, `write_plots` draws
figures. Statistics live in `stats` (with `intervals` for rliable's bootstrap, `ablation` for `--by`, `cost` for
what a checkpoint costs, `figure_data` for what the figures draw); tables and plots only consume a `Report`. Its
columns are variants: a method (pattern, mask rule, init) with the values of any key that differs between its runs
(`variants`)."""

from .plots import write_plots
from .stats import Report, build_report
from .tables import FORMATS, LATEX_PREAMBLE, render

__all__ = ["FORMATS", "LATEX_PREAMBLE", "Report", "build_report", "render", "write_plots"]
