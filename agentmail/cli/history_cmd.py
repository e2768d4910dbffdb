"""`agentmail history`, `threads`, `events`: reading conversations and the raw journal.

Rendering lives in `journal_view`, imported by each command when it runs.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from agentmail.cli.context import check_address, obj, print_json

HISTORY_SCHEMA = "agentmail.history/1"
THREADS_SCHEMA = "agentmail.threads/1"
FOLLOW_INTERVAL = 1.0  # seconds between polls of `events --follow` (conversations.DEFAULT_FOLLOW_INTERVAL)


# --- commands ------------------------------------------------------------------------------

def history(
    ctx: typer.Context,
    thread: str = typer.Option(..., "--thread", "-t", help="A conversation id, a Gmail thread id "
                               "of any account, or any Message-ID in the conversation."),
    events: bool = typer.Option(False, "--events", help="Interleave each message's journal steps."),
    full: bool = typer.Option(False, "--full", help="Show long payloads (and raw bytes in "
                              "--json events) in full."),
    as_json: bool = typer.Option(False, "--json", help="Print the documented JSON schema."),
) -> None:
    """Show one conversation: every message in order, its state, attempts and payload.

    Messages are listed once each even when several mailboxes hold a copy (the
    sender's sent copy and the recipient's received copy share a Message-ID).

    --json prints {"schema": "agentmail.history/1", "conversation": {...}, "messages": [...]}:
    conversation = id, subject, participants [str], message_count, first_at, last_at,
    last_activity (ISO 8601 or null), last_seq, pending, failed, rejected (bool);
    each message = message_id, time, from, to [str], subject, in_reply_to, references [str],
    state, attempts (int), last_error, payload (any JSON), copies [{key, account,
    provider_id, thread_id, direction "in"|"out", state, attempts}], and with --events
    events [{seq, at, account, run_id, message_key, kind, attempt, data}] (data.raw is
    replaced by raw_chars unless --full).
    """
    from agentmail.cli import journal_view as view
    from agentmail.journal import conversations as conv

    c = obj(ctx)
    journal = c.journal(create=False)
    cid = conv.resolve_one(journal, thread)
    summary = conv.summary(journal, cid)
    messages = conv.conversation_messages(journal, cid, with_events=events)
    if as_json:
        print_json({"schema": HISTORY_SCHEMA, "conversation": summary.to_json(), "messages": [
            view.message_json(m, with_events=events, full=full) for m in messages]})
        return
    flags = [name for name in ("pending", "failed", "rejected") if getattr(summary, name)]
    typer.secho(f"conversation {cid}  {summary.subject or '(no subject)'}", bold=True)
    typer.echo(f"{view.plural(len(messages), 'message')}  ·  participants: "
               f"{', '.join(summary.participants)}"
               + (f"  ·  {', '.join(flags)}" if flags else ""))
    typer.echo()
    for m in messages:
        view.print_message(m, with_events=events, full=full)


def threads(
    ctx: typer.Context,
    email: str | None = typer.Option(None, "--email", help="Only conversations with a message "
                                     "in this mailbox."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many conversations."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (schema agentmail.threads/1)."),
) -> None:
    """List conversations, newest activity first, flagging pending, failed and rejected messages.

    --json prints {"schema": "agentmail.threads/1", "conversations": [...]}, each entry with the
    keys of `history --json`'s "conversation" object.
    """
    from agentmail.cli import journal_view as view
    from agentmail.journal import conversations as conv

    if email is not None:
        email = check_address(email)
    found = conv.list_conversations(obj(ctx).journal(create=False), email=email, limit=limit)
    if as_json:
        print_json({"schema": THREADS_SCHEMA, "conversations": [s.to_json() for s in found]})
        return
    if not found:
        obj(ctx).say("no conversations yet")
        return
    typer.secho(f"{'ID':<13} {'LAST ACTIVITY':<23} {'MSGS':>4}  {'FLAGS':<24} SUBJECT  "
                "(PARTICIPANTS)", bold=True)
    for s in found:
        flags = ",".join(name for name in ("pending", "failed", "rejected") if getattr(s, name))
        typer.echo(f"{s.id:<13} {view.when(s.last_activity):<23} {s.message_count:>4}  "
                   f"{flags or '-':<24} {s.subject or '(no subject)'}  ({', '.join(s.participants)})")


def events(
    ctx: typer.Context,
    message: str | None = typer.Option(None, "--message", "-m", help="A message key "
                                       "(account:provider_id), provider id or Message-ID."),
    thread: str | None = typer.Option(None, "--thread", "-t", help="Any id `history` accepts."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until "
                                "interrupted (Ctrl-C)."),
    after: int = typer.Option(0, "--after", help="Only events with a seq greater than this."),
    interval: float = typer.Option(FOLLOW_INTERVAL, "--interval", min=0.0,
                                   help="Seconds between polls with --follow."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.0, help="Stop following "
                                         "after this many seconds (default: never)."),
    full: bool = typer.Option(False, "--full", help="Include raw message bytes in --json."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line: seq, at, "
                                 "account, run_id, message_key, kind, attempt, data."),
) -> None:
    """Print the raw journal, oldest first: all of it, one message's steps, or one conversation's.

    Events filed under a message are its steps; a reply's `sent` event is filed under
    the message that was answered and also shown with the sent copy. --json prints
    JSON lines (data.raw, the whole message base64-encoded, is replaced by raw_chars
    unless --full).
    """
    from agentmail.cli import journal_view as view
    from agentmail.journal import conversations as conv

    journal = obj(ctx).journal(create=False)
    scope = view.scope(journal, message, thread)

    def show(event: Any) -> None:
        if as_json:
            typer.echo(json.dumps(conv.event_json(event, full=full), sort_keys=True, default=str,
                                  ensure_ascii=False))
        else:
            typer.echo(view.event_line(event))
        if follow:
            sys.stdout.flush()

    if not follow:
        for event in conv.events_in(journal, scope(), after=after):
            show(event)
        return
    try:
        for event in conv.follow(journal, scope, after=after, interval=interval,
                                 stop=view.stop_after(timeout)):
            show(event)
    except KeyboardInterrupt:  # the documented way to stop --follow: not an interruption
        return


def register(app: typer.Typer) -> None:
    app.command()(history)
    app.command()(threads)
    app.command()(events)
