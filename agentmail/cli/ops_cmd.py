"""`agentmail replay` and `agentmail status`: operating a mailbox's failures and health."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from agentmail import errors
from agentmail.cli.context import check_address, obj, print_json

if TYPE_CHECKING:
    from agentmail.services import replay as rp
    from agentmail.services import status as st

# By the outcome names of agentmail.services.replay.
OUTCOME_COLORS = {"succeeded": "green", "queued": "cyan", "would_replay": "cyan",
                  "skipped": "bright_black", "refused": "red", "failed": "red",
                  "dead_lettered": "red", "unfinished": "yellow"}


def replay(
    ctx: typer.Context,
    message: list[str] = typer.Option(
        [], "--message", "-m", help="A received message: Gmail message id or Message-ID "
        "(repeatable)."),
    thread: list[str] = typer.Option(
        [], "--thread", "-t", help="Every received message of a conversation: conversation id, "
        "Gmail thread id or any Message-ID in it (repeatable)."),
    failed: bool = typer.Option(False, "--failed", help="Every dead-lettered message "
                                "(of --email, or of all accounts)."),
    email: str | None = typer.Option(None, "--email", "-e", help="Only this mailbox."),
    since: str | None = typer.Option(
        None, "--since", help="Only messages that changed since WHEN: ISO date/time (UTC) or an "
        "age such as 30m, 2h, 3d. Alone, it means --failed --since WHEN."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be replayed and why; "
                                 "change nothing."),
    force: bool = typer.Option(False, "--force", help="Also replay messages that already "
                               "succeeded (their handler runs and replies again)."),
    queue: bool = typer.Option(False, "--queue", help="Only mark them for replay; the running "
                               "agent (or the next `agentmail run`) processes them."),
    handler: str | None = typer.Option(
        None, "--handler", metavar="MODULE:CLASS", help="Agent subclass to run, as "
        "package.module:Class (default: the handler the mailbox's last run used, else the "
        "config's 'handler'; with neither, replay refuses rather than guess)."),
    emulator: str | None = typer.Option(
        None, "--emulator", help="Gmail API emulator URL instead of Google ($AGENTMAIL_EMULATOR)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Reprocess failed messages: give them a fresh attempt budget and run the handler now.

    Each replay is journaled (replay_requested) and the agent-failed label removed; the
    message then goes through the same claim, handler, send and ack steps as in
    `agentmail run`. Exits 1 if a replayed message fails again or one is refused.
    """
    from agentmail.services import handlers
    from agentmail.services import replay as rp
    from agentmail.services.mailboxes import open_mailbox

    c = obj(ctx)
    if email is not None:
        email = check_address(email)
    settings = c.settings(emulator=emulator)
    # --handler is checked like the setting it would override, before anything is touched.
    flag = c.settings(handler=handler).handler if handler else None
    journal = c.journal(settings, create=False)
    selection = rp.Selection(messages=message, threads=thread, failed=failed, email=email,
                             since=rp.parse_when(since, journal.clock()) if since else None)
    chosen: dict[str, str] = {}

    def load_agent(address: str) -> Any:
        spec, why = rp.resolve_handler(journal, address, flag=flag, configured=settings.handler)
        chosen[address] = f"{spec} ({why})"
        return handlers.load_agent(spec, address, folders=[settings.config_path.parent])

    replayer = rp.Replayer(journal, settings, open_mailbox=open_mailbox, load_agent=load_agent)
    report = replayer.replay(selection, force=force, queue=queue, dry_run=dry_run)
    report.handlers.update(chosen)
    if dry_run and not queue:  # say now which handler a real replay would run, or why none
        for address in dict.fromkeys(i.account for i in report.items if i.action == rp.REPLAY):
            try:
                spec, why = rp.resolve_handler(journal, address, flag=flag,
                                               configured=settings.handler)
                report.handlers[address] = f"{spec} ({why})"
            except errors.UsageError as exc:
                report.warnings.append(str(exc))
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    if as_json:
        print_json({"dry_run": dry_run, "queued": queue, "failed": report.failed,
                    "looked_at": report.looked_at, "handlers": report.handlers,
                    "items": [i.to_json() for i in report.items]})
    else:
        _replay_table(c, report, dry_run=dry_run)
    if report.failed:
        raise typer.Exit(1)


def _replay_table(c: Any, report: rp.ReplayReport, *, dry_run: bool) -> None:
    for account, spec in report.handlers.items():
        c.say(f"{account}: handler {spec}", dim=True)
    if not report.items:
        typer.echo(f"nothing matched: looked at {report.looked_at}")
        return
    typer.secho(f"{'outcome':<14} {'was':<14} {'sent':>4}  {'message':<34} why", bold=True)
    for i in report.items:
        who = f"{i.account}:{i.provider_id}"
        outcome, state = (i.outcome or "-").replace("_", "-"), i.state.replace("_", "-")
        typer.secho(f"{outcome:<14} {state:<14} {i.sent:>4}  {who:<34} {i.reason}",
                    fg=OUTCOME_COLORS.get(i.outcome or ""))
        if i.error:
            typer.secho(f"{'':<14} error: {i.error}", fg="red")
    counts: dict[str, int] = {}
    for i in report.items:
        counts[i.outcome or "-"] = counts.get(i.outcome or "-", 0) + 1
    summary = ", ".join(f"{n} {outcome.replace('_', '-')}" for outcome, n in counts.items())
    typer.secho(("dry run: " if dry_run else "") + summary, bold=True)


def status(
    ctx: typer.Context,
    email: str | None = typer.Option(None, "--email", "-e", help="Only this mailbox."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Per mailbox: last run (alive?), last sync and history cursor, messages by status,
    the oldest pending message's age and the last error."""
    from agentmail.services import status as st

    c = obj(ctx)
    if email is not None:
        email = check_address(email)
    settings = c.settings()
    accounts = st.status(c.journal(settings, create=False), settings, email)
    if as_json:
        print_json({"accounts": [a.to_json() for a in accounts]})
        return
    if not accounts:
        c.say("the journal has no accounts yet: `agentmail run --email X` starts one")
    for a in accounts:
        _status_text(a)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _at(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else value.isoformat()
    return text[:19].replace("T", " ")


def _status_text(a: st.AccountStatus) -> None:
    typer.secho(a.address, bold=True)
    run = a.last_run
    if run is None:
        typer.echo("  run        never")
    else:
        state = "alive" if run["alive"] else ("stopped" if run["status"] == "stopped"
                                              else "dead (crashed or killed)")
        typer.secho(f"  run        {run['run_id'][:8]} {state}, pid {run['pid']} on {run['host']}, "
                    f"started {_at(run['started_at'])}, last heartbeat {_at(run['heartbeat_at'])}",
                    fg="green" if run["alive"] else None)
    typer.echo(f"  sync       {_at(a.last_sync_at)}, history id {a.history_id or '-'}")
    n = a.counts
    typer.echo(f"  messages   {n['pending']} pending, {n['in_flight']} in flight, "
               f"{n['failed']} failed (retrying), {n['dead_lettered']} dead-lettered, "
               f"{n['rejected']} rejected, {n['acked']} acked")
    typer.echo(f"  oldest     {_ago(a.oldest_pending_age)} pending" if a.oldest_pending_age
               is not None else "  oldest     nothing pending")
    if a.last_error:
        typer.secho(f"  last error {_at(a.last_error['at'])} {a.last_error['error']} "
                    f"({a.last_error['message_key']})", fg="red")
    else:
        typer.echo("  last error none")


def register(app: typer.Typer) -> None:
    app.command()(replay)
    app.command()(status)
