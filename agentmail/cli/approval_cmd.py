"""`agentmail outbox` and `agentmail approve`: a person decides on mail an MCP client asked
for under `agentmail mcp --require-approval`."""

from __future__ import annotations

import getpass
import json
import socket

import typer

from agentmail.cli.context import check_address, obj, print_json


def outbox(
    ctx: typer.Context,
    email: str | None = typer.Option(None, "--email", "-e", help="Only this mailbox."),
    show_all: bool = typer.Option(False, "--all", help="Also the ones decided and done."),
    as_json: bool = typer.Option(False, "--json", help="Print them as JSON, one per line."),
) -> None:
    """List outgoing mail waiting for approval (oldest first), with what it would send."""
    from agentmail.journal import approvals

    if email is not None:
        email = check_address(email)
    journal = obj(ctx).journal(create=False)
    found = approvals.listing(journal, states=None if show_all else [approvals.PENDING],
                              accounts=[email] if email else None)
    for item in found:
        if as_json:
            typer.echo(json.dumps(item.to_json(), sort_keys=True, ensure_ascii=False))
            continue
        r = item.request
        typer.secho(f"{item.id}  {item.state:<8}  {item.action} from {item.account} "
                    f"to {', '.join(r.get('to', []))}: {r.get('subject')!r}", bold=True)
        typer.echo(f"    {json.dumps(r.get('payload'), ensure_ascii=False)[:500]}")
        if item.state not in approvals.OPEN_STATES:
            typer.echo(f"    {item.state} by {item.decided_by or '?'}"
                       f"{': ' + item.note if item.note else ''}"
                       f"{'  ' + json.dumps(item.result) if item.result else ''}")
    if not found and not as_json:
        obj(ctx).say("nothing waits for approval" if not show_all else "no approvals yet")


def approve(
    ctx: typer.Context,
    approval_id: str = typer.Argument(..., help="The id `agentmail outbox` shows."),
    decline: bool = typer.Option(False, "--decline", help="Refuse it: nothing is sent (a "
                                 "reply's request goes back to the handler's queue)."),
    note: str | None = typer.Option(None, "--note", help="Why; journaled with the decision."),
    as_json: bool = typer.Option(False, "--json", help="Print the approval as JSON."),
) -> None:
    """Approve (or --decline) outgoing mail held for approval. The running `agentmail mcp`
    sends what is approved, exactly once."""
    from agentmail.services import approval

    journal = obj(ctx).journal(create=False)
    decided = approval.decide(journal, approval_id, approve=not decline,
                              by=f"{getpass.getuser()}@{socket.gethostname()}", note=note)
    if as_json:
        print_json(decided.to_json())
    else:
        typer.echo(f"{decided.id} {decided.state}; `agentmail mcp` carries it out")


def register(app: typer.Typer) -> None:
    app.command()(outbox)
    app.command()(approve)
