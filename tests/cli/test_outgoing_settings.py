"""Every way mail leaves an agent obeys the same settings: run replies, error replies,
replays and `agentmail send` all honour `allow_to` and the outgoing limits.

Each refusal is checked next to a control that goes through, so a path that sends nothing
at all cannot pass.
"""

from __future__ import annotations

import base64
import json
from contextlib import closing

import pytest

from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service
from agentmail.journal.store import Journal

from .helpers import run_cli

AGENT = "agent@allowed.example"
FRIEND = "friend@allowed.example"
STRANGER = "stranger@other.example"
STRICT = {"allow_to": ["@allowed.example"], "max_recipients": 2, "max_json_bytes": 200,
          "error_replies": True}
FANOUT = '''
from agentmail import Agent

class Fanout(Agent):
    def process_message(self, message):
        self.send_message(["a@allowed.example", "b@allowed.example", "c@allowed.example"],
                          "fan out", {"n": 3})
'''


@pytest.fixture
def emulator():  # one per test: the mailboxes start empty
    with Emulator() as emu:
        yield emu


@pytest.fixture
def lab(tmp_path, emulator, monkeypatch):
    """`cli(*args, strict=True)`: agentmail with the strict config (or an open one)."""
    monkeypatch.chdir(tmp_path)  # --handler fanout:Fanout is found in the current folder
    (tmp_path / "fanout.py").write_text(FANOUT)
    (tmp_path / "strict").mkdir()
    (tmp_path / "strict" / "agent_config.json").write_text(json.dumps(STRICT))
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "agent_config.json").write_text("{}")
    db = str(tmp_path / "j.db")

    def cli(*args: str, strict: bool = True):
        config = tmp_path / ("strict" if strict else "open") / "agent_config.json"
        command, *rest = args
        return run_cli("--config", str(config), "--db", db, command, "--emulator",
                       emulator.url, *rest)

    cli.db = db
    return cli


def _inbox(emulator: Emulator, address: str) -> list[dict]:
    with closing(build_service(emulator.url, address)) as svc:
        found = svc.users().messages().list(userId="me", labelIds=["INBOX"]).execute()
    return found.get("messages", [])


def _request(lab, sender: str, payload: str = "{}") -> None:
    sent = lab("send", "--from", sender, "--to", AGENT, "--payload", payload, strict=False)
    assert sent.exit_code == 0, sent.output


def _raw(emulator: Emulator, sender: str, body: str) -> None:
    raw = (f"From: {sender}\r\nTo: {AGENT}\r\nSubject: broken\r\n"
           f"Message-ID: <{sender.split('@')[0]}.broken@x>\r\n\r\n{body}\r\n").encode()
    with closing(build_service(emulator.url, sender)) as svc:
        svc.users().messages().send(userId="me", body={
            "raw": base64.urlsafe_b64encode(raw).decode()}).execute()


def _dead_letters(lab) -> list[str | None]:
    with Journal.open(lab.db) as j:
        return [r.last_error for r in j.failed_since(None, account=AGENT)]


def test_run_replies_and_replays_only_go_where_allow_to_says(lab, emulator):
    _request(lab, STRANGER)
    _request(lab, FRIEND)
    ran = lab("run", "--email", AGENT, "--once")
    assert ran.exit_code == 0, ran.output
    assert len(_inbox(emulator, FRIEND)) == 1  # the control: the reply path works
    assert _inbox(emulator, STRANGER) == []
    [error] = _dead_letters(lab)
    assert "allow_to" in error

    replayed = lab("replay", "--failed")  # the mailbox's own handler, same settings
    assert replayed.exit_code == 1, replayed.output
    assert _inbox(emulator, STRANGER) == [] and len(_dead_letters(lab)) == 1


def test_run_replies_obey_max_recipients(lab, emulator):
    _request(lab, FRIEND)
    ran = lab("run", "--email", AGENT, "--once", "--handler", "fanout:Fanout")
    assert ran.exit_code == 0, ran.output
    [error] = _dead_letters(lab)
    assert "max_recipients" in error
    assert _inbox(emulator, "a@allowed.example") == []
    opened = lab("replay", "--failed", "--handler", "fanout:Fanout", strict=False)
    assert opened.exit_code == 0, opened.output  # the control: without the limit it goes out
    assert len(_inbox(emulator, "a@allowed.example")) == 1


def test_error_replies_only_go_where_allow_to_says(lab, emulator):
    _raw(emulator, STRANGER, "{oops")
    _raw(emulator, FRIEND, "{oops")
    ran = lab("run", "--email", AGENT, "--once")
    assert ran.exit_code == 0, ran.output
    [answer] = _inbox(emulator, FRIEND)  # the control: an error reply to an allowed sender
    assert answer
    assert _inbox(emulator, STRANGER) == []


@pytest.mark.parametrize(("case", "to", "payload", "says"), [
    pytest.param("allowed", [FRIEND], "{}", None, id="control"),
    pytest.param("allow_to", [STRANGER], "{}", "allow_to",
                 id="allow_to"),
    pytest.param("max_recipients", ["a@allowed.example", "b@allowed.example",
                                    "c@allowed.example"], "{}", "max_recipients",
                 id="max_recipients"),
    pytest.param("max_json_bytes", [FRIEND], json.dumps({"x": "y" * 300}), "max_json_bytes",
                 id="max_json_bytes"),
])
def test_send_obeys_allow_to_and_the_limits(lab, emulator, case, to, payload, says):
    args = [a for address in to for a in ("--to", address)]
    result = lab("send", "--from", AGENT, *args, "--payload", payload)
    received = sum(len(_inbox(emulator, address)) for address in to)
    if says is None:
        assert result.exit_code == 0 and received == len(to), result.output
        return
    assert result.exit_code == 2, result.output
    assert says in result.output and "nothing was sent" in result.output
    assert received == 0
