"""Databases saved at every past schema version upgrade to the head with their records intact."""

import shutil
from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from rnmtd3.registry import open_registry
from rnmtd3.registry.engine import alembic_config, make_engine

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
