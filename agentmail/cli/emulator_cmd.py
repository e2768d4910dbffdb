"""`agentmail emulator`: serve the Gmail API emulator until Ctrl-C."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import typer

from agentmail import errors

# The emulator's quota cost tables (agentmail.emulator.quota.COSTS), named here so that
# declaring the command does not import the emulator.
REGIMES = ("2026-05", "legacy")


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8025, min=0, max=65535, help="TCP port (0 picks a free one)."),
    db: str = typer.Option(
        "emulator.db", metavar="FILE",
        help="The emulator's own SQLite file (':memory:' keeps nothing)."),
    rate_limit: int | None = typer.Option(
        None, "--rate-limit", help="Per-user quota units per rolling minute (429 beyond); "
        "Gmail's limit is 6000 (2026-05) or 15000 (legacy). Default: unlimited."),
    concurrency_limit: int | None = typer.Option(
        None, "--concurrency-limit", help="In-flight calls per user (429 beyond)."),
    regime: str = typer.Option(
        "2026-05", help=f"Quota cost table: {' or '.join(REGIMES)}."),
    history_retention: int | None = typer.Option(
        None, "--history-retention",
        help="Keep only the last N history records per mailbox (older startHistoryId -> 404)."),
    fail_rate: float = typer.Option(
        0.0, "--fail-rate", help="Chance (0..1) that a call answers 500, 503 or 429."),
    latency_ms: int = typer.Option(0, "--latency-ms", help="Added latency per call."),
    drop_rate: float = typer.Option(
        0.0, "--drop-rate", help="Chance (0..1) that a call's connection is dropped."),
    drop_phase: str = typer.Option(
        "either", help="Drop before the call is applied, after it (answer lost), or either."),
    rewrite_message_id: bool = typer.Option(
        False, "--rewrite-message-id", help="On send, replace the client's Message-ID."),
    seed: int | None = typer.Option(None, help="Seed for reproducible faults."),
) -> None:
    """Serve the Gmail REST API on localhost, delivering mail between its accounts.

    Accounts exist on first use: a client authenticates as an address with
    `Authorization: Bearer <address>`. Faults can also be changed while running
    with `PUT /emulator/v1/faults`; counters are at `GET /emulator/v1/stats`.
    """
    from agentmail.emulator import Emulator, quota

    if regime not in quota.COSTS:
        raise typer.BadParameter(f"choose one of {sorted(quota.COSTS)}", param_hint="--regime")
    if db != ":memory:":
        folder = Path(db).expanduser().parent
        if not folder.is_dir():
            raise errors.UsageError(f"--db {db}: the folder {folder} does not exist")
        if Path(db).is_dir():
            raise errors.UsageError(f"--db {db} is a folder; name the emulator's file in it")
    try:
        emu = Emulator(
            None if db == ":memory:" else db, host=host, port=port, rate_limit=rate_limit,
            concurrency_limit=concurrency_limit, regime=regime,
            history_retention=history_retention, seed=seed,
            faults={"error_rate": fail_rate, "latency_ms": latency_ms, "drop_rate": drop_rate,
                    "drop_phase": drop_phase, "rewrite_message_id": rewrite_message_id})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except sqlite3.DatabaseError as exc:
        raise errors.UsageError(f"--db {db}: cannot use it as the emulator's store ({exc})"
                                ) from exc
    try:
        emu.start()
    except OSError as exc:
        emu.stop()
        if exc.errno == errno.EADDRINUSE:
            raise errors.AgentmailError(f"port {port} on {host} is already in use (another "
                                        "emulator?): pass --port N, or --port 0 for any free one"
                                        ) from exc
        raise errors.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    typer.echo(f"Gmail API emulator listening on {emu.url}  (store: {db})")
    typer.echo(f"  agent:   agentmail run --emulator {emu.url}")
    typer.echo("  python:  from agentmail.emulator.client import build_service, new_batch")
    typer.echo(f'           svc = build_service("{emu.url}", "alice@example.com")')
    typer.echo(f"  batch:   {emu.url}/batch/gmail/v1   admin: {emu.url}/emulator/v1/stats")
    typer.echo("Ctrl-C to stop.")
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
