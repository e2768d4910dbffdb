"""Alembic environment: runs on the application's engine, or on the URL from the command line.

`alembic upgrade head` from the repo root uses `-x db=URL`, else AGENTMAIL_DB, else
`sqlite:///agentmail.db`; the application passes its own engine instead.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from agentmail.journal.tables import metadata

config = context.config


def _engine():
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = context.get_x_argument(as_dictionary=True).get("db") or os.environ.get(
        "AGENTMAIL_DB", "sqlite:///agentmail.db")
    if "://" not in url:
        url = f"sqlite:///{url}"
    return create_engine(url)


def _configure_and_run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    given = config.attributes.get("connection")
    if given is not None:  # the application's, inside the transaction that holds its lock
        _configure_and_run(given)
        return
    with _engine().connect() as connection:
        # render_as_batch lets ALTERs run on SQLite through table copies.
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
