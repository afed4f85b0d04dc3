"""Text renderings of a computed Report: markdown, LaTeX and csv. Every number comes from `stats`; this only formats.

Both text formats hold three tables with the same layout (one row per env, one column per method, ordered as
`methods.method_order`): final returns, normalized scores with the IQM across envs as a last row, and the density of
the networks: what the pattern keeps, and, where training recorded it, the measured nonzero fraction per network (two
more rows per env). A column's header is its method's label (see `methods`), stated in the first caption. The LaTeX
compiles with the standard preamble LATEX_PREAMBLE (booktabs), which its first line states, so it pastes into a paper
as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from .stats import Report

FORMATS = ("markdown", "latex", "csv")
LATEX_PREAMBLE = r"\documentclass{article} \usepackage{booktabs}"
PARTIAL_MARK = "†"
MISSING = "-"
PLUS_MINUS = " ± "


def render(report: Report, fmt: str) -> str:
    """The report as `fmt` text, one of FORMATS."""
    renderers: dict[str, Callable[[Report], str]] = {
        "markdown": render_markdown, "latex": render_latex, "csv": render_csv,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](report)


# ---- the two tables, independent of the output format -----------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One table cell: its text, whether it is the best of its row, and its marks (fewer seeds, partial runs)."""

    text: str
    bold: bool = False
    marks: str = ""


@dataclass(frozen=True)
class Grid:
    caption: str
    header: list[str]
    body: list[list[Cell]]
    footer: list[list[Cell]]


def _lookup(report: Report, env: str, method: str) -> pd.Series | None:
    rows = report.cells[(report.cells["env"] == env) & (report.cells["method"] == method)]
    return None if rows.empty else rows.iloc[0]


def _header(report: Report) -> list[str]:
    labels = report.cells.drop_duplicates("method").set_index("method")["label"]
    return ["env", *(labels[m] for m in report.methods)]


def _marks(cell: pd.Series) -> str:
    """The visible marks of a cell: '(n=3)' for fewer seeds than the table's fullest cell, † for unfinished runs."""
    marks = []
    if cell["fewer_seeds"]:
        marks.append(f"(n={int(cell['n_seeds'])})")
    if cell["n_partial"]:
        marks.append(PARTIAL_MARK)
    return " ".join(marks)


def _score_text(cell: pd.Series) -> str:
    """'3012.4 ± 120.3'; with one seed the sample std is undefined, so only the mean is shown."""
    if math.isnan(cell["std"]):
        return f"{cell['mean']:.1f}"
    return f"{cell['mean']:.1f}{PLUS_MINUS}{cell['std']:.1f}"


def _ratio_text(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.2f}"


def _seed_phrase(report: Report) -> str:
    counts = report.cells["n_seeds"]
    most = int(counts.max())
    if counts.min() == most:
        return f"{most} seed{'s' if most != 1 else ''}"
    return f"up to {most} seeds, (n=k) marking a cell with fewer"


COLUMNS_PHRASE = ("Columns by increasing sparsity: a pattern with its sparsity, followed by its mask rule where it is "
                  "not magnitude (set, rigl) and by 'scaled' where its kept weights were rescaled at init.")


def returns_grid(report: Report) -> Grid:
    """Mean ± std of final returns per env x method, best of each row bold, with the seed count and how to read a
    column's header in the caption."""
    body = []
    for env in report.envs:
        row = [Cell(env)]
        for method in report.methods:
            cell = _lookup(report, env, method)
            row.append(Cell(MISSING) if cell is None else Cell(_score_text(cell), bool(cell["best"]), _marks(cell)))
        body.append(row)
    caption = (f"Final return (mean of each run's last {report.last_k} evaluations): mean ± sample std (ddof=1) "
               f"over {_seed_phrase(report)}; a single seed shows no std. Best of each row in bold. "
               f"{COLUMNS_PHRASE}")
    return Grid(caption, _header(report), body, [])


