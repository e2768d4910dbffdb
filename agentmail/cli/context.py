"""What every command gets in ctx.obj: resolved settings and an opened journal, built lazily."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from agentmail.config import Settings, load_settings
from agentmail.journal.store import Journal


@dataclass
class CliContext:
    config_path: Path | None
    db: str | None
    verbose: int = 0
    quiet: bool = False
    _journal: Journal | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(self.config_path, overrides={"db": self.db, **overrides})

    def journal(self, settings: Settings | None = None) -> Journal:
        if self._journal is None:
            self._journal = Journal.open((settings or self.settings()).db_url)
        return self._journal

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def say(self, text: str = "", **style: Any) -> None:
        """Progress and results for people; silent under --quiet."""
        if not self.quiet:
            typer.secho(text, **style)


def obj(ctx: typer.Context) -> CliContext:
    found = ctx.find_object(CliContext)
    assert found is not None, "the app callback sets ctx.obj"
    return found


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))
