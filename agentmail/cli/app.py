"""The Typer application, its global options, and the one place errors become exit codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
import typer.core

from agentmail import errors
from agentmail.cli import context


class _Group(typer.core.TyperGroup):
    """Maps agentmail's exception tree to one clear line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except errors.AgentmailError as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(exc.exit_code) from exc


app = typer.Typer(
    cls=_Group,
    help="Agents that talk to each other over email, with a journal of every step.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _globals(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None, "--db", help="Journal: a SQLite path or a SQLAlchemy URL "
        "(postgresql+psycopg://…). Default: agentmail.db next to the config file."),
    config: Path | None = typer.Option(
        None, "--config", help="Config file. Default: ./agent_config.json ($AGENTMAIL_CONFIG)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail; -vv for debug."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and final summaries."),
) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=logging.ERROR if quiet else level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = context.CliContext(config_path=config, db=db, verbose=verbose, quiet=quiet)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    # Imported here so each command module can import `app` helpers without a cycle.
    from agentmail.cli import (
        approval_cmd,
        auth_cmd,
        demo_cmd,
        emulator_cmd,
        history_cmd,
        journal_cmd,
        mcp_cmd,
        ops_cmd,
        run_cmd,
        setup_cmd,
    )

    setup_cmd.register(app)
    auth_cmd.register(app)
    run_cmd.register(app)
    demo_cmd.register(app)
    app.command("emulator")(emulator_cmd.serve)
    history_cmd.register(app)
    ops_cmd.register(app)
    mcp_cmd.register(app)
    approval_cmd.register(app)
    app.add_typer(journal_cmd.app, name="journal")


_register()


def main() -> None:
    app(prog_name="agentmail")
