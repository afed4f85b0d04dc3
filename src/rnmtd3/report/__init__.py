"""Paper-style report from the registry's frames: `build_report` computes, `render` writes text, `write_plots`
draws figures. Statistics live in `stats`; tables and plots only consume a `Report`. Its columns are methods (a
pattern with its mask rule and init), named and ordered by `methods`."""

from .plots import write_plots
from .stats import Report, build_report
from .tables import FORMATS, LATEX_PREAMBLE, render

__all__ = ["FORMATS", "LATEX_PREAMBLE", "Report", "build_report", "render", "write_plots"]
