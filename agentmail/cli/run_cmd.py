"""`agentmail run` and `agentmail send`: the product's main job and how conversations start."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from agentmail.cli.context import obj, print_json
from agentmail.cli.output import StepPrinter
from agentmail.services import handlers, sending
from agentmail.services.mailboxes import open_mailbox
from agentmail.services.runner import Run, RunOptions


def run(
    ctx: typer.Context,
    email: str = typer.Option(..., "--email", "-e", help="The agent's mailbox address."),
    interval: float | None = typer.Option(
        None, "--interval", "-i", help="Seconds between polls (config: check_interval, 60)."),
    iterations: int | None = typer.Option(
        None, "--iterations", "-n", help="Stop after this many polls (default: run until stopped)."),
    once: bool = typer.Option(False, "--once", help="One poll, then stop (same as -n 1)."),
    handler: str | None = typer.Option(
        None, "--handler", help="Agent subclass to run, as package.module:Class "
        "(default: acknowledge each request once)."),
    emulator: str | None = typer.Option(
        None, "--emulator", help="Gmail API emulator URL instead of Google ($AGENTMAIL_EMULATOR)."),
    max_attempts: int | None = typer.Option(
        None, "--max-attempts", help="Handler attempts before dead-lettering (config, 5)."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", min=1, help="Handlers run in parallel for different "
        "conversations; one conversation's messages stay in order (config: concurrency, 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
) -> None:
    """Process a mailbox: fetch new mail, claim, run the handler, send replies once, ack.

    Every step is journaled first, so a crash loses nothing and repeats no reply.
    Ctrl-C or SIGTERM stops after the current step and prints a summary.
    """
    c = obj(ctx)
    settings = c.settings(check_interval=interval, handler=handler, emulator=emulator,
                          max_attempts=max_attempts, concurrency=concurrency)
    agent = handlers.load_agent(settings.handler, email)
    journal = c.journal(settings)
    printer = StepPrinter(email, verbose=c.verbose, quiet=c.quiet or as_json)
    stop = threading.Event()
    options = RunOptions(iterations=1 if once else iterations, interval=settings.check_interval,
                         stop=stop)
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open_mailbox(settings, email) as mailbox, Run(
                journal=journal, mailbox=mailbox, agent=agent, settings=settings,
                on_step=printer.step, on_cycle=printer.cycle) as active:
            c.say(f"run {active.run_id[:8]} on {email} "
                  f"({'emulator ' + settings.emulator if settings.emulator else 'Gmail'}), "
                  f"journal {settings.db_url}", dim=True) if not as_json else None
            if not as_json:
                c.say(f"recovery: {active.recovered.describe()}",
                      fg="yellow" if active.recovered.total else None)
            result = active.loop(options)
    finally:
        for sig, handler_fn in previous.items():
            signal.signal(sig, handler_fn)
    totals = result.totals
    if as_json:
        print_json({"run_id": result.run_id, "cycles": result.cycles, **totals.as_dict(),
                    "recovered": active.recovered.as_dict()})
    else:
        c.say(f"stopped after {result.cycles} cycle(s): {totals.fetched} fetched, "
              f"{totals.processed} processed, {totals.sent} sent, {totals.acked} acked, "
              f"{totals.failed} failed, {totals.dead_lettered} dead-lettered, "
              f"{totals.rejected} rejected", bold=True)


def send(
    ctx: typer.Context,
    sender: str = typer.Option(..., "--from", help="The sending agent's address."),
    to: list[str] = typer.Option(..., "--to", help="Recipient address (repeatable)."),
    payload: str | None = typer.Option(None, "--payload", help="The JSON request."),
    payload_file: Path | None = typer.Option(
        None, "--payload-file", help="Read the JSON request from this file ('-' for stdin)."),
    subject: str = typer.Option("agentmail request", "--subject", help="Subject line."),
    emulator: str | None = typer.Option(
        None, "--emulator", help="Gmail API emulator URL instead of Google ($AGENTMAIL_EMULATOR)."),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="Send at most once per key: the same key with the same "
        "request prints the original conversation and sends nothing; with another request it "
        "fails (exit 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Start a conversation: journal a JSON request, then send it. Prints the conversation id."""
    c = obj(ctx)
    if (payload is None) == (payload_file is None):
        raise typer.BadParameter("give exactly one of --payload or --payload-file")
    if payload_file is not None:
        text = typer.get_text_stream("stdin").read() if str(payload_file) == "-" else \
            payload_file.read_text(encoding="utf-8")
        data = sending.parse_payload(text, str(payload_file))
    else:
        data = sending.parse_payload(payload or "", "--payload")
    settings = c.settings(emulator=emulator)
    journal = c.journal(settings)
    with open_mailbox(settings, sender) as mailbox:
        result = sending.send_request(journal, mailbox, settings, to=to, subject=subject,
                                      payload=data, idempotency_key=idempotency_key)
    if as_json:
        print_json(result.__dict__)
    else:
        verb = "already sent" if result.duplicate else "sent"
        typer.echo(f"{verb} {result.message_id} to {', '.join(to)}")
        typer.echo(f"conversation {result.conversation_id}  "
                   f"(agentmail history --thread {result.conversation_id})")


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(send)
