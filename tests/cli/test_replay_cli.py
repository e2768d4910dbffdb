"""`agentmail replay` runs the handler the mailbox runs, never a guess, and a replay that
fails again leaves the message dead-lettered."""

from __future__ import annotations

import base64
import json
from contextlib import closing

import pytest

from agentmail import errors
from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.services import replay as rp

from .helpers import run_cli

ALICE, BOB = "alice@example.com", "bob@example.com"
FLAKY = '''
import os
from agentmail import Agent

class Flaky(Agent):
    def process_message(self, message):
        if not os.path.exists("fixed"):
            raise RuntimeError("the model is down")
        self.reply_to_message(message, {"fixed": True})
'''


@pytest.fixture
def emulator():
    with Emulator() as emu:
        yield emu


@pytest.fixture
def cli(tmp_path, emulator, monkeypatch):
    monkeypatch.chdir(tmp_path)  # flaky.py is found in the current folder
    (tmp_path / "flaky.py").write_text(FLAKY)
    db = str(tmp_path / "j.db")

    def invoke(*args: str):
        command, *rest = args
        return run_cli("--db", db, command, "--emulator", emulator.url, *rest)

    invoke.db = db
    return invoke


def _replies_to_alice(emulator) -> list[dict]:
    with closing(build_service(emulator.url, ALICE)) as svc:
        found = svc.users().messages().list(userId="me", labelIds=["INBOX"]).execute()
        raws = [svc.users().messages().get(userId="me", id=m["id"], format="raw").execute()["raw"]
                for m in found.get("messages", [])]
    return [json.loads(base64.urlsafe_b64decode(raw).split(b"\r\n\r\n", 1)[1]) for raw in raws]


def test_replay_runs_the_mailboxs_handler_and_a_failed_replay_stays_dead(cli, emulator,
                                                                         tmp_path):
    assert cli("send", "--from", ALICE, "--to", BOB, "--payload", "{}").exit_code == 0
    ran = cli("run", "--email", BOB, "--once", "--handler", "flaky:Flaky", "--max-attempts", "1")
    assert ran.exit_code == 0, ran.output

    again = cli("replay", "--failed")  # no --handler: the one the run journaled
    assert again.exit_code == 1, again.output
    assert "handler flaky:Flaky (the handler of run" in again.output
    assert "the model is down" in again.output
    assert _replies_to_alice(emulator) == []  # no acknowledgement from a default agent
    listed = cli("replay", "--failed", "--dry-run", "--json")
    [item] = json.loads(listed.stdout)["items"]
    assert item["state"] == "dead_lettered" and "the model is down" in item["reason"]

    (tmp_path / "fixed").touch()
    fixed = cli("replay", "--failed")
    assert fixed.exit_code == 0, fixed.output
    assert _replies_to_alice(emulator) == [{"fixed": True}]
    with Journal.open(cli.db) as j:
        replayed = [e for e in j.events_since(0) if e.kind == ev.PROCESSED]
        # Taken before the replay's send, so recovery after a crash scans from there.
        assert replayed and all(e.data["history_point"] for e in replayed)
        started = [e for e in j.events_since(0) if e.kind == ev.RUN_STARTED]
        assert [e.data["handler"] for e in started] == ["flaky:Flaky"] * 3
        assert [bool(e.data.get("replay")) for e in started] == [False, True, True]


def test_nothing_matched_says_what_was_looked_at(cli):
    assert cli("send", "--from", ALICE, "--to", BOB, "--payload", "{}").exit_code == 0
    assert cli("run", "--email", BOB, "--once").exit_code == 0
    result = cli("replay", "--failed", "--email", BOB)
    assert result.exit_code == 0
    assert ("nothing matched: looked at dead-lettered messages and messages waiting to retry "
            f"of {BOB}") in result.output


def _journal_with_run(tmp_path, data=None) -> Journal:
    j = Journal.open(str(tmp_path / "r.db"))
    j.start_run(BOB, "run1", host="h", pid=1, is_alive=lambda r: False, data=data)
    return j


def test_the_handler_comes_from_the_flag_the_last_run_or_the_config(tmp_path):
    with _journal_with_run(tmp_path, {"handler": "mod:Journaled"}) as j:
        assert rp.resolve_handler(j, BOB, flag="mod:Flag", configured="mod:Config")[0] == \
            "mod:Flag"
        assert rp.resolve_handler(j, BOB, flag=None, configured="mod:Config")[0] == \
            "mod:Journaled"
        j.start_run(BOB, "run2", host="h", pid=1, is_alive=lambda r: False,
                    data={"handler": "mod:Other", "replay": True})
        assert rp.resolve_handler(j, BOB, flag=None, configured=None)[0] == "mod:Journaled"


def test_with_no_handler_known_replay_refuses_rather_than_guess(tmp_path):
    with _journal_with_run(tmp_path) as j:  # a run journaled before runs named their handler
        assert rp.resolve_handler(j, BOB, flag=None, configured="mod:Config")[0] == "mod:Config"
        with pytest.raises(errors.UsageError, match=r"no handler known.*--handler"):
            rp.resolve_handler(j, BOB, flag=None, configured=None)
    (tmp_path / "r.db").unlink()
    with _journal_with_run(tmp_path, {"handler": "__main__:Scripted"}) as j:
        with pytest.raises(errors.UsageError, match="defined in a script"):
            rp.resolve_handler(j, BOB, flag=None, configured=None)
