"""`agentmail mcp`: serve the mailboxes to an MCP host (stdio by default).

stdout belongs to the protocol: everything else (logs, errors) goes to stderr. The MCP SDK
is imported only here, inside the command, so the core install never needs it.
"""

from __future__ import annotations

import logging
import signal
from contextlib import ExitStack
from enum import Enum

import typer

from agentmail import errors
from agentmail.cli.context import check_address, obj

log = logging.getLogger(__name__)


class Transport(str, Enum):
    stdio = "stdio"
    streamable_http = "streamable-http"


def mcp(
    ctx: typer.Context,
    email: list[str] = typer.Option(
        [], "--email", "-e", help="A mailbox the MCP client acts for (repeatable; the first "
        "is the default). Without it the tools only read the journal."),
    transport: Transport = typer.Option(Transport.stdio, "--transport",
                                        help="stdio (for MCP hosts) or streamable-http."),
    read_only: bool = typer.Option(False, "--read-only",
                                   help="Leave out the tools that send (send, reply)."),
    require_approval: bool = typer.Option(
        False, "--require-approval", help="send and reply hold their mail until a person "
        "approves it (agentmail outbox, agentmail approve ID)."),
    host: str = typer.Option("127.0.0.1", help="streamable-http: interface to listen on."),
    port: int = typer.Option(8000, help="streamable-http: TCP port."),
    emulator: str | None = typer.Option(
        None, "--emulator", help="Gmail API emulator URL instead of Google ($AGENTMAIL_EMULATOR)."),
) -> None:
    r"""Serve agentmail's tools to an MCP host: send, inbox, reply, release, reject,
    conversations, conversation, wait_for_reply, status.

    Needs the mcp extra: pip install 'agentmail-cli\[mcp]'.
    """
    try:
        from agentmail.mcp.server import build_server
        from agentmail.services.approval import Watcher
        from agentmail.services.inbox import Inbox
    except ImportError as exc:
        raise errors.UsageError(f"agentmail mcp needs the MCP SDK ({exc}): "
                                "pip install 'agentmail-cli[mcp]'") from exc
    from agentmail.services.mailboxes import open_mailbox

    c = obj(ctx)
    email = [check_address(address) for address in email]
    settings = c.settings(emulator=emulator)
    journal = c.journal(settings)
    # SIGTERM stops like Ctrl-C, so claims still held go back to the queue on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ExitStack() as stack:
        mailboxes = [stack.enter_context(open_mailbox(settings, address)) for address in email]
        inbox = Inbox(journal, settings, mailboxes)
        stack.callback(inbox.close)
        app = build_server(inbox, settings, read_only=read_only,
                           require_approval=require_approval)
        if require_approval and not read_only:
            watcher = Watcher(inbox)
            watcher.start()
            stack.callback(watcher.stop)
        log.info("agentmail mcp: %s over %s%s%s", ", ".join(email) or "journal only",
                 transport.value, " (read-only)" if read_only else "",
                 " (sends need approval)" if require_approval else "")
        try:
            if transport is Transport.stdio:
                app.run("stdio")
            else:
                app.run("streamable-http", host=host, port=port)
        except KeyboardInterrupt:
            log.info("agentmail mcp: stopped")


def register(app: typer.Typer) -> None:
    app.command()(mcp)
