"""Text renderings of a computed Report: markdown, LaTeX and csv. Every number comes from `stats`; this only formats.

The text formats hold the results in three tables with one row per env and one column per variant (a method, with
the values of any key that differs between its runs), in the report's order: final returns, normalized scores with
the IQM and P(> dense) across envs as footer rows, and the density of the networks (what the pattern keeps and,
where training recorded it, the measured nonzero fraction per network). Then, where the report has them, the
`--by` ablation and the cost table. csv writes one of them (`TABLES`) as a frame. Captions speak a paper's language;
the LaTeX compiles with the standard preamble LATEX_PREAMBLE (booktabs), which its first line states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ..config import key_defaults
from ..errors import UsageError
from .ablation import ALL_ENVS
from .stats import Report

FORMATS = ("markdown", "latex", "csv")
LATEX_PREAMBLE = r"\documentclass{article} \usepackage{booktabs}"
PARTIAL_MARK = "†"
MISSING = "-"
PLUS_MINUS = " ± "


def render(report: Report, fmt: str, table: str | None = None) -> str:
    """The report as `fmt` text, one of FORMATS: every table it holds, or the one of TABLES named."""
    renderers: dict[str, Callable[[Report, str | None], str]] = {
        "markdown": render_markdown, "latex": render_latex, "csv": render_csv,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if table is not None and table not in TABLES:
        raise UsageError(f"unknown --table {table!r}; choose one of {', '.join(TABLES)}")
    return renderers[fmt](report, table)


# ---- the tables, independent of the output format ---------------------------------------------------------------

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
    text_columns: int = 1
    """Leading columns of text (left-aligned); the rest hold numbers (right-aligned)."""


def _lookup(report: Report, env: str, variant: str) -> pd.Series | None:
    rows = report.cells[(report.cells["env"] == env) & (report.cells["variant"] == variant)]
    return None if rows.empty else rows.iloc[0]


def _header(report: Report) -> list[str]:
    return ["env", *(report.labels[v] for v in report.variants)]


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


COLUMNS_PHRASE = ("Columns by increasing sparsity: a pattern with its sparsity, then its mask-update rule where it is "
                  "not magnitude pruning (set: random regrowth; rigl: gradient-based regrowth) and 'scaled' where "
                  "the kept weights were rescaled at initialization.")
SETTINGS_PHRASE = "After a comma, the value of a hyperparameter that differs between the runs of one pattern."
BOLD_PHRASE = ("Bold: the best of its row where a one-sided Welch t-test puts it above the runner-up at the 5% "
               "level.")


def _columns_phrase(report: Report) -> str:
    settings = any(label != report.labels[v].split(", ")[0] for v, label in report.labels.items())
    return f"{COLUMNS_PHRASE} {SETTINGS_PHRASE}" if settings else COLUMNS_PHRASE


def returns_grid(report: Report) -> Grid:
    """Mean ± std of final returns per env x variant, the separated best of each row bold, with the seed count and
    how to read a column's header in the caption."""
    body = []
    for env in report.envs:
        row = [Cell(env)]
        for variant in report.variants:
            cell = _lookup(report, env, variant)
            row.append(Cell(MISSING) if cell is None else Cell(_score_text(cell), bool(cell["best"]), _marks(cell)))
        body.append(row)
    caption = (f"Final return: the mean of each run's last {report.last_k} evaluations, the evaluation before "
               f"training excluded; mean ± sample standard deviation over {_seed_phrase(report)} (one seed: the "
               f"mean alone). {BOLD_PHRASE} {_columns_phrase(report)}")
    return Grid(caption, _header(report), body, [])


def _interval_text(low: float, high: float) -> str:
    return MISSING if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"


