"""Databases saved at every past schema version upgrade to the head with their records intact."""

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from rnmtd3.registry import open_registry
from rnmtd3.patterns import Pattern
from rnmtd3.registry.engine import alembic_config, make_engine
from rnmtd3.sweep import make_config

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("saved", sorted(DATA.glob("registry-*.db")), ids=lambda p: p.stem)
def test_saved_database_upgrades_to_head_keeping_its_records(saved, tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(saved, db)
    registry = open_registry(db, create=False)
    with registry.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    assert current == ScriptDirectory.from_config(alembic_config(registry.engine)).get_current_head()
    runs, evals = registry.runs_frame(), registry.evals_frame()
    assert list(runs["status"]) == ["done", "done", "queued", "queued"]
    assert "notes" in runs.columns and runs["notes"].isna().all()
    assert evals.groupby("run_id")["step"].apply(list).to_dict() == {1: [0, 200, 400], 2: [0, 200, 400]}
    claim = registry.claim()
    assert claim is not None and claim.run_id == 3 and claim.config.hidden == (16, 16)
    assert registry.note(claim, "hello") and registry.runs_frame().loc[2, "notes"] == "hello"


def test_every_past_revision_has_a_saved_database():
    """A new migration must come with a database saved at the revision before it (see tests/data)."""
    engine = make_engine("sqlite://")
    script = ScriptDirectory.from_config(alembic_config(engine))
    past = {rev.revision for rev in script.walk_revisions()} - {script.get_current_head()}
    saved = {p.stem.removeprefix("registry-") for p in DATA.glob("registry-*.db")}
    assert past <= saved, f"save a database at revision(s) {sorted(past - saved)} in tests/data"


def table_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of the tables that reference runs, and the runs themselves, as SQLite has them."""
    with closing(sqlite3.connect(db)) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("runs", "evaluations", "train_stats", "attempts")}


def test_rebuilding_runs_on_sqlite_keeps_every_row_that_references_a_run(tmp_path):
    """0004 rebuilds the runs table on SQLite (a column's type cannot change in place); with foreign keys on,
    dropping the old table would cascade to the evaluations, statistics and attempts. Up and down, none is lost."""
    db = tmp_path / "old.db"
    shutil.copy(DATA / "registry-0003.db", db)
    before = table_rows(db)
    assert all(before.values()), "the saved database should have rows in every table"
    registry = open_registry(db, create=False)
    try:
        assert table_rows(db) == before
        command.downgrade(alembic_config(registry.engine), "0003")
        assert table_rows(db) == before
    finally:
        registry.close()


def test_a_database_saved_at_0003_takes_the_same_runs_as_already_queued(tmp_path):
    """Keys added since (mask_rule, drop_fraction, mask_end, sparse_init) leave the identity of its runs alone;
    its back-off survives; and it then takes an `unstructured` run."""
    db = tmp_path / "old.db"
    shutil.copy(DATA / "registry-0003.db", db)
    with open_registry(db, create=False) as registry:
        same = [make_config("Pendulum-v1", pattern, seed, {"steps": 400, "hidden": (16, 16), "eval_interval": 200})
                for pattern in ("dense", "2:4") for seed in (0, 1)]
        assert not registry.enqueue(same).added
        runs = registry.runs_frame().set_index("run_id")
        assert runs.loc[4, "transient_failures"] == 1 and runs.loc[4, "retry_at"] > runs.loc[4, "created_at"]
        assert registry.enqueue([same[0].replace(pattern=Pattern.parse("unstructured:0.875"))]).added
        assert registry.runs_frame()["pattern"].iloc[-1] == "unstructured:0.875"
