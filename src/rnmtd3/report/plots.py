"""Figures for a two-column paper (3.3 in wide), written as PNG and PDF. They take data and compute only
what they draw (means and std bands over seeds); the report's statistics come from `stats`.

Figures are built on matplotlib's Agg canvas directly (no pyplot), so making them touches no global backend or
figure registry, works without a display, and leaks nothing in a long-lived process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..methods import Method
from .stats import Report

PANEL_WIDTH_IN = 3.3
PANEL_HEIGHT_IN = 2.3
PNG_DPI = 300
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42}


DENSE_COLOR = (0.0, 0.0, 0.0, 1.0)
_TAB10, _TAB20 = matplotlib.colormaps["tab10"].colors, matplotlib.colormaps["tab20"].colors
PALETTE = (*(c for i, c in enumerate(_TAB10) if i != 7), *_TAB20[1::2])
"""Qualitative colours for the sparse methods: tab10 without its grey (the dashed reference line's), then the light
shades of tab20; methods side by side (2:4 beside 2:4 rigl) need hues apart, which a sequential map does not give."""


def method_colors(methods: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Method -> colour, in the order of `methods` (the order of the legends): dense in black, the sparse methods
    along PALETTE; computed once per report from all its methods, so that a method has one colour in every figure
    (past 19 sparse methods, colours repeat)."""
    sparse = [m for m in methods if not Method.parse(m).pattern.is_dense]
    return {m: tuple(PALETTE[sparse.index(m) % len(PALETTE)]) if m in sparse else DENSE_COLOR for m in methods}


def _steps_label(x: float, _pos: int) -> str:
    """Env steps as 0, 250k, 1M: readable at 7 pt where 1000000 is not."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
    return paths


def _new_figure(height_in: float = PANEL_HEIGHT_IN) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(PANEL_WIDTH_IN, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def draw_band(ax: Axes, frame: pd.DataFrame, value: str, colors: dict[str, tuple[float, ...]]) -> None:
    """One line per method of `colors` (in its order) that `frame` has: the mean over seeds of `value` at each step,
    shaded by ± the sample std over seeds (no band with a single seed). `frame` has columns method, seed, step and
    `value`."""
    for method, color in colors.items():
        mine = frame[frame["method"] == method]
        if mine.empty:
            continue
        by_step = mine.groupby("step")[value].agg(["mean", "std"]).fillna({"std": 0.0})
        ax.plot(by_step.index, by_step["mean"], color=color, lw=1.1, label=Method.parse(method).label())
        ax.fill_between(by_step.index, by_step["mean"] - by_step["std"], by_step["mean"] + by_step["std"],
                        color=color, alpha=0.18, lw=0)
    ax.xaxis.set_major_formatter(FuncFormatter(_steps_label))
    ax.set_xlabel("environment steps")
    ax.legend(frameon=False, loc="best")


def learning_curves_figure(curves: pd.DataFrame, env: str, colors: dict[str, tuple[float, ...]],
                           out_dir: Path) -> list[Path]:
    """Evaluation return over training on one env, one line per method."""
    with matplotlib.rc_context(STYLE):
        fig, ax = _new_figure()
        draw_band(ax, curves[curves["env"] == env], "return_mean", colors)
        ax.set_ylabel("evaluation return")
        ax.set_title(env)
        return _save(fig, out_dir, f"curves_{_slug(env)}")


def normalized_figure(aggregate: pd.DataFrame, colors: dict[str, tuple[float, ...]], out_dir: Path) -> list[Path]:
    """Per method, the IQM of normalized scores across envs with its 95% CI; dense = 1 as a dashed reference."""
    with matplotlib.rc_context(STYLE):
        fig, ax = _new_figure(0.9 + 0.3 * len(aggregate))
        rows = list(aggregate.itertuples())
        for y, row in enumerate(rows):
            ax.errorbar(row.iqm, y, xerr=[[row.iqm - row.ci_low], [row.ci_high - row.iqm]], fmt="o", ms=4,
                        capsize=2.5, lw=1.1, color=colors[row.method])
        ax.axvline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), [row.label for row in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel("normalized score (IQM, 95% CI)")
        return _save(fig, out_dir, "normalized_iqm")


def sad_figure(sad: pd.DataFrame, env: str, colors: dict[str, tuple[float, ...]], out_dir: Path) -> list[Path]:
    """SAD over training on one env, averaged over the networks of a run, then over seeds; nothing without data."""
    mine = sad[sad["env"] == env]
    if mine.empty:
        return []
    per_run = mine.groupby(["method", "seed", "run_id", "step"], as_index=False)["value"].mean()
    with matplotlib.rc_context(STYLE):
        fig, ax = _new_figure()
        draw_band(ax, per_run, "value", colors)
        ax.set_ylabel("SAD (mask flips, mean of networks)")
        ax.set_ylim(bottom=0)
        ax.set_title(env)
        return _save(fig, out_dir, f"sad_{_slug(env)}")


def write_plots(report: Report, out_dir: Path | str) -> list[Path]:
    """Every figure of the report into `out_dir` (created if needed); returns the files written, PNG and PDF."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = method_colors(report.methods)
    paths = []
    for env in report.envs:
        paths += learning_curves_figure(report.curves, env, colors, out)
    if not report.aggregate.empty:
        paths += normalized_figure(report.aggregate, colors, out)
    for env in report.envs:
        paths += sad_figure(report.sad, env, colors, out)
    return paths
