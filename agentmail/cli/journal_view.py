"""How `history`, `threads` and `events` show the journal: text blocks, lines and JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import typer

from agentmail import errors
from agentmail.journal import conversations as conv
from agentmail.journal import events as ev
from agentmail.journal.store import Journal

PAYLOAD_PREVIEW_LINES = 20  # lines of pretty-printed payload shown without --full
PAYLOAD_PREVIEW_CHARS = 2000  # characters of pretty-printed payload shown without --full
STATE_COLORS = {"acked": "green", "sent": "green", "pending": "yellow", "claimed": "blue",
                "processed": "blue", "queued": "yellow", "rejected": "yellow",
                "dead_lettered": "red"}


# --- text rendering ------------------------------------------------------------------------

def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe(event: ev.Event) -> str:
    """The few words that say what one journal step did."""
    d = event.data
    detail = {
        ev.FETCHED: lambda: f"{d.get('sender')} → {', '.join(d.get('recipients', []))}",
        ev.REJECTED: lambda: f"reason={d.get('reason')}",
        ev.CLAIMED: lambda: f"attempt {event.attempt}, lease until {d.get('lease_until')}",
        ev.PROCESSED: lambda: f"{plural(len(d.get('outgoing', [])), 'outgoing message')}",
        ev.FAILED: lambda: (f"{d.get('stage', 'handler')}: {d.get('error_class')}: {d.get('error')}"
                            f"{' (retryable)' if d.get('retryable') else ''}"),
        ev.RELEASED: lambda: f"retry at {d.get('next_attempt_at')}",
        ev.SENT: lambda: (f"{d.get('message_id')} → {', '.join(d.get('recipients', []))}"
                          f"{' (found already sent)' if d.get('recovered') else ''}"),
        ev.DEAD_LETTERED: lambda: f"reason={d.get('reason')}",
        ev.LOOP_GUARDED: lambda: f"reason={d.get('reason')}",
        ev.DELIVERY_FAILED: lambda: bounce_line(d),
    }.get(event.kind)
    return detail() if detail else ""


def bounce_line(d: dict[str, Any]) -> str:
    diagnostic = d.get("diagnostic") or {}
    why = diagnostic.get("diagnostic_code") or diagnostic.get("status") or "no diagnostic"
    return f"{d.get('message_id')} bounced ({d.get('bounce_key')}): {why}"


def event_line(event: ev.Event, *, indent: str = "") -> str:
    at = event.at.strftime("%Y-%m-%d %H:%M:%S") if event.at else "-"
    return f"{indent}#{event.seq:<6} {at}  {event.kind:<14} {event.message_key or event.account}  " \
           f"{describe(event)}".rstrip()


def payload_lines(payload: Any, *, full: bool) -> list[str]:
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


def state_line(m: conv.ConversationMessage) -> str:
    text = f"{m.state}, {plural(m.attempts, 'attempt')}"
    if m.last_error and m.state != "acked":
        text += f" — {m.last_error}"
    return text


def print_message(m: conv.ConversationMessage, *, with_events: bool, full: bool) -> None:
    typer.secho(f"── {when(m.time)}  {m.sender or '?'} → {', '.join(m.recipients) or '?'}",
                bold=True)
    typer.secho(f"   {state_line(m)}", fg=STATE_COLORS.get(m.state))
    typer.echo(f"   subject: {m.subject or '(none)'}")
    typer.echo(f"   message-id: {m.message_id or '-'}")
    copies = ", ".join(f"{c.key or c.account + ' outbox'} ({c.direction}, {c.state})"
                       for c in m.copies)
    typer.echo(f"   copies: {copies}")
    if m.payload is None:
        typer.echo("   payload: (none)")
    else:
        typer.echo("   payload:")
        for line in payload_lines(m.payload, full=full):
            typer.echo(f"     {line}")
    if with_events:
        typer.echo("   steps:")
        for event in m.events:
            typer.echo(event_line(event, indent="     "))
    typer.echo()


def message_json(m: conv.ConversationMessage, *, with_events: bool,
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


# --- events: what to show, and for how long ------------------------------------------

def stop_after(timeout: float | None) -> Callable[[], bool]:
    if timeout is None:
        return lambda: False
    deadline = time.monotonic() + timeout
    return lambda: time.monotonic() >= deadline


def scope(journal: Journal, message: str | None, thread: str | None
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