def improvement_claims(report: Report) -> str:
    """The caption's claims: a column improves on dense only where its interval's lower end is above 0.5, and is
    worse only where the upper end is below 0.5; otherwise, and where its runs are too few for a 95% interval,
    nothing is claimed."""
    sparse = report.aggregate.dropna(subset=["p_improve"])
    if sparse.empty:
        return ""
    if sparse["p_coarse"].all():
        return "Too few runs for any claim of improvement."
    sparse = sparse[~sparse["p_coarse"]]
    better = list(sparse.loc[sparse["p_improve_low"] > 0.5, "label"])
    worse = list(sparse.loc[sparse["p_improve_high"] < 0.5, "label"])
    claims = []
    if better:
        claims.append(f"Interval above 0.5, so more likely than not to outperform dense: {'; '.join(better)}.")
    if worse:
        claims.append(f"Interval below 0.5, so more likely than not to underperform dense: {'; '.join(worse)}.")
    if len(better) + len(worse) < len(sparse):
        claims.append("Where the interval contains 0.5, the runs do not tell whether the column beats dense.")
    return " ".join(claims)


def normalized_grid(report: Report) -> Grid:
    """Normalized mean per env x variant; footer rows: the IQM across envs with its 95% CI, and P(> dense) with its
    95% CI (a value and its interval on two rows would not fit a five-column table in a page's width otherwise)."""
    body = []
    for env in report.envs:
        row = [Cell(env)]
        for variant in report.variants:
            cell = _lookup(report, env, variant)
            defined = cell is not None and math.isfinite(cell["normalized"])
            row.append(Cell(_ratio_text(cell["normalized"]), bool(cell["best"])) if defined else Cell(MISSING))
        body.append(row)
    agg = report.aggregate.set_index("variant")
    footer = [[Cell("IQM (all envs)")], [Cell("95% CI")], [Cell("P(> dense)")], [Cell("95% CI")]]
    for variant in report.variants:
        if variant not in agg.index:
            for row in footer:
                row.append(Cell(MISSING))
            continue
        row = agg.loc[variant]
        footer[0].append(Cell(f"{row['iqm']:.2f}", bool(row["best"])))
        footer[1].append(Cell(_interval_text(row["ci_low"], row["ci_high"])))
        footer[2].append(Cell(_ratio_text(row["p_improve"])))
        footer[3].append(Cell(_interval_text(row["p_improve_low"], row["p_improve_high"])))
    caption = ("Normalized score: mean final return over the mean of the dense runs on the same env (dense = 1); "
               "bold per env as in the table of final returns. IQM: interquartile mean of the per-run normalized "
               "scores across envs, with a 95% stratified "
               f"bootstrap confidence interval ({report.reps:,} resamples), bold where it lies wholly above every "
               "other column's interval. P(> dense): the probability that a run of the column scores above a dense "
               "run on the same env, averaged over envs, with its 95% stratified bootstrap confidence interval. "
               f"{improvement_claims(report)}").strip()
    return Grid(caption, _header(report), body, footer)


def _percent(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.1%}".replace(".0%", "%")


MEASURED_ROWS = {"density_actor": "actor", "density_critic": "critics"}
"""The cells' measured-density columns and the name of their rows under each env."""


def _density_row(report: Report, env: str, title: str, column: str) -> list[Cell]:
    row = [Cell(title)]
    for variant in report.variants:
        cell = _lookup(report, env, variant)
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
               "last layers included unless the runs kept them dense. A row whose width is not a multiple of M "
               "ends in a shorter group that keeps up to N weights, so a narrow input layer (Hopper's 11 inputs) is "
               "denser than N/M; the header gives the nominal sparsity.")
    if measured:
        caption += (" Rows 'actor' and 'critics': the nonzero fraction of the sparse layers measured in training "
                    "at each run's latest record, mean over seeds (critics: both critics), a dash where no run "
                    "recorded it.")
    return Grid(caption, _header(report), body, [])


