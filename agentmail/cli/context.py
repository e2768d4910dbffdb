"""What every command gets in ctx.obj: resolved settings and an opened journal, built lazily.

Every command builds its behaviour from one `Settings` object, resolved here from the
config file, the environment and that command's flags, and validated once by it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from agentmail import errors
from agentmail.config import Settings, load_settings

if TYPE_CHECKING:
    from agentmail.journal.store import Journal

# The command-line option behind each setting a flag can override, for error messages.
FLAGS = {"db": "--db", "check_interval": "--interval", "handler": "--handler",
         "emulator": "--emulator", "max_attempts": "--max-attempts",
         "concurrency": "--concurrency", "handler_timeout": "--handler-timeout"}

# Loose on purpose: the mailbox provider decides what it accepts; this catches typos
# ("bad address", a missing @) before an OAuth flow or an HTTP call hides them.
_SPECIALS = r"\s@<>(),;:\"\[\]\\"
_ADDRESS = re.compile(rf"^[^{_SPECIALS}]+@[^{_SPECIALS}.-](?:[^{_SPECIALS}]*[^{_SPECIALS}.-])?$")


def check_address(value: str, option: str = "--email") -> str:
    if not _ADDRESS.match(value.strip()):
        raise errors.UsageError(f"{option} {value!r} is not an email address "
                                "(write it as name@example.com)")
    return value.strip()


@dataclass
class CliContext:
    config_path: Path | None
    db: str | None
    verbose: int = 0
    quiet: bool = False
    _journal: Journal | None = field(default=None, repr=False)

    def settings(self, *, read_file: bool = True, must_exist: bool = True,
                 **overrides: Any) -> Settings:
        return load_settings(self.config_path, overrides={"db": self.db, **overrides},
                             flags=FLAGS, must_exist=must_exist, read_file=read_file)

    def journal(self, settings: Settings | None = None, *, create: bool = True) -> Journal:
        """The journal of the settings; `create=False` for commands that only read it, so a
        command run in the wrong folder says so instead of leaving an empty journal there."""
        if self._journal is None:
            from agentmail.cli import journal_access

            self._journal = journal_access.open_journal(settings or self.settings(),
                                                        create=create)
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
