"""The Typer application, its global options, and the one place errors become exit codes.

Exit codes, the same for every command:

    0    done
    1    the operation failed (a mailbox or journal refused, a replayed message failed again)
    2    usage or configuration error (bad flag, setting, file or address; fix and rerun)
    130  interrupted (Ctrl-C twice during `run`, or Ctrl-C in any other command)

Nothing a user can cause prints a Python traceback: agentmail's own errors become one
`error: …` line, anything else one line naming the exception; `-v` adds the traceback.

Start-up time matters (every command pays it): command modules import only typer and the
light parts of agentmail; the journal, Gmail client and emulator are imported inside the
commands that use them.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
import typer.core
import typer.exceptions

from agentmail import errors
from agentmail.cli import context

EXIT_INTERRUPTED = 130


def _verbose(ctx: Any) -> int:
    found = ctx.find_object(context.CliContext) if ctx is not None else None
    return found.verbose if found is not None else 0


def _fail(ctx: Any, line: str, code: int, exc: BaseException) -> typer.Exit:
    if _verbose(ctx):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    typer.secho(f"error: {line}", err=True, fg="red")
    return typer.Exit(code)


class _Group(typer.core.TyperGroup):
    """Maps every exception to one clear line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):  # usage: exit 2
            raise
        except errors.AgentmailError as exc:
            raise _fail(ctx, str(exc), exc.exit_code, exc) from exc
        except KeyboardInterrupt as exc:
            typer.secho("interrupted", err=True, fg="yellow")
            raise typer.Exit(EXIT_INTERRUPTED) from exc
        except OSError as exc:  # a file or socket the user named: say which, exit 1
            where = f": {exc.filename}" if exc.filename else ""
            raise _fail(ctx, f"{exc.strerror or exc}{where}", errors.EXIT_FAILURE, exc) from exc
        except Exception as exc:  # a bug: one line, and the traceback with -v for the report
            hint = "" if _verbose(ctx) else " (run with -v for the traceback to report)"
            raise _fail(ctx, f"unexpected {type(exc).__name__}: {exc}{hint}",
                        errors.EXIT_FAILURE, exc) from exc


app = typer.Typer(
    cls=_Group,
    help="Agents that talk to each other over email, with a journal of every step.\n\n"
         "Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error, "
         "130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich markup would eat "[str]" in help texts, and importing Rich costs time.
    rich_markup_mode=None,
)


class _Formatter(logging.Formatter):
    """`warning: …` lines for people; timestamps and logger names with -v."""

    def __init__(self, verbose: int) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else None)
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _logging(verbose: int, quiet: bool) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(verbose))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR if quiet else level)
    # Alembic narrates each migration at INFO; a journal upgrade is not news below -vv.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


@app.callback()
def _globals(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None, "--db", metavar="PATH|URL", help="Journal: a SQLite path or a SQLAlchemy URL "
        "(postgresql+psycopg://…). Default: agentmail.db next to the config file ($AGENTMAIL_DB)."),
    config: Path | None = typer.Option(
        None, "--config", metavar="FILE",
        help="Config file. Default: ./agent_config.json ($AGENTMAIL_CONFIG)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                help="More detail: -v info, -vv debug (repeat the flag, it "
                                "takes no value); also tracebacks of errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and final summaries."),
) -> None:
    _logging(verbose, quiet)
    ctx.obj = context.CliContext(config_path=config, db=db, verbose=verbose, quiet=quiet)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    # Each module only declares its commands (typer + light imports); heavy work is inside.
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
