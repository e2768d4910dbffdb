"""`agentmail run`, `send` and `demo` as a user runs them."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

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
    assert "stopped after 1 cycle: 1 fetched, 1 processed, 1 sent, 1 acked" in ran.output
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


def test_quiet_keeps_the_summary_and_json_says_full_sync(tmp_path, emulator):
    db = str(tmp_path / "j.db")
    quiet = run_cli("-q", "--db", db, "run", "--email", BOB, "--once", "--emulator", emulator.url)
    assert quiet.exit_code == 0
    assert quiet.output.strip().splitlines() == [
        "stopped after 1 cycle: 0 fetched, 0 processed, 0 sent, 0 acked, 0 failed, "
        "0 dead-lettered, 0 rejected"]
    first = run_cli("--db", str(tmp_path / "k.db"), "run", "--email", BOB, "--once",
                    "--emulator", emulator.url, "--json")
    assert json.loads(first.stdout)["full_sync"] is True  # a first run lists the mailbox
    second = run_cli("--db", str(tmp_path / "k.db"), "run", "--email", BOB, "--once",
                     "--emulator", emulator.url, "--json")
    assert json.loads(second.stdout)["full_sync"] is False  # then it follows the history


def test_init_force_replaces_a_broken_config(tmp_path):
    config = tmp_path / "agent_config.json"
    config.write_text("{oops")
    kept = run_cli("--config", str(config), "init")
    assert kept.exit_code == 2 and "init --force" in kept.output
    replaced = run_cli("--config", str(config), "init", "--force")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(config.read_text())["max_attempts"] == 5


def test_the_handler_is_found_next_to_the_config(tmp_path, emulator, monkeypatch):
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    (agent_dir / "agent_config.json").write_text(json.dumps({"handler": "beside:Quiet"}))
    (agent_dir / "beside.py").write_text(
        "from agentmail import Agent\n\nclass Quiet(Agent):\n"
        "    def process_message(self, message):\n        return {'quiet': True}\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    sent = run_cli("--config", str(agent_dir / "agent_config.json"), "send", "--from", ALICE,
                   "--to", BOB, "--payload", "{}", "--emulator", emulator.url)
    assert sent.exit_code == 0, sent.output
    ran = run_cli("--config", str(agent_dir / "agent_config.json"), "run", "--email", BOB,
                  "--once", "--emulator", emulator.url, "--json")
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert summary["processed"] == 1 and summary["sent"] == 0  # Quiet answered nothing


def _claimed(db) -> bool:
    """Read-only, so the script alone creates and upgrades its journal."""
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
            return bool(conn.execute("SELECT 1 FROM events WHERE kind = 'claimed'").fetchall())
    except sqlite3.Error:
        return False


SCRIPT = '''
import sys
from agentmail import Agent

class Slow(Agent):
    def process_message(self, message):
        import time
        time.sleep(30)

print("ready", flush=True)
Slow(sys.argv[1], config_path=sys.argv[2]).run(emulator=sys.argv[3], interval=0.1)
print("returned", flush=True)
'''


def test_an_agent_run_from_python_logs_no_alembic_lines_and_stops_on_ctrl_c(tmp_path, emulator):
    (tmp_path / "agent.py").write_text(SCRIPT)
    (tmp_path / "agent_config.json").write_text("{}")
    sent = run_cli("--db", str(tmp_path / "agentmail.db"), "send", "--from", ALICE, "--to",
                   BOB, "--payload", "{}", "--emulator", emulator.url)
    assert sent.exit_code == 0
    (tmp_path / "agentmail.db").unlink()  # the script's run creates (and upgrades) its journal
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"agentmail.db{suffix}").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "agent.py", BOB, "agent_config.json", emulator.url],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _claimed(tmp_path / "agentmail.db"):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "alembic" not in err.lower(), err
    assert "interrupted" in err and "returned" in out
