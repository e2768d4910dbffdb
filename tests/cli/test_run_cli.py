"""`agentmail run`, `send` and `demo` as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from agentmail.emulator import Emulator
from agentmail.journal import events as ev
from agentmail.journal.store import Journal

from .helpers import run_cli

ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture
def emulator():
    with Emulator() as emu:
        yield emu


def test_send_then_run_once_answers_the_request(tmp_path, emulator):
    db = str(tmp_path / "j.db")
    sent = run_cli("--db", db, "send", "--from", ALICE, "--to", BOB, "--payload", '{"q": 1}',
                   "--subject", "hello", "--emulator", emulator.url, "--json")
    assert sent.exit_code == 0, sent.output
    info = json.loads(sent.stdout)
    assert info["conversation_id"].startswith("c") and info["message_id"].startswith("<")
    ran = run_cli("--db", db, "run", "--email", BOB, "--once", "--emulator", emulator.url)
    assert ran.exit_code == 0, ran.output
    assert "fetched" in ran.output and "processed" in ran.output and "sent" in ran.output
    assert "stopped after 1 cycle(s): 1 fetched, 1 processed, 1 sent, 1 acked" in ran.output
    history = run_cli("--db", db, "history", "--thread", info["message_id"], "--json")
    assert len(json.loads(history.stdout)["messages"]) == 2


def test_send_refuses_invalid_json_and_sends_nothing(tmp_path, emulator):
    db = str(tmp_path / "j.db")
    result = run_cli("--db", db, "send", "--from", ALICE, "--to", BOB, "--payload", "{oops",
                     "--emulator", emulator.url)
    assert result.exit_code == 2
    assert "not valid JSON" in result.output and "nothing was sent" in result.output
    assert emulator.stats()["accounts"].get(ALICE, {}).get("calls", {}).get(
        "gmail.users.messages.send", 0) == 0


def test_send_reads_the_payload_from_a_file(tmp_path, emulator):
    payload = tmp_path / "request.json"
    payload.write_text('{"task": "summarise", "doc": 7}')
    result = run_cli("--db", str(tmp_path / "j.db"), "send", "--from", ALICE, "--to", BOB,
                     "--payload-file", str(payload), "--emulator", emulator.url)
    assert result.exit_code == 0 and "conversation c" in result.output


def test_run_needs_an_email(tmp_path):
    result = run_cli("--db", str(tmp_path / "j.db"), "run")
    assert result.exit_code == 2 and "--email" in result.output


def test_sigterm_stops_the_run_cleanly_with_a_summary(tmp_path, emulator):
    db = tmp_path / "j.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentmail", "--db", str(db), "run", "--email", BOB,
         "--emulator", emulator.url, "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until the run has registered itself
        if db.exists():
            with Journal.open(str(db)) as j:
                if j.live_run(BOB) is not None:
                    break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopped after" in out
    with Journal.open(str(db)) as j:
        assert j.live_run(BOB) is None
        assert j.events_since(0)[-1].kind == ev.RUN_STOPPED


def test_demo_completes_and_says_where_its_files_are(tmp_path):
    result = run_cli("demo", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "conversation c" in result.output
    assert str(tmp_path / "demo" / "agentmail.db") in result.output
    cid = result.output.split("conversation ", 1)[1].split()[0]
    with Journal.open(str(tmp_path / "demo" / "agentmail.db")) as j:
        rows = j.conversation_messages(cid)
    # one request and one reply, each a sent copy and a received copy, both received ones acked
    assert sorted((r.direction, r.state) for r in rows) == [
        ("in", "acked"), ("in", "acked"), ("out", "sent"), ("out", "sent")]


def test_a_second_run_of_a_live_mailbox_exits_2_with_a_clear_message(tmp_path, emulator):
    db = tmp_path / "j.db"
    first = subprocess.Popen(
        [sys.executable, "-m", "agentmail", "--db", str(db), "run", "--email", BOB,
         "--emulator", emulator.url, "--interval", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if db.exists():
                with Journal.open(str(db)) as j:
                    if j.live_run(BOB) is not None:
                        break
            time.sleep(0.1)
        second = run_cli("--db", str(db), "run", "--email", BOB, "--once",
                         "--emulator", emulator.url)
        assert second.exit_code == 2
        assert "already being processed" in second.output and str(first.pid) in second.output
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=20)
