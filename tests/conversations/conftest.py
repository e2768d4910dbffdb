"""A journal on a SQLite file the CLI can open with --db, and agents writing to it."""

from __future__ import annotations

import pytest

from agentmail.journal.store import Journal

from .mail import Mail


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "journal.db")


@pytest.fixture
def journal(sqlite_journal: Journal) -> Journal:
    return sqlite_journal  # the same file as `db`


@pytest.fixture
def mail(journal):
    return Mail(journal)