def normalized_grid(report: Report) -> Grid:
    """Normalized mean per env x method, with the IQM across envs and its 95% CI as two footer rows (one row
    for both would not fit a five-method table in a page's width)."""
    body = []
    for env in report.envs:
        row = [Cell(env)]
        for method in report.methods:
            cell = _lookup(report, env, method)
            defined = cell is not None and math.isfinite(cell["normalized"])
            row.append(Cell(_ratio_text(cell["normalized"]), bool(cell["best"])) if defined else Cell(MISSING))
        body.append(row)
    agg = report.aggregate.set_index("method")
    best = agg["iqm"].max() if len(agg) else math.nan
    iqm, interval = [Cell("IQM (all envs)")], [Cell("95% CI")]
    for method in report.methods:
        if method not in agg.index:
            iqm.append(Cell(MISSING))
            interval.append(Cell(MISSING))
            continue
        row = agg.loc[method]
        iqm.append(Cell(f"{row['iqm']:.2f}", bool(row["iqm"] == best)))
        interval.append(Cell(f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"))
    caption = ("Normalized score: a method's mean final return over the dense mean on the same env (dense = 1). "
               "IQM: interquartile mean of the per-run normalized scores across envs, with a 95% stratified "
               f"bootstrap confidence interval (rliable; {report.reps:,} resamples, seed {report.seed}).")
    return Grid(caption, _header(report), body, [iqm, interval])


def _percent(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.1%}".replace(".0%", "%")


MEASURED_ROWS = {"density_actor": "actor", "density_critic": "critics"}
"""The cells' measured-density columns and the name of their rows under each env."""


def _density_row(report: Report, env: str, title: str, column: str) -> list[Cell]:
    row = [Cell(title)]
    for method in report.methods:
        cell = _lookup(report, env, method)
        row.append(Cell(MISSING) if cell is None else Cell(_percent(cell[column])))
    return row


def density_grid(report: Report) -> Grid:
    """Per env x method, the density its pattern keeps of the env's networks (which the nominal N/M is not where a
    layer's width is not a multiple of M) and, once any run has recorded it, the density measured in training per
    network: a rule that loses weights, or weights that are exactly zero, show there. Older databases have no
    measured rows."""
    measured = bool(report.cells[list(MEASURED_ROWS)].notna().to_numpy().any())
    body = []
    for env in report.envs:
        body.append(_density_row(report, env, env, "density"))
        if measured:
            body += [_density_row(report, env, f"{env} {name}", column) for column, name in MEASURED_ROWS.items()]
    caption = ("Kept density: weights the pattern keeps over all weights of the actor and one critic, first and "
               "last layers included when sparse_io is set. A row whose width is not a multiple of M ends in a "
               "shorter group that keeps up to N weights, so a narrow input layer (Hopper's 11 inputs) is denser "
               "than N/M; the header gives the nominal sparsity.")
    if measured:
        caption += (" Rows 'actor' and 'critics': the nonzero fraction of the sparse layers measured in training "
                    "at each run's latest record, mean over seeds (critics: both critics), a dash where no run "
                    "recorded it.")
    return Grid(caption, _header(report), body, [])


# ---- markdown -------------------------------------------------------------------------------------------------

def _md_cell(cell: Cell) -> str:
    text = f"**{cell.text}**" if cell.bold else cell.text
    return f"{text} {cell.marks}" if cell.marks else text


def _md_table(grid: Grid) -> list[str]:
    """A GitHub table, padded so that its columns line up in a terminal too."""
    rows = [grid.header, *([_md_cell(c) for c in row] for row in grid.body + grid.footer)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(grid.header))]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return [line(rows[0]), rule, *(line(row) for row in rows[1:])]


def render_markdown(report: Report) -> str:
    returns, normalized, density = returns_grid(report), normalized_grid(report), density_grid(report)
    lines = ["**Final return**", "", *_md_table(returns), "", returns.caption, *report.notes, "",
             "**Normalized score**", "", *_md_table(normalized), "", normalized.caption, "",
             "**Density**", "", *_md_table(density), "", density.caption]
    return "\n".join(lines) + "\n"


# ---- LaTeX ----------------------------------------------------------------------------------------------------

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "†": r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    """Plain text to LaTeX: special characters escaped, ± and † as math, and `--` kept as two hyphens."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text).replace("--", "-{}-")


def _tex_cell(cell: Cell) -> str:
    """Marks go up as superscripts, which keeps a five-method table inside a page's text width."""
    text = "--" if cell.text == MISSING else latex_escape(cell.text)
    text = rf"\textbf{{{text}}}" if cell.bold else text
    marks = cell.marks.replace(PARTIAL_MARK, "").strip()
    if marks:
        text += rf"\textsuperscript{{{marks}}}"
    return text + (r"$^\dagger$" if PARTIAL_MARK in cell.marks else "")


def _tex_table(grid: Grid, label: str, notes: tuple[str, ...]) -> list[str]:
    """One booktabs float: caption and label on top, footer rows after a rule, notes in small type below.

    table* spans both columns of a two-column paper (a five-method table needs that width) and is a plain
    table in a one-column document.
    """
    def line(cells: list[str]) -> str:
        return " & ".join(cells) + r" \\"

    lines = [r"\begin{table*}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{latex_escape(grid.caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{l" + "r" * (len(grid.header) - 1) + "}", r"\toprule",
             line([latex_escape(h) for h in grid.header]), r"\midrule",
             *(line([_tex_cell(c) for c in row]) for row in grid.body)]
    if grid.footer:
        lines += [r"\midrule", *(line([_tex_cell(c) for c in row]) for row in grid.footer)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\par\smallskip\footnotesize " + " ".join(latex_escape(note) for note in notes))
    return [*lines, r"\end{table*}"]


def render_latex(report: Report) -> str:
    """Three table floats (returns, normalized scores, density) that compile with LATEX_PREAMBLE, stated
    in the first line."""
    lines = [f"% rnm report; needs the preamble: {LATEX_PREAMBLE}", ""]
    lines += _tex_table(returns_grid(report), "tab:rnm-returns", report.notes)
    lines += ["", *_tex_table(normalized_grid(report), "tab:rnm-normalized", ())]
    lines += ["", *_tex_table(density_grid(report), "tab:rnm-density", ())]
    return "\n".join(lines) + "\n"


# ---- csv ------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ["env", "pattern", "method", "label", "sparsity", "density", "density_actor", "density_critic",
               "statistic", "n_seeds", "n_partial", "mean", "std", "normalized", "normalized_ci_low",
               "normalized_ci_high", "best", "last_k"]


def render_csv(report: Report) -> str:
    """One row per env and method (statistic 'mean'), then one per method with env 'all' (statistic 'iqm').

    For 'mean' rows, `normalized` is the cell's mean over the dense mean; for 'iqm' rows it is the IQM across envs,
    `n_seeds` counts the runs pooled, and the CI columns hold its 95% bootstrap interval. `density` is the density
    the pattern keeps of a 'mean' row's networks, `density_actor` and `density_critic` the density measured in
    training (all three empty on 'iqm' rows: they differ by env). Empty means undefined. The columns are the same
    whatever the database holds, so that a script can read any report.
    """
    cells = report.cells.assign(statistic="mean", normalized_ci_low=math.nan, normalized_ci_high=math.nan,
                                last_k=report.last_k)
    agg = report.aggregate.rename(columns={"n_runs": "n_seeds", "iqm": "normalized", "ci_low": "normalized_ci_low",
                                           "ci_high": "normalized_ci_high"})
    agg = agg.assign(env="all", statistic="iqm", mean=math.nan, std=math.nan, density=math.nan,
                     density_actor=math.nan, density_critic=math.nan,
                     best=agg["normalized"] == agg["normalized"].max(), last_k=report.last_k)
    parts = [part[CSV_COLUMNS] for part in (cells, agg) if not part.empty]  # no aggregate without a dense baseline
    frame = pd.concat(parts, ignore_index=True)
    return frame.to_csv(index=False, lineterminator="\n")
