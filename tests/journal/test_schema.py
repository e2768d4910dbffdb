"""The journal's schema: migrations, version checks, refusing what is not a journal."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from agentmail import errors
from agentmail.journal import schema
from agentmail.journal.store import Journal, make_engine
from agentmail.journal.tables import metadata


def _tables(engine):
    return set(inspect(engine).get_table_names())


def test_empty_database_is_upgraded_to_head_on_open(journal_url):
    with Journal.open(journal_url) as j:
        assert schema.current_revision(j.engine) == schema.head_revision()
        assert {"events", "messages", "outbox", "conversations", "message_refs", "accounts",
                "runs"} <= _tables(j.engine)


def test_migrations_down_to_base_and_up_again(journal_url):
    engine = make_engine(journal_url)
    cfg = schema.alembic_config(engine)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    assert _tables(engine) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    assert schema.current_revision(engine) == schema.head_revision()
    engine.dispose()


def test_head_schema_equals_the_table_definitions(journal_url):
    with Journal.open(journal_url) as j, j.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                metadata)
    assert diff == []


def test_a_newer_schema_is_refused_naming_both_versions(journal_url):
    with Journal.open(journal_url) as j, j.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(errors.SchemaTooNew) as info:
        Journal.open(journal_url)
    assert "9999_future" in str(info.value) and schema.head_revision() in str(info.value)
    assert info.value.exit_code == 2


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_text_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my shopping list\n")
    before = (_digest(path), path.stat().st_mtime_ns)
    with pytest.raises(errors.NotAJournal, match="left untouched"):
        Journal.open(str(path))
    assert (_digest(path), path.stat().st_mtime_ns) == before
    assert not (tmp_path / "notes.txt-wal").exists()


def test_another_applications_sqlite_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(errors.NotAJournal):
        Journal.open(str(path))
    assert _digest(path) == before


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(errors.JournalError, match="does not exist"):
        Journal.open(str(tmp_path / "nowhere" / "j.db"))


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(sqlite_journal):
    with sqlite_journal.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_alembic_upgrade_head_works_from_the_repo_root(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    db = tmp_path / "cli.db"
    done = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={db}", "upgrade", "head"],
                          cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Journal.open(str(db)) as j:
        assert schema.current_revision(j.engine) == schema.head_revision()


def test_an_older_journal_is_upgraded_on_open_and_keeps_its_events(journal_url):
    from sqlalchemy import insert

    from agentmail.journal import tables as t
    from tests.journal.history import fetched

    engine = make_engine(journal_url)
    command.upgrade(schema.alembic_config(engine), "0001")  # as an earlier agentmail left it
    e = fetched("a@example.com", "m1")
    with engine.begin() as conn:  # the events table is as 0001 made it
        conn.execute(insert(t.events).values(at=datetime.now(timezone.utc), account=e.account,
                                             message_key=e.message_key, kind=e.kind,
                                             data=e.encoded_data()))
    engine.dispose()
    with Journal.open(journal_url) as j:
        assert schema.current_revision(j.engine) == schema.head_revision() != "0001"
        assert j.rebuild() == 1
        assert j.message("a@example.com:m1").state == "pending"
        assert "ix_messages_thread_id" in {i["name"] for i in inspect(j.engine).get_indexes(
            "messages")}