def ablation_grid(report: Report) -> Grid:
    """Under `--by KEY`: one block of rows per value of KEY (a row per env, then the IQM across envs with its CI),
    one column per variant without KEY."""
    table = report.ablation
    variants = list(dict.fromkeys(table["variant"]))
    labels = dict(zip(table["variant"], table["label"]))
    body = []
    for text, rows in table.groupby("by_text", sort=False):
        cells = rows.set_index(["env", "variant"])
        for env in [*report.envs, ALL_ENVS]:
            title = "IQM (all envs)" if env == ALL_ENVS else env
            row = [Cell(text), Cell(title)]
            for variant in variants:
                if (env, variant) not in cells.index:
                    row.append(Cell(MISSING))
                    continue
                cell = cells.loc[(env, variant)]
                interval = "" if env != ALL_ENVS else " " + _interval_text(cell["ci_low"], cell["ci_high"])
                row.append(Cell(_ratio_text(cell["normalized"]) + interval))
            body.append(row)
    seeds = f"{int(table['n_runs'][table['env'] != ALL_ENVS].max())}"
    caption = (f"Effect of {report.by} ({KEY_MEANINGS[report.by]}): normalized score (mean final return over the "
               "mean of the dense runs on the same env) per env, mean over up to "
               f"{seeds} seeds, and the interquartile mean across envs with its 95% stratified bootstrap confidence "
               f"interval ({report.reps:,} resamples), for each value. {COLUMNS_PHRASE}")
    return Grid(caption, [report.by, "env", *(labels[v] for v in variants)], body, [], text_columns=2)


def _count_text(value: float) -> str:
    """Three significant figures past 10,000 (34.7k, 101M): a cost table of five columns must fit a page."""
    if math.isnan(value):
        return MISSING
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if value >= scale:
            shown = value / (1e3 if suffix == "k" else scale)
            return f"{shown:.3g}{suffix}" if shown < 1000 else f"{shown:,.0f}{suffix}"
    return f"{value:,.0f}"


def _cost_text(count: float, ratio: float, unit: str) -> str:
    """'34,688 (50.2%)' for a count with its density, '101.28M (1.99x)' for one with its ratio over dense."""
    if math.isnan(count):
        return MISSING
    return f"{_count_text(count)} ({ratio:.1%})" if unit == "%" else f"{_count_text(count)} ({ratio:.2f}{unit})"


COST_ROWS = {
    "actor nonzeros": ("actor_nonzeros", "actor_density", "%"),
    "critic nonzeros": ("critic_nonzeros", "critic_density", "%"),
    "MACs/action": ("action_macs_sparse", "action_speedup", "x"),
    "MACs/update": ("update_macs_sparse", "update_speedup", "x"),
    "actor bytes": ("actor_bytes_compressed", "actor_compression", "x"),
}
"""Row title -> (count column, the ratio shown beside it, its unit) of `report.costs`."""


def cost_grid(report: Report) -> Grid:
    """Per env, a heading row and five rows (nonzeros of actor and critic with their density, MACs of an action and
    of an update with the speedup over dense, actor bytes compressed with the compression), one column per
    variant."""
    costs = report.costs.set_index(["env", "variant"])
    body = []
    for env in report.envs:
        body.append([Cell(env), *(Cell("") for _ in report.variants)])
        for title, (count, ratio, unit) in COST_ROWS.items():
            row = [Cell(title)]
            for variant in report.variants:
                if (env, variant) not in costs.index:
                    row.append(Cell(MISSING))
                    continue
                cell = costs.loc[(env, variant)]
                row.append(Cell(_cost_text(cell[count], cell[ratio], unit)))
            body.append(row)
    caption = ("Cost, from each run's last checkpoint (mean over seeds). Nonzeros: weights of the actor and of one "
               "critic that are not zero, with the density of their sparse layers. MACs: multiply-accumulates of the "
               "weight matrices for one action (the actor's forward pass) and for one training update (every "
               "forward and backward pass of the six networks for one batch, the delayed actor update counted at "
               "its rate), counting only nonzero weights, with the speedup over counting every weight: what an "
               "accelerator that skips every zero could reach at most. Actor bytes: the actor in a compressed "
               "form (for N:M, each group's kept values in 32 bits plus an index of ceil(log2 M) bits each; "
               "unstructured in compressed sparse rows), with the compression over 32-bit dense storage. "
               "k: thousands, M: millions.")
    return Grid(caption, _header(report), body, [])


KEY_MEANINGS = {key: meaning for key, (_, meaning) in key_defaults().items()}
"""What each config key means (`rnm keys`), for a caption that names a swept key."""

