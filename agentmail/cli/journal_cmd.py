"""`agentmail journal …`: maintenance of the event journal itself."""

from __future__ import annotations

import typer

from agentmail.cli.context import obj, print_json

app = typer.Typer(help="Inspect and maintain the event journal.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command()
def rebuild(ctx: typer.Context) -> None:
    """Recompute every projection (messages, conversations, accounts, runs) from the events.

    Refused while an `agentmail run` of this journal is alive: stop it first."""
    from agentmail.services.runner import run_is_alive

    c = obj(ctx)
    journal = c.journal(create=False)
    count = journal.rebuild(is_alive=run_is_alive(c.settings(), journal.clock))
    c.say(f"rebuilt the projections from {count} events")


@app.command()
def verify(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Rebuild into a scratch database and compare with the live projections (exit 1 on a difference)."""
    from agentmail.journal.verify import verify as verify_journal

    c = obj(ctx)
    report = verify_journal(c.journal(create=False))
    if as_json:
        print_json({"ok": report.ok, "events": report.events, "tables": {
            d.table: {"only_live": len(d.only_live), "only_rebuilt": len(d.only_rebuilt),
                      "changed": len(d.changed)} for d in report.tables}})
    else:
        for d in report.tables:
            if d.clean:
                c.say(f"  {d.table}: ok")
                continue
            typer.echo(f"  {d.table}: {len(d.only_live)} only live, {len(d.only_rebuilt)} only "
                       f"rebuilt, {len(d.changed)} changed")
            for key, cols in d.changed[:5]:
                typer.echo(f"    {key}: {', '.join(cols)}")
        verdict = "match" if report.ok else "DIFFER from"
        c.say(f"projections {verdict} a rebuild from {report.events} events")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def compact(
    ctx: typer.Context,
    older_than: float = typer.Option(
        None, "--older-than", min=0, metavar="DAYS",
        help="Delete bodies of messages finished more than DAYS ago "
             "[default: the body_retention_days setting, 7]."),
    include_dead_lettered: bool = typer.Option(
        False, "--include-dead-lettered",
        help="Also delete dead-lettered messages' bodies (they can then no longer be replayed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Delete the stored bodies of finished messages (acked, rejected, duplicate).

    Events, conversations and history stay; rebuild and verify need no bodies. Dead-lettered
    messages keep theirs for `agentmail replay` unless --include-dead-lettered."""
    from datetime import timedelta

    c = obj(ctx)
    days = c.settings().body_retention_days if older_than is None else older_than
    report = c.journal(create=False).compact(retention=timedelta(days=days),
                                             include_dead_lettered=include_dead_lettered)
    if as_json:
        print_json({"older_than_days": days, "bodies_deleted": report.bodies_deleted,
                    "bytes_freed": report.bytes_freed, "events_stripped": report.events_stripped,
                    "kept_dead_lettered": report.kept_dead_lettered})
        return
    c.say(f"deleted {report.bodies_deleted} bodies of messages finished over {days:g} days ago "
          f"({report.bytes_freed / 1e6:.1f} MB)"
          + (f", stripped {report.events_stripped} bodies kept inline by older events"
             if report.events_stripped else ""))
    if report.kept_dead_lettered:
        c.say(f"kept {report.kept_dead_lettered} dead-lettered messages' bodies for replay "
              "(--include-dead-lettered deletes them too)")
