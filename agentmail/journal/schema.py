"""Opening a journal database: refuse what is not ours, upgrade what is older.

The Alembic scripts in `migrations/` are the only source of schema changes;
the application runs them itself on open, so users never call Alembic.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from agentmail import errors
from agentmail.journal.engine import MIGRATION_LOCK, WRITE_OPTION, is_sqlite

if TYPE_CHECKING:
    from alembic.config import Config

_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.M)

SQLITE_MAGIC = b"SQLite format 3\x00"
REPO_ROOT = Path(__file__).resolve().parents[2]


def migrations_dir() -> Path:
    """`migrations/` of a source checkout, or the copy packaged as `agentmail/_migrations`."""
    for candidate in (REPO_ROOT / "migrations", Path(__file__).resolve().parents[1] / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise errors.JournalError("agentmail's migration scripts are missing from this installation")


def alembic_config(engine: Engine | None = None, connection: object | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        cfg.attributes["engine"] = engine
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def check_sqlite_file(path: Path) -> None:
    """Refuse, without writing a byte, a file that is not an agentmail SQLite journal.

    Runs before the engine exists because its connections switch the file to WAL mode,
    which rewrites the header of whatever database they open.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise errors.NotAJournal(f"{path} is not an agentmail journal (not an SQLite database); "
                                     "it was left untouched: pass another --db")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise errors.NotAJournal(f"{path} is not a readable SQLite database ({exc}); "
                                 "it was left untouched: pass another --db") from exc
    finally:
        conn.close()
    if names and "events" not in names:
        raise errors.NotAJournal(f"{path} is an SQLite database of another application, not an "
                                 "agentmail journal; it was left untouched: pass another --db")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def scripted_head() -> str | None:
    """The head revision read from the migration scripts' text, without importing Alembic
    (which costs a command about 0.1 s); None when the scripts do not say it plainly."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (migrations_dir() / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        found, down = _REVISION.search(source), _DOWN.search(source)
        if found is None or down is None:
            return None
        revisions.add(found.group(1))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _stamped_revision(engine: Engine) -> str | None:
    """alembic_version as a plain query, if this is an agentmail journal (it has events);
    None when there is no such table or row."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            conn.execute(text("SELECT seq FROM events WHERE 1 = 0")).all()
    except DBAPIError:
        return None
    return rows[0][0] if len(rows) == 1 else None


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[object | None]:
    """Serialise schema checks and upgrades between processes opening one journal at once.

    PostgreSQL: a session advisory lock held on a connection of its own. SQLite: the file's
    write lock, by running the whole check and upgrade in one BEGIN IMMEDIATE transaction on
    the connection yielded (Alembic then migrates on that connection).
    """
    if is_sqlite(engine):
        with engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn
        return
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        lock.commit()
        try:
            yield None
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            lock.commit()


def prepare(engine: Engine, *, upgrade: bool = True) -> None:
    """Check the database is an agentmail journal we can use, upgrading it when older.

    Several processes may open a new journal at the same moment: the first upgrades it
    under a lock, the others wait and then find it current.
    """
    stamped = _stamped_revision(engine)
    if stamped is not None and stamped == scripted_head():
        return  # the usual case, a current journal: no Alembic needed
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:
        # Alembic narrates its imports and each step at INFO, which a script's
        # basicConfig(INFO) shows amid an agent's output; who wants it sets a level.
        alembic_log.setLevel(logging.WARNING)
    if not upgrade:
        _prepare(engine, None, upgrade=False)
        return
    with _migration_lock(engine) as conn:
        _prepare(engine, conn, upgrade=True)


def _prepare(engine: Engine, conn: object | None, *, upgrade: bool) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    bind = conn if conn is not None else engine
    tables = set(inspect(bind).get_table_names())
    found = _revision(bind) if "alembic_version" in tables else None
    scripts = ScriptDirectory.from_config(alembic_config())
    if found is None:
        if tables - {"alembic_version"}:
            raise errors.NotAJournal(
                f"{engine.url.render_as_string(hide_password=True)} holds other tables and no "
                "agentmail journal; it was left untouched: pass another --db")
    else:
        try:
            scripts.get_revision(found)
        except Exception as exc:  # alembic raises several kinds for an unknown revision
            if "events" not in tables:
                raise errors.NotAJournal(
                    f"{engine.url.render_as_string(hide_password=True)} is versioned by another "
                    "application, not agentmail; it was left untouched") from exc
            raise errors.SchemaTooNew(found, head_revision()) from exc
    if found != head_revision() and upgrade:
        command.upgrade(alembic_config(engine, connection=conn), "head")


def _revision(bind: object) -> str | None:
    from alembic.runtime.migration import MigrationContext

    if isinstance(bind, Engine):
        return current_revision(bind)
    return MigrationContext.configure(bind).get_current_revision()  # type: ignore[arg-type]
