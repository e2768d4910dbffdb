"""`journal verify`: rebuild the projections into a scratch database and compare them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, select, tuple_

from agentmail.journal import projections as proj
from agentmail.journal import tables as t
from agentmail.journal.store import Journal, as_utc

BATCH = 2000  # rows compared at a time: memory stays flat whatever the journal's size
# Written by live runs outside events (heartbeats and lease extensions): not derived state.
MUTABLE = {"runs": {"heartbeat_at", "expires_at", "progress_at"},
           "messages": {"lease_expires_at", "handler_started_at"}}


@dataclass
class TableDiff:
    table: str
    only_live: list[Any] = field(default_factory=list)  # primary keys
    only_rebuilt: list[Any] = field(default_factory=list)
    changed: list[tuple[Any, list[str]]] = field(default_factory=list)  # key, columns

    @property
    def clean(self) -> bool:
        return not (self.only_live or self.only_rebuilt or self.changed)


@dataclass
class VerifyReport:
    events: int
    tables: list[TableDiff]

    @property
    def ok(self) -> bool:
        return all(d.clean for d in self.tables)


def _normal(value: Any) -> Any:
    return as_utc(value) if isinstance(value, datetime) else value


def _stream(conn: Connection, table: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(primary key, row) of every row, in key order, read in batches."""
    pk = [table.c[c.name] for c in table.primary_key.columns]
    skip = MUTABLE.get(table.name, set())
    after: tuple[Any, ...] | None = None
    while True:
        query = select(table).order_by(*pk).limit(BATCH)
        if after is not None:
            query = query.where(tuple_(*pk) > tuple_(*after))
        rows = conn.execute(query).mappings().all()
        if not rows:
            return
        for row in rows:
            key = tuple(row[c.name] for c in pk)
            yield key, {k: _normal(v) for k, v in row.items() if k not in skip}
        after = tuple(rows[-1][c.name] for c in pk)


def _compare(name: str, live: Iterator[tuple[Any, dict[str, Any]]],
             rebuilt: Iterator[tuple[Any, dict[str, Any]]]) -> TableDiff:
    """Merge two key-ordered streams and note what differs."""
    diff = TableDiff(name)
    a, b = next(live, None), next(rebuilt, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            diff.only_live.append(a[0])
            a = next(live, None)
        elif a is None or b[0] < a[0]:
            diff.only_rebuilt.append(b[0])
            b = next(rebuilt, None)
        else:
            cols = [c for c in a[1] if a[1][c] != b[1].get(c)]
            if cols:
                diff.changed.append((a[0], cols))
            a, b = next(live, None), next(rebuilt, None)
    return diff


def verify(journal: Journal) -> VerifyReport:
    """Replay every event into an empty scratch database and diff it against the live one.

    Reads one snapshot of the live journal (events and projections alike, taking no lock,
    so live runs go on), streaming rows so memory does not grow with the journal.
    """
    with tempfile.TemporaryDirectory(prefix="agentmail-verify-") as tmp:
        scratch = create_engine(f"sqlite:///{Path(tmp) / 'rebuilt.db'}")
        t.metadata.create_all(scratch, tables=list(t.PROJECTIONS))
        count = 0
        options = {} if journal.engine.dialect.name == "sqlite" else {
            "isolation_level": "REPEATABLE READ"}
        with journal.engine.connect().execution_options(**options) as live:
            with scratch.begin() as conn:
                for e in journal.iter_events(conn=live):
                    proj.apply(conn, e)
                    count += 1
            with scratch.connect() as rebuilt:
                diffs = [_compare(table.name, _stream(live, table), _stream(rebuilt, table))
                         for table in t.PROJECTIONS]
        scratch.dispose()
    return VerifyReport(events=count, tables=diffs)
