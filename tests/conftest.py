"""Shared test settings: one torch thread, so timings and float results do not depend on the machine's cores."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database on the server that $RNM_TEST_PG names (CI starts one); dropped after."""
    import os
    import uuid

    base = os.environ.get("RNM_TEST_PG")
    if not base:
        pytest.skip("set RNM_TEST_PG=postgresql+psycopg://... to run the registry tests on PostgreSQL")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"rnm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The registry under test: a SQLite file, then (where $RNM_TEST_PG is set) a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rnm.db'}"
    return request.getfixturevalue("pg_url")
