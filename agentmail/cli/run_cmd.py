"""`agentmail run` and `agentmail send`: the product's main job and how conversations start."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from agentmail import errors
from agentmail.cli.context import check_address, obj, print_json

if TYPE_CHECKING:
    from agentmail.services.runner import RunOptions

EXIT_INTERRUPTED = 130
STOPPING = "stopping after the current message (Ctrl-C again to abandon it)"
ABANDONING = "abandoning the message under way (Ctrl-C once more to quit at once)"
# These log what the step printer already shows as a cycle's "warning:" line.
CYCLE_LOGGERS = ("agentmail.pipeline", "agentmail.services.runner")


class Interrupts:
    """Ctrl-C / SIGTERM during a run: the first stops after the current message, the second
    abandons the handler under way (the run releases its claim through the journal), a third
    quits at once (the next run recovers what was in flight, as after a crash)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            typer.secho(STOPPING, err=True, fg="yellow")
            self.options.stop.set()
        elif self.count == 2:
            typer.secho(ABANDONING, err=True, fg="yellow")
            self.options.abandon.set()
        else:  # at once: no cleanup that could hang; the next run recovers as after a crash
            typer.secho("quitting at once; the next run recovers the message", err=True,
                        fg="yellow")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    @property
    def abandoned(self) -> bool:
        return self.options.abandon.is_set()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run(
    ctx: typer.Context,
    email: str = typer.Option(..., "--email", "-e", metavar="ADDRESS",
                              help="The agent's mailbox address."),
    interval: float | None = typer.Option(
        None, "--interval", "-i", metavar="SECONDS",
        help="Seconds between polls (config: check_interval, 60)."),
    iterations: int | None = typer.Option(
        None, "--iterations", "-n", metavar="N", min=1,
        help="Stop after this many polls (default: run until stopped)."),
    once: bool = typer.Option(False, "--once", help="One poll, then stop (same as -n 1)."),
    handler: str | None = typer.Option(
        None, "--handler", metavar="MODULE:CLASS", help="Agent subclass to run, as "
        "package.module:Class; the current folder and the config's folder are importable "
        "(config: handler; default: acknowledge each request once)."),
    emulator: str | None = typer.Option(
        None, "--emulator", metavar="URL",
        help="Gmail API emulator URL instead of Google ($AGENTMAIL_EMULATOR)."),
    max_attempts: int | None = typer.Option(
        None, "--max-attempts", metavar="N",
        help="Handler attempts before dead-lettering (config: max_attempts, 5)."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", metavar="N", help="Handlers run in parallel for different "
        "conversations; one conversation's messages stay in order (config: concurrency, 1)."),
    handler_timeout: float | None = typer.Option(
        None, "--handler-timeout", metavar="SECONDS", help="Fail a handler call that runs "
        "longer, like any failure (config: handler_timeout; 0, the default, is no limit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
) -> None:
    """Process a mailbox: fetch new mail, claim, run the handler, send replies once, ack.

    Every step is journaled first, so a crash loses nothing and repeats no reply.
    Ctrl-C or SIGTERM stops after the current message and prints a summary (exit 0);
    a second Ctrl-C abandons the handler under way, releasing its message (exit 130).
    """
    from agentmail.cli.output import StepPrinter
    from agentmail.services import handlers
    from agentmail.services.mailboxes import open_mailbox
    from agentmail.services.runner import Run, RunOptions

    c = obj(ctx)
    email = check_address(email)
    settings = c.settings(check_interval=interval, handler=handler, emulator=emulator,
                          max_attempts=max_attempts, concurrency=concurrency,
                          handler_timeout=handler_timeout)
    agent = handlers.load_agent(settings.handler, email, folders=[settings.config_path.parent])
    journal = c.journal(settings)
    printer = StepPrinter(email, verbose=c.verbose, quiet=c.quiet or as_json)
    options = RunOptions(iterations=1 if once else iterations, interval=settings.check_interval)
    interrupts = Interrupts(options)
    full_syncs = 0

    def on_cycle(number: int, report: Any) -> None:
        nonlocal full_syncs
        full_syncs += bool(report.full_sync)
        printer.cycle(number, report)

    quieted = [] if as_json or c.verbose else [logging.getLogger(n) for n in CYCLE_LOGGERS]
    levels = [(log, log.level) for log in quieted]
    for log in quieted:
        log.setLevel(logging.ERROR)
    previous = {sig: signal.signal(sig, interrupts) for sig in (signal.SIGINT, signal.SIGTERM)}
    active = None
    try:
        with open_mailbox(settings, email) as mailbox, Run(
                journal=journal, mailbox=mailbox, agent=agent, settings=settings,
                on_step=printer.step, on_cycle=on_cycle) as active:
            if not as_json:
                c.say(f"run {active.run_id[:8]} on {email} "
                      f"({'emulator ' + settings.emulator if settings.emulator else 'Gmail'}), "
                      f"journal {settings.db_url}", dim=True)
                c.say(f"recovery: {active.recovered.describe()}",
                      fg="yellow" if active.recovered.total else None)
            try:
                active.loop(options)
            except errors.AgentmailError:
                if not interrupts.abandoned:  # else: the run gave up the handler, as asked
                    raise
    finally:
        # After an abandon the command exits 130 right away; a late Ctrl-C must still quit
        # with 130, not as an unhandled KeyboardInterrupt during interpreter shutdown.
        for sig, handler_fn in previous.items():
            if not interrupts.abandoned:
                signal.signal(sig, handler_fn)
        for log, level in levels:
            log.setLevel(level)
    assert active is not None  # the with block ran, or raised past this point
    totals = active.totals
    if as_json:
        print_json({"run_id": active.run_id, "cycles": active.cycles, **totals.as_dict(),
                    "full_sync": full_syncs > 0, "full_syncs": full_syncs,
                    "interrupted": interrupts.abandoned,
                    "recovered": active.recovered.as_dict()})
    else:  # the summary prints under --quiet too: it is what -q keeps
        typer.secho(f"{'abandoned' if interrupts.abandoned else 'stopped'} after "
                    f"{_plural(active.cycles, 'cycle')}: {totals.fetched} fetched, "
                    f"{totals.processed} processed, {totals.sent} sent, {totals.acked} acked, "
                    f"{totals.failed} failed, {totals.dead_lettered} dead-lettered, "
                    f"{totals.rejected} rejected", bold=True)
    if interrupts.abandoned:
        # Everything is journaled and the run is closed. Leave without interpreter shutdown:
        # it restores the default SIGINT action, so a Ctrl-C landing during it would kill
        # the process with a signal instead of exit 130.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


def _read_payload(payload: str | None, payload_file: Path | None) -> Any:
    from agentmail.services import sending

    if (payload is None) == (payload_file is None):
        raise errors.UsageError("give exactly one of --payload JSON or --payload-file FILE")
    if payload_file is None:
        return sending.parse_payload(payload or "", "--payload")
    if str(payload_file) == "-":
        return sending.parse_payload(typer.get_text_stream("stdin").read(), "stdin")
    try:
        text = payload_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.UsageError(f"--payload-file {payload_file}: no such file; nothing was sent"
                                ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.UsageError(f"--payload-file {payload_file}: cannot read it ({exc}); "
                                "nothing was sent") from exc
    return sending.parse_payload(text, str(payload_file))


def send(
    ctx: typer.Context,
    sender: str = typer.Option(..., "--from", metavar="ADDRESS",
                               help="The sending agent's address."),
    to: list[str] = typer.Option(..., "--to", metavar="ADDRESS",
                                 help="Recipient address (repeatable)."),
    payload: str | None = typer.Option(None, "--payload", metavar="JSON",
                                       help="The JSON request."),
    payload_file: Path | None = typer.Option(
        None, "--payload-file", metavar="FILE",
        help="Read the JSON request from this file ('-' for stdin)."),
    subject: str = typer.Option("agentmail request", "--subject", help="Subject line."),
    emulator: str | None = typer.Option(
        None, "--emulator", metavar="URL",
        help="Gmail API emulator URL instead of Google ($AGENTMAIL_EMULATOR)."),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", metavar="KEY",
        help="Send at most once per key: the same key with the same request prints the "
        "original conversation and sends nothing; with another request it fails (exit 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Start a conversation: journal a JSON request, then send it. Prints the conversation id.

    Journaled first, so a send cut short (a crash, a lost connection) is finished by the
    next `agentmail send` with the same --idempotency-key or by `agentmail run` of the
    mailbox, never sent twice.

    The request obeys the same settings as a run's replies: allow_to, max_recipients and
    the JSON limits. Invalid input (JSON, addresses, a recipient the settings forbid)
    exits 2 with nothing sent.
    """
    from agentmail.services import sending
    from agentmail.services.mailboxes import open_mailbox

    c = obj(ctx)
    sender = check_address(sender, "--from")
    to = [check_address(address, "--to") for address in to]
    data = _read_payload(payload, payload_file)
    settings = c.settings(emulator=emulator)
    journal = c.journal(settings)
    try:
        with open_mailbox(settings, sender) as mailbox:
            result = sending.send_request(journal, mailbox, settings, to=to, subject=subject,
                                          payload=data, idempotency_key=idempotency_key)
    except errors.OutgoingRejected as exc:  # like bad JSON: the input is wrong, fix and rerun
        raise errors.UsageError(f"{exc}; nothing was sent") from exc
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
