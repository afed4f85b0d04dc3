"""A plain `pip install .` (a wheel, not the editable tree) carries the CLI and the Alembic migrations."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_carries_cli_and_migrations(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("rnmtd3-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    versions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))
    assert versions, "no migrations found"
    for required in ["rnmtd3/migrations/env.py", "rnmtd3/migrations/script.py.mako", "rnm_cli/main.py",
                     "rnmtd3/registry/store.py", "rnmtd3/report/tables.py",
                     *(f"rnmtd3/migrations/versions/{name}" for name in versions)]:
        assert required in names, f"{required} missing from {wheel.name}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rnm = rnm_cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_commands_and_the_worker_pool_start_without_torch():
    """`rnm status`, `rnm queue` and the parent of `rnm run-workers` skip torch's import (about 0.8 s of each
    start); only training loads it."""
    probe = ("import sys, rnm_cli.main, rnmtd3.workers, rnmtd3.resources; "
             "print(sorted(m for m in ('torch', 'rnmtd3.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
