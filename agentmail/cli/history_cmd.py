"""`agentmail history`, `threads`, `events`: reading conversations and the raw journal."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import typer

from agentmail import errors
from agentmail.cli.context import obj, print_json
from agentmail.journal import conversations as conv
from agentmail.journal import events as ev
from agentmail.journal.store import Journal

HISTORY_SCHEMA = "agentmail.history/1"
THREADS_SCHEMA = "agentmail.threads/1"
PAYLOAD_PREVIEW_LINES = 20  # lines of pretty-printed payload shown without --full
PAYLOAD_PREVIEW_CHARS = 2000  # characters of pretty-printed payload shown without --full
STATE_COLORS = {"acked": "green", "sent": "green", "pending": "yellow", "claimed": "blue",
                "processed": "blue", "queued": "yellow", "rejected": "yellow",
                "dead_lettered": "red"}


# --- text rendering ------------------------------------------------------------------------

def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe(event: ev.Event) -> str:
    """The few words that say what one journal step did."""
    d = event.data
    detail = {
        ev.FETCHED: lambda: f"{d.get('sender')} → {', '.join(d.get('recipients', []))}",
        ev.REJECTED: lambda: f"reason={d.get('reason')}",
        ev.CLAIMED: lambda: f"attempt {event.attempt}, lease until {d.get('lease_until')}",
        ev.PROCESSED: lambda: f"{_plural(len(d.get('outgoing', [])), 'outgoing message')}",
        ev.FAILED: lambda: (f"{d.get('stage', 'handler')}: {d.get('error_class')}: {d.get('error')}"
                            f"{' (retryable)' if d.get('retryable') else ''}"),
        ev.RELEASED: lambda: f"retry at {d.get('next_attempt_at')}",
        ev.SENT: lambda: (f"{d.get('message_id')} → {', '.join(d.get('recipients', []))}"
                          f"{' (found already sent)' if d.get('recovered') else ''}"),
        ev.DEAD_LETTERED: lambda: f"reason={d.get('reason')}",
        ev.LOOP_GUARDED: lambda: f"reason={d.get('reason')}",
        ev.DELIVERY_FAILED: lambda: _bounce_line(d),
    }.get(event.kind)
    return detail() if detail else ""


def _bounce_line(d: dict[str, Any]) -> str:
    diagnostic = d.get("diagnostic") or {}
    why = diagnostic.get("diagnostic_code") or diagnostic.get("status") or "no diagnostic"
    return f"{d.get('message_id')} bounced ({d.get('bounce_key')}): {why}"


def _event_line(event: ev.Event, *, indent: str = "") -> str:
    at = event.at.strftime("%Y-%m-%d %H:%M:%S") if event.at else "-"
    return f"{indent}#{event.seq:<6} {at}  {event.kind:<14} {event.message_key or event.account}  " \
           f"{describe(event)}".rstrip()


def _payload_lines(payload: Any, *, full: bool) -> list[str]:
    text = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    lines = text.splitlines()
    if full or (len(lines) <= PAYLOAD_PREVIEW_LINES and len(text) <= PAYLOAD_PREVIEW_CHARS):
        return lines
    shown: list[str] = []
    size = 0
    for line in lines[:PAYLOAD_PREVIEW_LINES]:
        size += len(line) + 1
        if size > PAYLOAD_PREVIEW_CHARS:
            break
        shown.append(line)
    return [*shown, f"… {len(lines) - len(shown)} more lines (--full shows all)"]


def _state_line(m: conv.ConversationMessage) -> str:
    text = f"{m.state}, {_plural(m.attempts, 'attempt')}"
    if m.last_error and m.state != "acked":
        text += f" — {m.last_error}"
    return text


def _print_message(m: conv.ConversationMessage, *, with_events: bool, full: bool) -> None:
    typer.secho(f"── {_when(m.time)}  {m.sender or '?'} → {', '.join(m.recipients) or '?'}",
                bold=True)
    typer.secho(f"   {_state_line(m)}", fg=STATE_COLORS.get(m.state))
    typer.echo(f"   subject: {m.subject or '(none)'}")
    typer.echo(f"   message-id: {m.message_id or '-'}")
    copies = ", ".join(f"{c.key or c.account + ' outbox'} ({c.direction}, {c.state})"
                       for c in m.copies)
    typer.echo(f"   copies: {copies}")
    if m.payload is None:
        typer.echo("   payload: (none)")
    else:
        typer.echo("   payload:")
        for line in _payload_lines(m.payload, full=full):
            typer.echo(f"     {line}")
    if with_events:
        typer.echo("   steps:")
        for event in m.events:
            typer.echo(_event_line(event, indent="     "))
    typer.echo()


def _message_json(m: conv.ConversationMessage, *, with_events: bool,
                  full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "message_id": m.message_id, "time": m.time.isoformat() if m.time else None,
        "from": m.sender, "to": m.recipients, "subject": m.subject,
        "in_reply_to": m.in_reply_to, "references": m.references, "state": m.state,
        "attempts": m.attempts, "last_error": m.last_error, "payload": m.payload,
        "copies": [c.to_json() for c in m.copies],
    }
    if with_events:
        out["events"] = [conv.event_json(e, full=full) for e in m.events]
    return out


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
    c = obj(ctx)
    journal = c.journal()
    cid = conv.resolve_one(journal, thread)
    summary = conv.summary(journal, cid)
    messages = conv.conversation_messages(journal, cid, with_events=events)
    if as_json:
        print_json({"schema": HISTORY_SCHEMA, "conversation": summary.to_json(), "messages": [
            _message_json(m, with_events=events, full=full) for m in messages]})
        return
    flags = [name for name in ("pending", "failed", "rejected") if getattr(summary, name)]
    typer.secho(f"conversation {cid}  {summary.subject or '(no subject)'}", bold=True)
    typer.echo(f"{_plural(len(messages), 'message')}  ·  participants: "
               f"{', '.join(summary.participants)}"
               + (f"  ·  {', '.join(flags)}" if flags else ""))
    typer.echo()
    for m in messages:
        _print_message(m, with_events=events, full=full)


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
    found = conv.list_conversations(obj(ctx).journal(), email=email, limit=limit)
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
        typer.echo(f"{s.id:<13} {_when(s.last_activity):<23} {s.message_count:>4}  {flags or '-':<24} "
                   f"{s.subject or '(no subject)'}  ({', '.join(s.participants)})")


def _stop_after(timeout: float | None) -> Callable[[], bool]:
    if timeout is None:
        return lambda: False
    deadline = time.monotonic() + timeout
    return lambda: time.monotonic() >= deadline


def _scope(journal: Journal, message: str | None, thread: str | None
           ) -> Callable[[], conv.EventScope]:
    if message is not None and thread is not None:
        raise errors.UsageError("pass --message or --thread, not both")
    if message is not None:
        scope = conv.message_scope(journal, message)
        return lambda: scope
    if thread is not None:
        cid = conv.resolve_one(journal, thread)
        anchor = next(iter(conv.conversation_scope(journal, cid).keys or ()), None)

        def current() -> conv.EventScope:
            # A merge can absorb the conversation; one of its messages still leads to it.
            return conv.conversation_scope(journal, conv.resolve_one(journal, anchor or cid))
        return current
    return lambda: conv.EVERYTHING


def events(
    ctx: typer.Context,
    message: str | None = typer.Option(None, "--message", "-m", help="A message key "
                                       "(account:provider_id), provider id or Message-ID."),
    thread: str | None = typer.Option(None, "--thread", "-t", help="Any id `history` accepts."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until "
                                "interrupted (Ctrl-C)."),
    after: int = typer.Option(0, "--after", help="Only events with a seq greater than this."),
    interval: float = typer.Option(conv.DEFAULT_FOLLOW_INTERVAL, "--interval", min=0.0,
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
    journal = obj(ctx).journal()
    scope = _scope(journal, message, thread)

    def show(event: ev.Event) -> None:
        if as_json:
            typer.echo(json.dumps(conv.event_json(event, full=full), sort_keys=True, default=str,
                                  ensure_ascii=False))
        else:
            typer.echo(_event_line(event))
        if follow:
            sys.stdout.flush()

    if not follow:
        for event in conv.events_in(journal, scope(), after=after):
            show(event)
        return
    try:
        for event in conv.follow(journal, scope, after=after, interval=interval,
                                 stop=_stop_after(timeout)):
            show(event)
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    app.command()(history)
    app.command()(threads)
    app.command()(events)
