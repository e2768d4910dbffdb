"""`agentmail init`: a starter config and an empty journal."""

from __future__ import annotations

import json

import typer

from agentmail import errors
from agentmail.cli.context import obj
from agentmail.config import starter_config


def init(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing config file, "
                               "also one that is broken."),
) -> None:
    """Write a starter agent_config.json and create (or upgrade) the journal."""
    c = obj(ctx)
    # --force must be able to replace a config that no longer loads: read flags and
    # environment only, then write the file, then load what was written.
    try:
        settings = c.settings(must_exist=False, read_file=not force)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{exc} (`agentmail init --force` replaces the config file "
                                 "with a starter one)") from exc
    path = settings.config_path
    if path.exists() and not force:
        c.say(f"config: {path} exists, kept (use --force to overwrite)")
    else:
        if not path.parent.exists():
            raise errors.ConfigError(f"cannot write {path}: the folder does not exist")
        if path.is_dir():
            raise errors.ConfigError(f"cannot write {path}: it is a folder")
        path.write_text(json.dumps(starter_config(), indent=2) + "\n", encoding="utf-8")
        c.say(f"config: wrote {path}")
        settings = c.settings()
    journal = c.journal(settings)
    c.say(f"journal: {settings.db_url} ready ({journal.event_count()} events)")
    c.say("next: `agentmail demo` to see two agents talk, or `agentmail auth --email YOU` for Gmail")


def register(app: typer.Typer) -> None:
    app.command()(init)
