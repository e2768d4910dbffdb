"""Stopping `agentmail run` while a handler is busy: as a user presses Ctrl-C (real processes).

The handler module lives in the test's folder, the run's current folder, so these also
show `--handler module:Class` finding a module there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agentmail.emulator import Emulator
from agentmail.journal.store import Journal
from benchmarks.cli import agentmail_command, clean_env

from .helpers import run_cli

ALICE, BOB = "alice@example.com", "bob@example.com"
STOPPING = "stopping after the current message (Ctrl-C again to abandon it)"
HANDLER = '''
import os, time
from agentmail import Agent

class Hang(Agent):
    def process_message(self, message):
        open(os.environ["HANG_STARTED"], "w").close()
        time.sleep(float(os.environ["HANG_SECONDS"]))
        return super().process_message(message)
'''


@pytest.fixture
def emulator():
    with Emulator() as emu:
        yield emu


@pytest.fixture
def busy(tmp_path, emulator):
    """Start `agentmail run --handler hang:Hang` on one request; returns (start, db)."""
    (tmp_path / "hang.py").write_text(HANDLER)
    db = tmp_path / "j.db"
    sent = run_cli("--db", str(db), "send", "--from", ALICE, "--to", BOB, "--payload", "{}",
                   "--emulator", emulator.url)
    assert sent.exit_code == 0, sent.output
    procs: list[subprocess.Popen] = []

    def start(seconds: float, *extra: str) -> subprocess.Popen:
        env = {**clean_env(), "HANG_STARTED": str(tmp_path / "started"),
               "HANG_SECONDS": str(seconds), "AGENTMAIL_BACKOFF_BASE": "0"}
        proc = subprocess.Popen(
            [agentmail_command(), "--db", str(db), "run", "--email", BOB, "--emulator",
             emulator.url, "--interval", "0.1", "--handler", "hang:Hang", *extra],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    def wait_started() -> None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.05)

    yield start, wait_started, db
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _state(db: Path) -> tuple[str, int]:
    """The request's state in Bob's mailbox, and how many replies Bob sent."""
    with Journal.open(str(db)) as j:
        events = j.events_since(0)
        [key] = [e.message_key for e in events if e.kind == "fetched" and e.account == BOB]
        row = j.message(key)
        assert row is not None
        return row.state, sum(e.kind == "sent" and e.account == BOB for e in events)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:  # it already finished
        pass


def test_the_first_sigterm_says_so_and_finishes_the_current_message(busy):
    start, wait_started, db = busy
    proc = start(1.5)
    wait_started()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert STOPPING in err.splitlines()
    assert "stopped after 1 cycle:" in out and "1 processed, 1 sent, 1 acked" in out
    assert _state(db) == ("acked", 1)


def test_a_second_ctrl_c_abandons_the_handler_and_exits_130(busy):
    start, wait_started, db = busy
    proc = start(25)
    wait_started()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert STOPPING in err
    state, replies = _state(db)
    assert state == "pending" and replies == 0  # released through the journal, nothing sent


def test_a_third_ctrl_c_quits_at_once_and_the_next_run_recovers(busy):
    start, wait_started, db = busy
    proc = start(25)
    wait_started()
    for _ in range(3):
        _signal(proc, signal.SIGINT)
        time.sleep(0.3)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    os.remove(Path(db).parent / "started")
    again = start(0, "--once", "--json")
    out, err = again.communicate(timeout=30)
    assert again.returncode == 0, err
    summary = json.loads(out)
    assert summary["acked"] == 1 and summary["sent"] == 1
    assert _state(db) == ("acked", 1)
