"""`rnm status` as a user reads it in an 80-column terminal: whole headers, no line too long, notes, speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers_registry import cli_env
from sqlalchemy import update
from typer.testing import CliRunner

from rnm_cli.main import app
from rnmtd3.registry import open_registry
from rnmtd3.registry.models import Run
from rnmtd3.summary import DENSITY_STATS
from rnmtd3.sweep import make_config

LONG_ERROR = "Traceback (most recent call last):\n  ...\nRuntimeError: " + "the device ran out of patience " * 4
NOTE = "checkpoint belongs to another database (id 1234abcd); restarted from step 0"
DISK_FULL = "OSError: [Errno 28] No space left on device: '/scratch/rnm-artifacts/0123456789abcdef/checkpoint.pt'"


def fill(db: Path) -> None:
    """Runs in every status, on a short and a long env name and a long pattern (20 characters): two running (1000
    and 500 steps/s), one failed with a long error, one with two notes, one cancelled, the rest queued, two of them
    (5 and 6) backing off after a full disk, run 6 for the second time."""
    registry = open_registry(db, create=True)
    try:
        configs = [make_config(env, pattern, seed, {"steps": 10_000})
                   for env in ("Hopper", "InvertedDoublePendulum")
                   for pattern in ("dense", "2:4", "1:8", "unstructured:0.96875")
                   for seed in (0, 1)]
        registry.enqueue(configs, max_attempts=1)
        fast, slow, failed, noted, full, fuller = (registry.claim() for _ in range(6))
        registry.heartbeat(fast, steps_done=4000, steps_per_sec=1000.0)
        registry.heartbeat(slow, steps_done=1000, steps_per_sec=500.0)
        registry.fail(failed, LONG_ERROR)
        registry.note(noted, "an earlier, resolved event")
        registry.note(noted, NOTE)
        registry.release(noted)
        registry.fail(full, DISK_FULL, transient=True)
        registry.fail(fuller, DISK_FULL, transient=True)
        with registry.engine.begin() as conn:  # as if run 6 had failed again after its first back-off (30 s)
            conn.execute(update(Run).where(Run.id == fuller.run_id).values(transient_failures=2,
                                                                           retry_at=Run.retry_at + 3600))
        registry.cancel([len(configs)])
    finally:
        registry.close()


def status(db: Path) -> str:
    result = CliRunner().invoke(app, ["status", "--db", str(db)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def header_words(text: str, first: str) -> list[str]:
    """The words of the header line of the table whose first header is `first`."""
    line = next(line for line in text.splitlines() if line.split()[:1] == [first])
    return line.split()


def test_status_fits_80_columns_and_no_header_is_cut(tmp_path: Path):
    fill(tmp_path / "rnm.db")
    text = status(tmp_path / "rnm.db")
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    assert header_words(text, "env") == ["env", "method", "density", "queued", "running", "done", "failed",
                                         "cancel", "progress"]
    assert header_words(text, "run")[:5] == ["run", "env", "pattern", "seed", "attempts"]
    assert "RuntimeError:" in text  # the last error line, folded but whole


def test_status_shows_the_speed_of_running_runs_and_the_last_note_of_each_run(tmp_path: Path):
    fill(tmp_path / "rnm.db")
    text = status(tmp_path / "rnm.db")
    assert "2 running at 1,500 steps/s" in " ".join(text.split())
    notes = text[text.index("notes"):]
    assert " ".join(notes.split()).count("restarted from step 0") == 1
    assert "an earlier, resolved event" not in text  # only the last line: `rnm export runs` has every note
    row = next(line for line in notes.splitlines() if line.startswith("4 "))
    assert row.split()[:4] == ["4", "Hopper-v5", "2:4", "1"]


MEASURED = {  # (pattern, seed): {step: (actor, critic1, critic2)}, as the trainer reports them every 1000 steps
    ("dense", 0): {1000: (1.0, 1.0, 1.0)},
    ("2:4", 0): {1000: (0.9, 0.9, 0.9), 2000: (0.503, 0.504, 0.504)},  # the latest step counts
    ("2:4", 1): {1000: (0.525, 0.526, 0.527)},  # another hidden size
    ("unstructured:0.96875", 0): {1000: (0.03125, 0.03125, 0.03125)},  # seed 1 not measured yet
}


def test_status_shows_the_latest_measured_density_of_actors_and_critics_without_importing_torch(tmp_path: Path):
    """Each group's latest measured densities from the training statistics: one value where actors and critics
    agree, actor/critic where not, a range over the group's runs, '-' before any run is measured. Status must not
    pull in torch (it starts in about a second), and fits 80 columns beside a long env and pattern."""
    db = tmp_path / "rnm.db"
    registry = open_registry(db, create=True)
    try:
        registry.enqueue([make_config("InvertedDoublePendulum", pattern, seed, {"steps": 10_000})
                          for pattern in ("dense", "2:4", "1:8", "unstructured:0.96875") for seed in (0, 1)])
        claims = {(str(c.config.pattern), c.config.seed): c for c in iter(registry.claim, None)}
        for key, steps in MEASURED.items():
            for step, values in steps.items():
                assert registry.record_stats(claims[key], step, dict(zip(DENSITY_STATS, values)))
    finally:
        registry.close()
    probe = ("import sys; from typer.testing import CliRunner; from rnm_cli.main import app; "
             f"result = CliRunner().invoke(app, ['status', '--db', {str(db)!r}]); "
             "print(result.stdout); print('torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env() | {
        "COLUMNS": "200"}, timeout=120)
    assert "torch imported: False" in done.stdout, done.stdout + done.stderr
    assert density_cells(done.stdout) == {"dense": "100%", "2:4 (50%)": "50-52/50-53%", "1:8 (87.5%)": "-",
                                          "unstructured 96.875%": "3.1%"}
    narrow = status(db)
    assert max(len(line) for line in narrow.splitlines()) <= 80 and "…" not in narrow, narrow
    assert header_words(narrow, "env") == ["env", "method", "density", "queued", "running", "done", "failed",
                                           "cancel", "progress"]


def density_cells(text: str) -> dict[str, str]:
    """Method label -> density text of a status table too wide to fold its env or label: a row is env, the label's
    words, the density and six counts; a density longer than its header continues on the next lines, alone."""
    cells: dict[str, str] = {}
    label = None
    for words in (line.split() for line in text.splitlines()[3:]):  # after the title, headers and rule
        if not words or words[0] == "progress":
            break
        if len(words) == 1:
            cells[label] += words[0]
        else:
            label, cells[" ".join(words[1:-7])] = " ".join(words[1:-7]), words[-7]
    return cells


def test_status_has_no_notes_table_when_no_run_has_notes(tmp_path: Path):
    registry = open_registry(tmp_path / "rnm.db", create=True)
    registry.enqueue([make_config("Hopper", "2:4", 0, {"steps": 1000})])
    registry.close()
    text = status(tmp_path / "rnm.db")
    assert "notes (the last line" not in text and "failed runs" not in text and "0 running at 0 steps/s" in text


def test_status_shows_the_runs_waiting_to_retry_and_when(tmp_path: Path):
    """A run backing off after a full disk is not a plain queued run: its retries, next try and error show."""
    fill(tmp_path / "rnm.db")
    text = status(tmp_path / "rnm.db")
    waiting = text[text.index("waiting to retry"):]
    assert header_words(waiting, "run") == ["run", "env", "pattern", "seed", "retries", "next", "try", "last",
                                            "error"]
    rows = {line.split()[0]: line.split() for line in waiting.splitlines() if line.split()[:1] in (["5"], ["6"])}
    assert rows["5"][:5] == ["5", "Hopper-v5", "1:8", "0", "1"] and rows["6"][4] == "2"
    assert 0 < minutes(rows["5"][5]) <= 0.5 and minutes(rows["6"][5]) == 60  # back-off 30 s; 3600 s more
    assert "OSError:" in rows["5"][6] and "No space left" in " ".join(waiting.split())


def minutes(text: str) -> float:
    """fmt_duration's '0m29s' or '1h00m' in minutes."""
    if "h" in text:
        hours, mins = text.rstrip("m").split("h")
        return 60 * int(hours) + int(mins)
    mins, secs = text.rstrip("s").split("m")
    return int(mins) + int(secs) / 60


def test_a_variant_label_breaks_between_its_parts_never_inside_a_value(tmp_path: Path):
    """At 80 columns, mask_interval=1000 and mask_interval=10000 must never read alike (`...=100` / `0`)."""
    from rnmtd3.sweep import expand

    db = tmp_path / "rnm.db"
    with open_registry(db) as registry:
        registry.enqueue(expand(["Hopper"], ["2:4", "1:8"], 1, ["mask_interval=1000,10000"], steps=1000))
    text = status(db)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert header_words(text, "env")[-1] == "progress"
    cells = [line[10:30].strip() for line in text.splitlines()]
    assert cells.count("mask_interval=1000") == 2 and cells.count("mask_interval=10000") == 2, text
    assert "2:4 (50%)," in cells and "1:8 (87.5%)," in cells
