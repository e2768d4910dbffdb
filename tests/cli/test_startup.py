"""Start-up: declaring the commands imports no heavy module, and reading a current journal
needs no Alembic, so `agentmail --help` and `agentmail history` start fast."""

from __future__ import annotations

import subprocess
import sys

from agentmail.journal import schema
from agentmail.journal.store import Journal
from benchmarks.cli import agentmail_command, clean_env

HEAVY = ("sqlalchemy", "alembic", "googleapiclient", "google_auth_oauthlib", "httplib2", "rich",
         "agentmail.emulator", "agentmail.pipeline", "agentmail.mailbox", "agentmail.message")
REPORT = ("import atexit, sys\n"
          "heavy = {heavy!r}\n"
          "atexit.register(lambda: print('LOADED', sorted({{m for m in sys.modules "
          "if m.startswith(heavy)}})))\n"
          "sys.argv = ['agentmail', *{args!r}]\n"
          "from agentmail.cli import main\n"
          "main()\n")


def _loaded(args: list[str], cwd) -> list[str]:
    done = subprocess.run([sys.executable, "-c", REPORT.format(heavy=HEAVY, args=args)],
                          cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=60)
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED"))
    return eval(line.removeprefix("LOADED "))  # a printed list of module names


def test_help_imports_nothing_heavy(tmp_path):
    assert _loaded(["--help"], tmp_path) == []


def test_history_on_a_current_journal_needs_sqlalchemy_only(tmp_path):
    Journal.open(str(tmp_path / "agentmail.db")).close()
    loaded = _loaded(["history", "--thread", "nope"], tmp_path)
    assert any(m.startswith("sqlalchemy") for m in loaded)
    assert [m for m in loaded if not m.startswith("sqlalchemy")] == []


def test_the_head_read_from_the_scripts_is_alembics():
    assert schema.scripted_head() == schema.head_revision()


def test_help_is_plain_and_names_the_exit_codes(tmp_path):
    done = subprocess.run([agentmail_command(), "run", "--help"], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "<bool>" not in done.stdout and "<int>" not in done.stdout and "╭" not in done.stdout
    assert "--email ADDRESS" in done.stdout
    history = subprocess.run([agentmail_command(), "history", "--help"], cwd=tmp_path,
                             env=clean_env(), capture_output=True, text=True, timeout=60)
    assert "participants [str]" in history.stdout  # markup would have eaten "[str]"
    top = subprocess.run([agentmail_command(), "--help"], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, timeout=60).stdout
    assert "0 ok, 1 the operation failed, 2 usage or configuration error, 130 interrupted" in \
        " ".join(top.split())


def test_the_library_names_still_import():
    from agentmail import Agent, Message, errors

    assert Agent.__module__ == "agentmail.agent" and Message.__module__ == "agentmail.message"
    assert errors.AgentmailError


def test_the_benchmark_times_each_command_against_python_itself(tmp_path):
    from benchmarks import cli as bench

    times = bench.startup(tmp_path, runs=1)
    assert set(times) == {"python -c pass", "--help", "status", "history"}
    base = times["python -c pass"]["seconds"]
    for name, t in times.items():
        assert t["seconds"] > 0 and abs(t["ratio"] - t["seconds"] / base) < 1e-9, name
