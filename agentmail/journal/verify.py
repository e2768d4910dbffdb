"""`journal verify`: rebuild the projections into a scratch database and compare them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, select

from agentmail.journal import projections as proj
from agentmail.journal import tables as t
from agentmail.journal.store import Journal, as_utc


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


def _rows(conn: Any, table: Any) -> dict[Any, dict[str, Any]]:
    pk = [c.name for c in table.primary_key.columns]
    out = {}
    for row in conn.execute(select(table)).mappings():
        out[tuple(row[c] for c in pk)] = {k: _normal(v) for k, v in row.items()}
    return out


def verify(journal: Journal) -> VerifyReport:
    """Replay every event into an empty in-memory database and diff it against the live one."""
    scratch = create_engine("sqlite://")
    t.metadata.create_all(scratch, tables=list(t.PROJECTIONS))
    count = 0
    with scratch.begin() as conn:
        for e in journal.iter_events():
            proj.apply(conn, e)
            count += 1
    diffs = []
    with journal.engine.connect() as live, scratch.connect() as rebuilt:
        for table in t.PROJECTIONS:
            a, b = _rows(live, table), _rows(rebuilt, table)
            diff = TableDiff(table.name, only_live=sorted(a.keys() - b.keys()),
                             only_rebuilt=sorted(b.keys() - a.keys()))
            for key in sorted(a.keys() & b.keys()):
                cols = [c for c in a[key] if a[key][c] != b[key][c]]
                if cols:
                    diff.changed.append((key, cols))
            diffs.append(diff)
    scratch.dispose()
    return VerifyReport(events=count, tables=diffs)
