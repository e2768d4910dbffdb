"""Shared fixtures: journals on SQLite (always) and PostgreSQL (when AGENTMAIL_TEST_POSTGRES is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Tests must not pick up a developer's own settings.
for _name in [n for n in os.environ if n.startswith("AGENTMAIL_") and n != "AGENTMAIL_TEST_POSTGRES"]:
    del os.environ[_name]

POSTGRES_URL = os.environ.get("AGENTMAIL_TEST_POSTGRES")


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL journal tests need AGENTMAIL_TEST_POSTGRES=postgresql+psycopg://… "
                    "(.ci/run sets it)")
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"agentmail_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server configured but not reachable: say so rather than fail later
        admin.dispose()
        pytest.fail(f"AGENTMAIL_TEST_POSTGRES is set but unusable: {exc}")
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL for an empty journal database, on each engine the journal supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'journal.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def journal(journal_url):
    from agentmail.journal.store import Journal

    j = Journal.open(journal_url)
    yield j
    j.close()


@pytest.fixture
def sqlite_journal(tmp_path):
    from agentmail.journal.store import Journal

    j = Journal.open(str(tmp_path / "journal.db"))
    yield j
    j.close()
