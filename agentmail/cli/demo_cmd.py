"""`agentmail demo`: see two agents talk, with no Google account."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agentmail import errors
from agentmail.cli.context import obj


def demo(
    ctx: typer.Context,
    folder: Path = typer.Option(Path("demo"), "--dir", metavar="FOLDER",
                                help="Where the journal and the emulator's mailboxes are written."),
) -> None:
    """Start a local Gmail emulator and two agents; one asks, the other answers, once."""
    from agentmail.cli.output import StepPrinter
    from agentmail.services.demo import run_demo

    c = obj(ctx)
    if folder.exists() and not folder.is_dir():
        raise errors.UsageError(f"--dir {folder} is a file; name a folder for the demo's files")
    printer = StepPrinter("demo", verbose=c.verbose, quiet=c.quiet)
    result = run_demo(folder.resolve(), say=c.say, on_step=printer.step)
    c.say()
    c.say(f"conversation {result.conversation_id} ({len(result.messages)} message copies, "
          f"{result.cycles} cycle{'' if result.cycles == 1 else 's'}):", bold=True)
    for row in result.messages:
        payload = json.loads(row.payload) if row.payload else None
        c.say(f"  [{row.account} {row.direction:>3} {row.state}] {row.sender} → "
              f"{', '.join(json.loads(row.recipients))}: {row.subject}")
        if payload is not None:
            c.say("      " + json.dumps(payload, ensure_ascii=False)[:160])
    c.say()
    c.say(f"journal:  {result.journal_path}")
    c.say(f"emulator: {result.emulator_path}")
    c.say(f"try:      agentmail --db {result.journal_path} history --thread "
          f"{result.conversation_id} --events")
    c.say(f"          agentmail --db {result.journal_path} journal verify")


def register(app: typer.Typer) -> None:
    app.command()(demo)
