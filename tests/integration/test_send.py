"""`agentmail send` journals first: idempotency keys, settings honoured, a crash mid-send.

Real `agentmail send` processes against the emulator; the crash is the `crash_at` hook's
SIGKILL after the mail went out and before the journal recorded it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service
from agentmail.journal.store import Journal
from agentmail.journal.verify import verify

REPO = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice@agents.example", "bob@agents.example"


@pytest.fixture
def emulator():
    with Emulator() as emu:
        yield emu


def _send(tmp_path: Path, emu: Emulator, *args: str, **env: str) -> subprocess.CompletedProcess:
    config = tmp_path / "agent_config.json"
    if not config.exists():
        config.write_text(json.dumps({"allow_to": ["@agents.example"]}))
    environ = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AGENTMAIL")}
    return subprocess.run(
        [sys.executable, "-m", "agentmail", "--config", str(config), "--db",
         str(tmp_path / "journal.db"), "send", "--from", ALICE, "--emulator", emu.url, *args],
        cwd=REPO, env={**environ, **env}, capture_output=True, text=True, timeout=60)


def _inbox(emu: Emulator, address: str) -> list[str]:
    with closing(build_service(emu.url, address)) as svc:
        page = svc.users().messages().list(userId="me", labelIds=["INBOX"]).execute()
    return [m["id"] for m in page.get("messages", [])]


def test_the_same_key_twice_sends_once_and_other_content_is_refused(tmp_path, emulator):
    first = _send(tmp_path, emulator, "--to", BOB, "--payload", '{"q": 1}',
                  "--idempotency-key", "order-17", "--json")
    assert first.returncode == 0, first.stderr
    again = _send(tmp_path, emulator, "--to", BOB, "--payload", '{"q": 1}',
                  "--idempotency-key", "order-17", "--json")
    assert again.returncode == 0, again.stderr
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert (b["conversation_id"], b["message_id"]) == (a["conversation_id"], a["message_id"])
    assert b["duplicate"] is True and a["duplicate"] is False
    assert len(_inbox(emulator, BOB)) == 1
    other = _send(tmp_path, emulator, "--to", BOB, "--payload", '{"q": 2}',
                  "--idempotency-key", "order-17")
    assert other.returncode == 1
    assert "different request" in other.stderr + other.stdout
    assert "Traceback" not in other.stderr
    assert len(_inbox(emulator, BOB)) == 1


def test_send_honours_allow_to(tmp_path, emulator):
    refused = _send(tmp_path, emulator, "--to", "mallory@elsewhere.example", "--payload", "{}")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "allow_to" in refused.stderr + refused.stdout
    assert _inbox(emulator, "mallory@elsewhere.example") == []


@pytest.mark.parametrize("finisher", ["same-send-again", "agentmail-run"])
def test_a_send_killed_after_the_mail_went_out_is_finished_without_a_second_copy(
        tmp_path, emulator, finisher):
    args = ("--to", BOB, "--payload", '{"q": "once"}', "--idempotency-key", "k1")
    killed = _send(tmp_path, emulator, *args, AGENTMAIL_CRASH_AT="before_sent_journaled")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert len(_inbox(emulator, BOB)) == 1  # it did go out
    with Journal.open(str(tmp_path / "journal.db")) as journal:
        [queued] = [o for o in journal.queued_requests(ALICE)]
    if finisher == "same-send-again":
        done = _send(tmp_path, emulator, *args)
    else:
        done = subprocess.run(
            [sys.executable, "-m", "agentmail", "--config", str(tmp_path / "agent_config.json"),
             "--db", str(tmp_path / "journal.db"), "run", "--email", ALICE, "--emulator",
             emulator.url, "--once"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(_inbox(emulator, BOB)) == 1  # found in SENT, not sent again
    with Journal.open(str(tmp_path / "journal.db")) as journal:
        assert journal.queued_requests(ALICE) == []
        [sent] = journal.outbox_of(queued)
        assert sent.state == "sent"
        events = [e for e in journal.events_of_message(queued) if e.kind == "sent"]
        assert [e.data["recovered"] for e in events] == [True]
        assert verify(journal).ok
