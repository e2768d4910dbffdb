"""How run steps look on a terminal: one line per message step, one per cycle."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from agentmail.pipeline import CycleReport

STEP_COLORS = {"fetched": "cyan", "rejected": "yellow", "claimed": "blue", "processed": "green",
               "sent": "green", "acked": "bright_black", "released": "yellow",
               "dead_lettered": "red", "loop_guarded": "yellow"}


def _who(info: dict[str, Any]) -> str:
    m = info.get("message")
    if m is not None:
        subject = (m.subject or "")[:50]
        return f"{m.sender or '?'} → {m.account}  {subject!r}  [{m.provider_id}]"
    if "to" in info:
        return f"→ {', '.join(info['to'])}  {info.get('message_id', '')}"
    return info.get("key", "")


class StepPrinter:
    def __init__(self, address: str, *, verbose: int = 0, quiet: bool = False) -> None:
        self.address = address
        self.verbose = verbose
        self.quiet = quiet

    def step(self, kind: str, info: dict[str, Any]) -> None:
        if self.quiet or (kind in ("claimed", "acked") and not self.verbose):
            return
        extra = ""
        if kind == "rejected":
            extra = f"  reason={info['reason']}"
        elif kind in ("released", "dead_lettered"):
            extra = f"  {type(info['error']).__name__}: {info['error']}"
            if kind == "released":
                extra += f"  retry at {info['retry_at']:%H:%M:%S}"
        elif kind == "sent" and info.get("recovered"):
            extra = "  (found already sent)"
        elif kind == "processed":
            extra = f"  {info['outgoing']} outgoing"
        stamp = datetime.now().strftime("%H:%M:%S")
        label = kind.replace("_", "-")  # the journal's kind names, written as words
        typer.secho(f"{stamp} {label:<13} {_who(info)}{extra}", fg=STEP_COLORS.get(kind))

    def cycle(self, number: int, report: CycleReport) -> None:
        if self.quiet and not report.errors:
            return
        busy = report.fetched or report.processed or report.sent or report.acked or report.errors
        if not busy and not self.verbose:
            return
        parts = [f"{name.replace('_', '-')} {getattr(report, name)}" for name in (
            "fetched", "rejected", "processed", "sent", "acked", "failed", "dead_lettered")
            if getattr(report, name)]
        idle = "could not finish" if report.errors else "nothing new"
        line = f"cycle {number}: " + (", ".join(parts) or idle)
        if report.full_sync:
            line += " (full sync)"
        typer.secho(line, bold=True)
        for error in report.errors:
            typer.secho(f"  warning: {error}", fg="yellow", err=True)
