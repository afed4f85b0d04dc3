"""Figures for a two-column paper (3.3 in wide, a grid of envs wider), written as PNG and PDF. They draw what
`figure_data` computes from a Report, so every plotted number is testable apart from the drawing.

Every variant has one style in every figure: a colour by method (dense in black, the sparse methods in the
colour-blind-safe palette, so that the settings of one method share its hue) and its own pair of line
style and marker, so that lines are told apart in grayscale and without colour vision. What a band means and how
many seeds it covers is written on each figure (the legend's title or the axis label).

Figures are built on matplotlib's Agg canvas directly (no pyplot), so making them touches no global backend or
figure registry, works without a display, and leaks nothing in a long-lived process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from ..methods import Method
from . import figure_data as data
from .stats import Report

PANEL_WIDTH_IN = 3.3
PANEL_HEIGHT_IN = 2.3
GRID_PANEL_IN = (2.3, 1.8)
GRID_COLUMNS = 3
LEGEND_ROW_IN = 0.16
PNG_DPI = 300
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "legend.title_fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
         "pdf.fonttype": 42}
BAND_ALPHA = 0.15
MARKERS_PER_LINE = 6
BOOTSTRAP_BAND = "shaded: 95% stratified bootstrap CI"
CHAR_IN, HANDLE_IN = 0.05, 0.5
"""About the width of a character of a 7 pt legend entry, and of its handle with the gaps around it."""

DENSE_COLOR = (0.0, 0.0, 0.0)
PALETTE = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442",
           "#882255", "#117733", "#332288", "#999933", "#44AA99", "#AA4499", "#DDCC77", "#CC6677", "#88CCEE")
"""Colours of the sparse methods, colour-blind safe: Okabe and Ito's without their black (dense's), ordered so that
the first methods also differ in grey level (orange, then dark blue), yellow last as it is faint on white; then Paul
Tol's muted scheme for a sweep of many rules (past 16 sparse methods, colours repeat; line style and marker do not)."""
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
"""4 line styles and 7 markers, coprime: variant i gets (LINESTYLES[i % 4], MARKERS[i % 7]), 28 distinct pairs."""


@dataclass(frozen=True)
class Style:
    color: tuple[float, ...]
    linestyle: str
    marker: str

    def line(self, ms: float = 3.5) -> dict[str, Any]:
        return {"color": self.color, "ls": self.linestyle, "marker": self.marker, "lw": 1.2, "ms": ms}


