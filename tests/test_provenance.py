"""What each attempt records about the code and machine that made it: exact keys, real versions, the git commit
only for a tracked checkout (dirty when tracked files changed), and never a failure or an import of torch."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rnmtd3 import provenance
from rnmtd3.provenance import collect, cpu_model, git_commit


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with a committed package folder `pkg` (an __init__.py), like src/rnmtd3 in rnm's own."""
    git(tmp_path, "init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    git(tmp_path, "add", "pkg")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_collect_has_exactly_the_keys_and_the_installed_versions():
    record = collect(threads=3)
    assert tuple(record) == ("rnm_version", "git_commit", "python", "torch", "gymnasium", "mujoco", "host", "cpu",
                             "threads")
    for key, distribution in (("rnm_version", "rnmtd3"), ("torch", "torch"), ("gymnasium", "gymnasium"),
                              ("mujoco", "mujoco")):
        assert record[key] == metadata.version(distribution)
    assert record["python"] == ".".join(map(str, sys.version_info[:3])) and record["threads"] == 3
    assert record["host"] and record["cpu"]


def test_collect_does_not_import_torch():
    probe = "import sys; from rnmtd3.provenance import collect; collect(1); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_git_commit_of_a_tracked_package_and_dirty_only_for_tracked_changes(checkout: Path):
    head = git(checkout, "rev-parse", "HEAD")
    package = checkout / "pkg"
    assert git_commit(package) == head
    (checkout / "rnm.db").write_text("an untracked database beside the code")
    assert git_commit(package) == head
    (package / "__init__.py").write_text("x = 1\n")
    assert git_commit(package) == f"{head}-dirty"


def test_no_git_commit_for_an_installed_copy_or_outside_a_checkout(checkout: Path, tmp_path_factory):
    installed = checkout / ".venv" / "site-packages" / "pkg"  # inside the work tree, but not tracked
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert git_commit(installed) is None
    outside = tmp_path_factory.mktemp("outside")
    assert git_commit(outside) is None


def test_no_git_commit_and_no_failure_without_git(checkout: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(checkout / "no-such-bin"))
    assert git_commit(checkout / "pkg") is None
    assert collect(threads=1)["git_commit"] is None


def test_cpu_model_from_cpuinfo_else_the_platform(tmp_path: Path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7763 64-Core Processor"
    monkeypatch.setattr(provenance.platform, "processor", lambda: "arm")
    assert cpu_model(tmp_path / "missing") == "arm"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an ARM cpuinfo has no model name
    assert cpu_model(cpuinfo) == "arm"
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    assert cpu_model(tmp_path / "missing") is None