TABLES = ("results", "ablation", "cost")
"""What `render` can write: the results (returns, normalized scores, density), the --by table, the cost table."""


def _grids(report: Report, table: str | None) -> list[tuple[str, Grid]]:
    """(label, grid) of each table to write: all that the report holds, or the one named."""
    grids = []
    if table in (None, "results"):
        grids += [("returns", returns_grid(report)), ("normalized", normalized_grid(report)),
                  ("density", density_grid(report))]
    if table in (None, "ablation") and report.ablation is not None:
        grids.append(("ablation", ablation_grid(report)))
    if table in (None, "cost") and report.costs is not None:
        grids.append(("cost", cost_grid(report)))
    return grids


# ---- markdown -------------------------------------------------------------------------------------------------

def _md_cell(cell: Cell) -> str:
    text = f"**{cell.text}**" if cell.bold else cell.text
    return f"{text} {cell.marks}" if cell.marks else text


def _md_table(grid: Grid) -> list[str]:
    """A GitHub table, padded so that its columns line up in a terminal too."""
    rows = [grid.header, *([_md_cell(c) for c in row] for row in grid.body + grid.footer)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(grid.header))]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i < grid.text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < grid.text_columns else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return [line(rows[0]), rule, *(line(row) for row in rows[1:])]


TITLES = {"returns": "Final return", "normalized": "Normalized score", "density": "Density",
          "ablation": "Ablation", "cost": "Cost"}


def render_markdown(report: Report, table: str | None = None) -> str:
    """Each table under a bold title, its caption below; the report's notes under the first table."""
    lines: list[str] = []
    for i, (name, grid) in enumerate(_grids(report, table)):
        lines += [f"**{TITLES[name]}**", "", *_md_table(grid), "", grid.caption]
        lines += [*report.notes, ""] if i == 0 else [""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- LaTeX ----------------------------------------------------------------------------------------------------

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "†": r"$^\dagger$",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", '"': "''",
}


def latex_escape(text: str) -> str:
    """Plain text to LaTeX: special characters escaped, ± and † as math, `--` kept as two hyphens, and any other
    character outside ASCII as '?', which the standard preamble (no inputenc setup for it) cannot typeset."""
    def one(ch: str) -> str:
        return _LATEX_ESCAPES.get(ch, ch if ch.isascii() else "?")

    return "".join(one(ch) for ch in text).replace("--", "-{}-")


def _tex_header(text: str, align: str) -> str:
    """A column header on stacked lines, one per part of its label (`2:4 (50%)`, `mask_interval=1000`), so that
    a long label widens its column no more than its longest part."""
    parts = [latex_escape(part) for part in text.split(", ")]
    if len(parts) == 1:
        return parts[0]
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}" + r" \\ ".join(parts) + r"\end{tabular}"


def _tex_cell(cell: Cell) -> str:
    """Marks go up as superscripts, which keeps a five-method table inside a page's text width."""
    text = "--" if cell.text == MISSING else latex_escape(cell.text)
    text = rf"\textbf{{{text}}}" if cell.bold else text
    marks = cell.marks.replace(PARTIAL_MARK, "").strip()
    if marks:
        text += rf"\textsuperscript{{{marks}}}"
    return text + (r"$^\dagger$" if PARTIAL_MARK in cell.marks else "")


COLUMN_CHARS = 55
"""About the characters of \\small text that fit a column of a two-column paper (3.3 in); a table with more, its
column gaps counted as two characters each, spans both columns (table*), a narrower one stays in a column."""


def _is_wide(grid: Grid) -> bool:
    header = [max(h.split(", "), key=len) for h in grid.header]  # headers stack their parts (_tex_header)
    rows = [header, *([c.text + c.marks for c in row] for row in grid.body + grid.footer)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(grid.header))]
    return sum(widths) + 2 * (len(widths) - 1) > COLUMN_CHARS