def variant_styles(variants: Sequence[str], methods: Mapping[str, str]) -> dict[str, Style]:
    """Variant -> style, from every variant a report draws (its columns and, under --by, the ablation's lines), so
    that a variant looks the same in every figure. `methods` maps a variant to its method's text."""
    sparse = [m for m in dict.fromkeys(methods[v] for v in variants) if not Method.parse(m).pattern.is_dense]

    def color(method: str) -> tuple[float, ...]:
        if method not in sparse:
            return DENSE_COLOR
        return matplotlib.colors.to_rgb(PALETTE[sparse.index(method) % len(PALETTE)])

    return {v: Style(color(methods[v]), LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
            for i, v in enumerate(variants)}


def _steps_label(x: float, _pos: int) -> str:
    """Env steps as 0, 250k, 1M: readable at 7 pt where 1000000 is not."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _legend_shape(labels: Sequence[str], width_in: float) -> tuple[int, int]:
    """(columns, rows) of a legend that fits under a figure this wide."""
    entry_in = CHAR_IN * max(len(label) for label in labels) + HANDLE_IN
    columns = max(1, min(len(labels), int(width_in // entry_in)))
    return columns, math.ceil(len(labels) / columns)


def _figure(width_in: float, height_in: float, legend_labels: Sequence[str] = ()) -> Figure:
    """A figure whose height also holds a legend of these labels under it (constrained layout keeps it apart)."""
    rows = _legend_shape(legend_labels, width_in)[1] + 1 if legend_labels else 0
    fig = Figure(figsize=(width_in, height_in + rows * LEGEND_ROW_IN), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(fig: Figure, variants: Sequence[str], styles: Mapping[str, Style], labels: Mapping[str, str],
            title: str, *, points: bool = False) -> None:
    """One legend under the figure, an entry per variant in its style (its marker alone for a scatter, `points`);
    `title` says what the shading means."""
    handles = [Line2D([], [], **(styles[v].line() | ({"ls": "none"} if points else {}))) for v in variants]
    names = [labels[v] for v in variants]
    columns = _legend_shape(names, fig.get_figwidth())[0]
    fig.legend(handles, names, loc="outside lower center", ncols=columns, title=title, frameon=False)


def _markevery(n_points: int, index: int, n_lines: int) -> Any:
    """About MARKERS_PER_LINE markers per line, shifted per line so that markers of close lines do not stack."""
    if n_points <= MARKERS_PER_LINE:
        return None
    every = n_points // MARKERS_PER_LINE
    return (index * every // max(n_lines, 1), every)


def draw_lines(ax: Axes, frame: pd.DataFrame, x: str, y: str, low: str, high: str, styles: Mapping[str, Style],
               order: Sequence[str], ms: float = 3.5) -> None:
    """One line per variant of `order` that `frame` has, shaded between `low` and `high`; `ms` the marker size."""
    drawn = [v for v in order if v in set(frame["variant"])]
    for index, variant in enumerate(drawn):
        mine = frame[frame["variant"] == variant].sort_values(x)
        style = styles[variant]
        ax.plot(mine[x], mine[y], markevery=_markevery(len(mine), index, len(drawn)), label=variant,
                **style.line(ms))
        ax.fill_between(mine[x], mine[low], mine[high], color=style.color, alpha=BAND_ALPHA, lw=0)


def _seed_lines(ax: Axes, frame: pd.DataFrame, value: str, styles: Mapping[str, Style],
                order: Sequence[str]) -> None:
    """Mean over seeds at each step, shaded by one sample std (no band with one seed)."""
    bands = data.seed_bands(frame, value)
    bands = bands.assign(low=bands["mean"] - bands["std"], high=bands["mean"] + bands["std"])
    draw_lines(ax, bands, "step", "mean", "low", "high", styles, order)
    _steps_axis(ax)


def _steps_axis(ax: Axes) -> None:
    ax.xaxis.set_major_formatter(FuncFormatter(_steps_label))
    ax.set_xlabel("environment steps")


def _reference(ax: Axes, *, vertical: bool = False) -> None:
    """The dense level (normalized score 1), dashed grey."""
    (ax.axvline if vertical else ax.axhline)(1.0, color="0.5", lw=0.8, ls="--", zorder=0)


def _seeds(report: Report, variants: Sequence[str] | None = None, env: str | None = None) -> str:
    cells = report.cells
    if variants is not None:
        cells = cells[cells["variant"].isin(variants)]
    if env is not None:
        cells = cells[cells["env"] == env]
    return data.seeds_text(cells["n_seeds"])


def _std_title(seeds: str) -> str:
    return f"mean over {seeds}; shaded: ±1 sample std"


def learning_curves_figure(report: Report, env: str, styles: Mapping[str, Style]) -> Figure:
    """Evaluation return over training on one env, one line per variant."""
    curves = report.curves[report.curves["env"] == env]
    variants = [v for v in report.variants if v in set(curves["variant"])]
    fig = _figure(PANEL_WIDTH_IN, PANEL_HEIGHT_IN, [report.labels[v] for v in variants])
    ax = fig.add_subplot()
    _seed_lines(ax, curves, "return_mean", styles, variants)
    ax.set_ylabel("evaluation return")
    ax.set_title(env)
    _legend(fig, variants, styles, report.labels, _std_title(_seeds(report, variants, env)))
    return fig


def env_grid(report: Report, frame: pd.DataFrame, value: str, ylabel: str, styles: Mapping[str, Style]) -> Figure:
    """Every env's seed lines of `value` side by side (envs without data left out), with one legend for all."""
    envs = [env for env in report.envs if env in set(frame["env"])]
    columns = min(GRID_COLUMNS, len(envs))
    rows = math.ceil(len(envs) / columns)
    variants = [v for v in report.variants if v in set(frame["variant"])]
    width, height = GRID_PANEL_IN
    fig = _figure(width * columns, height * rows, [report.labels[v] for v in variants])
    for index, env in enumerate(envs):
        ax = fig.add_subplot(rows, columns, index + 1)
        _seed_lines(ax, frame[frame["env"] == env], value, styles, variants)
        ax.set_title(env)
        if index % columns == 0:
            ax.set_ylabel(ylabel)
    _legend(fig, variants, styles, report.labels, _std_title(_seeds(report, variants)))
    return fig


def normalized_figure(report: Report, styles: Mapping[str, Style]) -> Figure:
    """Per variant, the IQM of normalized scores across envs with its 95% CI, and each run's score as a dot under
    it, so that a reader sees how few runs an interval rests on; dense = 1 as a dashed reference."""
    rows = list(report.aggregate.itertuples())
    runs = report.scores.dropna(subset=["normalized"])
    fig = _figure(PANEL_WIDTH_IN, 1.1 + 0.32 * len(rows))
    ax = fig.add_subplot()
    for y, row in enumerate(rows):
        style = styles[row.variant]
        ax.errorbar(row.iqm, y, xerr=[[row.iqm - row.ci_low], [row.ci_high - row.iqm]], fmt=style.marker,
                    ms=4.5, capsize=2.5, lw=1.1, color=style.color)
        mine = runs.loc[runs["variant"] == row.variant, "normalized"]
        ax.plot(mine, np.full(len(mine), y + 0.28), ls="none", marker=style.marker, ms=2.5, mfc="none",
                mew=0.6, color=style.color)
    _reference(ax, vertical=True)
    ax.set_yticks(range(len(rows)), [row.label for row in rows])
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xlabel(f"normalized score (dense = 1): IQM over envs\nbars: 95% stratified bootstrap CI; "
                  f"small marks: runs ({_seeds(report)})")
    return fig


SAD_LABEL = "SAD (mask entries flipped\nper update, mean of networks)"


def sad_figure(report: Report, env: str, styles: Mapping[str, Style]) -> Figure | None:
    """SAD over training on one env, averaged over the networks of a run, then over seeds; nothing without data."""
    mine = report.sad[report.sad["env"] == env]
    if mine.empty:
        return None
    per_update = data.sad_per_update(mine)
    variants = [v for v in report.variants if v in set(per_update["variant"])]
    fig = _figure(PANEL_WIDTH_IN, PANEL_HEIGHT_IN, [report.labels[v] for v in variants])
    ax = fig.add_subplot()
    _seed_lines(ax, per_update, "value", styles, variants)
    ax.set_ylabel(SAD_LABEL)
    ax.set_ylim(bottom=0)
    ax.set_title(env)
    _legend(fig, variants, styles, report.labels, _std_title(_seeds(report, variants, env)))
    return fig


def _envs_seeds(envs: int, seeds: str) -> str:
    return f"{envs} env{'s' if envs != 1 else ''}, {seeds} each"


def _bootstrap_title(report: Report, variants: Sequence[str]) -> str:
    envs = report.scores.loc[report.scores["variant"].isin(variants), "env"].nunique()
    return f"{_envs_seeds(envs, _seeds(report, variants))}; {BOOTSTRAP_BAND}"


def profile_figure(report: Report, styles: Mapping[str, Style]) -> Figure:
    """Performance profiles: the fraction of runs above each normalized score, all envs pooled."""
    taus = data.profile_taus(report.scores)
    profiles = data.performance_profiles(report.scores, report.variants, taus, seed=report.seed, reps=report.reps)
    variants = list(dict.fromkeys(profiles["variant"]))
    fig = _figure(PANEL_WIDTH_IN, PANEL_HEIGHT_IN, [report.labels[v] for v in variants])
    ax = fig.add_subplot()
    draw_lines(ax, profiles, "tau", "fraction", "low", "high", styles, variants)
    _reference(ax, vertical=True)
    ax.set_xlabel("normalized score τ (dense = 1)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    _legend(fig, variants, styles, report.labels, _bootstrap_title(report, variants))
    return fig


def sample_efficiency_figure(report: Report, styles: Mapping[str, Style]) -> Figure | None:
    """IQM normalized return against environment steps across envs, at the steps common to a variant's runs."""
    curves = data.sample_efficiency(report.curves, report.scores, report.variants, seed=report.seed,
                                    reps=report.reps)
    if curves.empty:
        return None
    variants = list(dict.fromkeys(curves["variant"]))
    fig = _figure(PANEL_WIDTH_IN, PANEL_HEIGHT_IN, [report.labels[v] for v in variants])
    ax = fig.add_subplot()
    draw_lines(ax, curves, "step", "iqm", "low", "high", styles, variants)
    _reference(ax)
    _steps_axis(ax)
    ax.set_ylabel("normalized return (IQM, dense = 1)")
    _legend(fig, variants, styles, report.labels, _bootstrap_title(report, variants))
    return fig


def _correlation_text(row: pd.Series) -> str:
    if math.isnan(row["rho"]):
        return f"ρ undefined (n = {int(row['n'])})"
    return f"Spearman ρ = {row['rho']:.2f}, p = {row['p']:.2g} (n = {int(row['n'])})"


def sad_return_figure(report: Report, styles: Mapping[str, Style]) -> Figure | None:
    """SAD against final return, one point per run and a panel per env, with Spearman's rho; nothing without SAD."""
    points = data.sad_against_return(report.sad, report.scores)
    if points.empty:
        return None
    correlations = data.sad_correlations(points).set_index("env")
    envs = list(correlations.index)
    columns = min(GRID_COLUMNS, len(envs))
    rows = math.ceil(len(envs) / columns)
    variants = [v for v in report.variants if v in set(points["variant"])]
    width, height = (PANEL_WIDTH_IN, PANEL_HEIGHT_IN) if len(envs) == 1 else GRID_PANEL_IN
    fig = _figure(width * columns, height * rows, [report.labels[v] for v in variants])
    for index, env in enumerate(envs):
        ax = fig.add_subplot(rows, columns, index + 1)
        for variant in variants:
            mine = points[(points["env"] == env) & (points["variant"] == variant)]
            style = styles[variant]
            ax.plot(mine["sad"], mine["final"], ls="none", marker=style.marker, ms=4, color=style.color,
                    label=variant)
        ax.set_title(f"{env}\n{_correlation_text(correlations.loc[env])}")
        ax.set_xlabel("SAD (mean per mask update)")
        if index % columns == 0:
            ax.set_ylabel("final return")
    _legend(fig, variants, styles, report.labels,
            f"one point per run ({_seeds(report, variants)}); ρ over all runs of the env", points=True)
    return fig


def by_figure(report: Report, styles: Mapping[str, Style], labels: Mapping[str, str]) -> Figure | None:
    """The --by ablation: normalized score (IQM across envs) against the key's value, one line per variant."""
    lines = data.ablation_lines(report.ablation)
    if lines.empty:
        return None
    variants = list(dict.fromkeys(lines["variant"]))
    runs = report.scores[report.scores["by_value"].notna() & report.scores["normalized"].notna()]
    seeds = data.seeds_text(runs.groupby(["env", "by_variant", runs["by_value"].map(str)]).size())
    fig = _figure(PANEL_WIDTH_IN, PANEL_HEIGHT_IN, [labels[v] for v in variants])
    ax = fig.add_subplot()
    draw_lines(ax, lines, "x", "normalized", "ci_low", "ci_high", styles, variants, ms=5)  # few points: larger
    _reference(ax)
    if bool(lines["numeric"].iloc[0]) and data.log_axis(lines["x"]):
        ax.set_xscale("log")
    ticks = dict(zip(lines["x"], lines["by_text"]))
    ax.set_xticks(list(ticks), list(ticks.values()))
    ax.minorticks_off()
    ax.set_xlabel(report.by)
    ax.set_ylabel("normalized score (IQM, dense = 1)")
    _legend(fig, variants, styles, labels, f"IQM over {_envs_seeds(runs['env'].nunique(), seeds)}; {BOOTSTRAP_BAND}")
    return fig


def report_styles(report: Report) -> tuple[dict[str, Style], dict[str, str]]:
    """The styles and labels of every variant the figures draw: the report's columns and the --by lines."""
    scores = report.scores
    methods = dict(zip(scores["variant"], scores["method"]))
    labels = dict(report.labels)
    variants = list(report.variants)
    if report.ablation is not None:
        methods |= dict(zip(scores["by_variant"], scores["method"]))
        labels |= dict(zip(report.ablation["variant"], report.ablation["label"]))
        variants += [v for v in dict.fromkeys(report.ablation["variant"]) if v not in variants]
    return variant_styles(variants, methods), labels


def report_figures(report: Report) -> dict[str, Figure]:
    """Every figure of the report by file stem, in the order they are written; a figure without data is absent."""
    styles, labels = report_styles(report)
    with matplotlib.rc_context(STYLE):
        figures: dict[str, Figure | None] = {f"curves_{_slug(env)}": learning_curves_figure(report, env, styles)
                                             for env in report.envs}
        figures["curves_all"] = env_grid(report, report.curves, "return_mean", "evaluation return", styles)
        if not report.aggregate.empty:
            figures["normalized_iqm"] = normalized_figure(report, styles)
            figures["performance_profile"] = profile_figure(report, styles)
            figures["sample_efficiency"] = sample_efficiency_figure(report, styles)
        figures |= {f"sad_{_slug(env)}": sad_figure(report, env, styles) for env in report.envs}
        if not report.sad.empty:
            figures["sad_all"] = env_grid(report, data.sad_per_update(report.sad), "value", SAD_LABEL, styles)
        figures["sad_vs_return"] = sad_return_figure(report, styles)
        if report.ablation is not None:
            figures[f"by_{_slug(report.by)}"] = by_figure(report, styles, labels)
    return {stem: figure for stem, figure in figures.items() if figure is not None}


def write_plots(report: Report, out_dir: Path | str) -> list[Path]:
    """Every figure of the report into `out_dir` (created if needed); returns the files written, PNG and PDF. Saved
    under STYLE too, since matplotlib makes tick labels (and reads the PDF font type) when it draws."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(STYLE):
        for stem, figure in report_figures(report).items():
            for path in (out / f"{stem}.png", out / f"{stem}.pdf"):
                figure.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
                paths.append(path)
    return paths
