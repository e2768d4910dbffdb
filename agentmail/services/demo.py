"""`agentmail demo`: two agents on an in-process Gmail emulator exchange a request and a reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentmail.agent import Agent
from agentmail.config import Settings
from agentmail.emulator import Emulator
from agentmail.journal.store import Journal
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
from agentmail.services.runner import Run
from agentmail.services.sending import send_request

ALICE = "alice@agents.example"
BOB = "bob@agents.example"
MAX_CYCLES = 10


@dataclass
class DemoResult:
    conversation_id: str
    messages: list
    journal_path: Path
    emulator_path: Path
    cycles: int


def run_demo(folder: Path, *, say: Callable[[str], None] = print,
             on_step: Callable | None = None) -> DemoResult:
    folder.mkdir(parents=True, exist_ok=True)
    journal_path, emulator_path = folder / "agentmail.db", folder / "emulator.db"
    with Emulator(db_path=str(emulator_path)) as emu, Journal.open(str(journal_path)) as journal:
        settings = Settings(config_path=folder / "agent_config.json", emulator=emu.url,
                            db=str(journal_path), check_interval=0)
        say(f"emulator: {emu.url}   journal: {journal_path}")
        mailboxes = {a: GmailMailbox(a, emulator_credentials(a), api_endpoint=emu.url)
                     for a in (ALICE, BOB)}
        try:
            sent = send_request(journal, mailboxes[ALICE], settings, to=[BOB],
                                subject="Demo request",
                                payload={"task": "say hello", "exchanges": []})
            say(f"{ALICE} → {BOB}: request {sent.message_id}")
            runs = [Run(journal=journal, mailbox=mailboxes[a], agent=Agent(a), settings=settings,
                        on_step=on_step) for a in (BOB, ALICE)]
            cycles = 0
            for run in runs:
                run.__enter__()
            try:
                # Bob answers the request; Alice receives the auto-reply and stays quiet.
                while cycles < MAX_CYCLES:
                    cycles += 1
                    for run in runs:
                        run.cycle()
                    if _exchange_done(journal, sent.conversation_id):
                        break
            finally:
                for run in runs:
                    run.__exit__(None, None, None)
        finally:
            for mailbox in mailboxes.values():
                mailbox.close()
        return DemoResult(sent.conversation_id, journal.conversation_messages(
            sent.conversation_id), journal_path, emulator_path, cycles)


def _exchange_done(journal: Journal, conversation_id: str) -> bool:
    rows = journal.conversation_messages(conversation_id)
    inbound = [r for r in rows if r.direction == "in"]
    return len(inbound) >= 2 and all(r.state == "acked" for r in inbound)