def _tex_table(grid: Grid, label: str, notes: tuple[str, ...]) -> list[str]:
    """One booktabs float: caption and label on top, footer rows after a rule, notes in small type below; `table*`
    (both columns of a two-column paper) only where the table is too wide for one."""
    def line(cells: list[str]) -> str:
        return " & ".join(cells) + r" \\"

    float_env = "table*" if _is_wide(grid) else "table"
    size = r"\footnotesize" if float_env == "table*" else r"\small"  # a wide table in the smaller type
    lines = [rf"\begin{{{float_env}}}[t]", r"\centering", size, r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{latex_escape(grid.caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{" + "l" * grid.text_columns + "r" * (len(grid.header) - grid.text_columns) + "}",
             r"\toprule",
             line([_tex_header(h, "l" if i < grid.text_columns else "r") for i, h in enumerate(grid.header)]),
             r"\midrule",
             *(line([_tex_cell(c) for c in row]) for row in grid.body)]
    if grid.footer:
        lines += [r"\midrule", *(line([_tex_cell(c) for c in row]) for row in grid.footer)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\par\smallskip\footnotesize " + " ".join(latex_escape(note) for note in notes))
    return [*lines, rf"\end{{{float_env}}}"]


def render_latex(report: Report, table: str | None = None) -> str:
    """One table float per table (returns, normalized scores, density, and the ablation and cost tables where the
    report has them) that compiles with LATEX_PREAMBLE, stated in the first line."""
    lines = [f"% rnm report; needs the preamble: {LATEX_PREAMBLE}"]
    for i, (name, grid) in enumerate(_grids(report, table)):
        lines += ["", *_tex_table(grid, f"tab:rnm-{name}", report.notes if i == 0 else ())]
    return "\n".join(lines) + "\n"


# ---- csv ------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ["env", "variant", "label", "pattern", "method", "sparsity", "density", "density_actor",
               "density_critic", "statistic", "n_seeds", "n_partial", "mean", "std", "normalized",
               "normalized_ci_low", "normalized_ci_high", "p_improve", "p_improve_ci_low", "p_improve_ci_high", "best",
               "last_k"]


def results_csv(report: Report) -> pd.DataFrame:
    """One row per env and variant (statistic 'mean'), then one per variant with env 'all' (statistic 'iqm').

    For 'mean' rows, `normalized` is the cell's mean over its dense baseline's mean and `p_improve` P(> dense) on
    that env; for 'iqm' rows `normalized` is the IQM across envs and `p_improve` P(> dense) averaged over envs, each
    with its 95% bootstrap interval in the CI columns, and `n_seeds` counts the runs pooled. `density` is the
    density the pattern keeps of a 'mean' row's networks, `density_actor` and `density_critic` the density measured
    in training (all three empty on 'iqm' rows: they differ by env). `best` is the bold of the tables. Empty means
    undefined. The columns are the same whatever the database holds, so that a script can read any report.
    """
    cells = report.cells.assign(statistic="mean", normalized_ci_low=math.nan, normalized_ci_high=math.nan,
                                p_improve_ci_low=math.nan, p_improve_ci_high=math.nan, last_k=report.last_k)
    agg = report.aggregate.rename(columns={"n_runs": "n_seeds", "iqm": "normalized", "ci_low": "normalized_ci_low",
                                           "ci_high": "normalized_ci_high", "p_improve_low": "p_improve_ci_low",
                                           "p_improve_high": "p_improve_ci_high"})
    agg = agg.assign(env=ALL_ENVS, statistic="iqm", mean=math.nan, std=math.nan, density=math.nan,
                     density_actor=math.nan, density_critic=math.nan, last_k=report.last_k)
    parts = [part[CSV_COLUMNS] for part in (cells, agg) if not part.empty]  # no aggregate without a dense baseline
    return pd.concat(parts, ignore_index=True)


def render_csv(report: Report, table: str | None = None) -> str:
    """The results (`results_csv`), or the ablation or cost table as its frame (`Report.ablation`, `Report.costs`)."""
    if table in (None, "results"):
        frame = results_csv(report)
    else:
        frame = report.ablation if table == "ablation" else report.costs
        if frame is None:
            raise UsageError("--table ablation needs --by KEY" if table == "ablation"
                             else "the cost table was not computed")
    return frame.to_csv(index=False, lineterminator="\n")
