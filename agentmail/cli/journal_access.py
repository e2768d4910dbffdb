"""Opening the journal a command names, with one clear line for each way that can go wrong."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from agentmail import errors
from agentmail.config import Settings
from agentmail.journal.store import Journal

# The extra that installs each database's driver, by SQLAlchemy dialect.
DRIVER_EXTRAS = {"postgresql": "agentmail-cli[postgres]"}


def masked(url: str) -> str:
    """The URL without its password, fit for an error message."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def _sqlite_path(url: str) -> Path | None:
    if "://" not in url:
        return Path(url).expanduser()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///"))
    return None


def open_journal(settings: Settings, *, create: bool = True) -> Journal:
    url = settings.db_url
    path = _sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise errors.ConfigError(f"--db {path} is a folder; name the journal file, such as "
                                     f"{path / 'agentmail.db'}")
        if not create and not path.exists():
            raise errors.ConfigError(
                f"no journal here: {path} does not exist. Run this in the agent's folder, pass "
                "--db PATH, or start one with `agentmail init`")
    try:
        return Journal.open(url)
    except ImportError as exc:  # SQLAlchemy imports the DBAPI driver when it builds the engine
        dialect = url.split("://", 1)[0].split("+", 1)[0]
        extra = DRIVER_EXTRAS.get(dialect)
        install = f"pip install '{extra}'" if extra else "install it"
        raise errors.ConfigError(f"the journal {dialect}:// needs a database driver that is not "
                                 f"installed ({exc}): {install}") from exc
    except NoSuchModuleError as exc:
        raise errors.ConfigError(f"--db {masked(url)}: SQLAlchemy has no such database driver "
                                 "(use postgresql+psycopg://… or a SQLite path)") from exc
    except ArgumentError as exc:
        raise errors.ConfigError(f"--db {masked(url)}: not a database URL SQLAlchemy can use ({exc})"
                                 ) from exc
