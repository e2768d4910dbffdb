"""`agentmail init`, `journal rebuild|verify`, errors and --help of every command."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from agentmail.cli import app
from agentmail.journal.store import Journal

from .helpers import run_cli


def _commands(group, prefix=()):
    """Every command path of the Typer app, including sub-groups."""
    import typer.main

    command = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, sub in command.commands.items():
        path = (*prefix, name)
        yield path
        if hasattr(sub, "commands"):
            yield from _commands(sub, path)


@pytest.mark.parametrize("path", [(), *_commands(app)], ids=lambda p: " ".join(p) or "agentmail")
def test_every_command_explains_itself_with_help(path):
    result = run_cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


def test_init_writes_a_config_and_creates_the_journal(tmp_path):
    config = tmp_path / "agent_config.json"
    result = run_cli("--config", str(config), "init")
    assert result.exit_code == 0, result.output
    assert json.loads(config.read_text())["check_interval"] == 60.0
    assert (tmp_path / "agentmail.db").exists()
    again = run_cli("--config", str(config), "init")
    assert "exists, kept" in again.output


def test_verify_passes_on_a_healthy_journal_and_fails_on_tampering(tmp_path):
    db = tmp_path / "j.db"
    from tests.journal.history import fetched

    with Journal.open(str(db)) as j:
        j.append(fetched("a@example.com", "m1"), fetched("a@example.com", "m2"))
    ok = run_cli("--db", str(db), "journal", "verify", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    with Journal.open(str(db)) as j, j.engine.begin() as conn:
        conn.execute(text("UPDATE messages SET state = 'acked' WHERE provider_id = 'm1'"))
    bad = run_cli("--db", str(db), "journal", "verify")
    assert bad.exit_code == 1
    assert "messages: 0 only live, 0 only rebuilt, 1 changed" in bad.output
    fixed = run_cli("--db", str(db), "journal", "rebuild")
    assert fixed.exit_code == 0 and "from 2 events" in fixed.output
    assert run_cli("--db", str(db), "journal", "verify").exit_code == 0


def test_errors_are_one_line_and_exit_2(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    result = run_cli("--db", str(notes), "journal", "verify")
    assert result.exit_code == 2
    assert "error:" in result.output and "left untouched" in result.output
    assert "Traceback" not in result.output
    assert notes.read_text() == "not a database"
    bad_config = tmp_path / "c.json"
    bad_config.write_text('{"check_interval": "x"}')
    result = run_cli("--config", str(bad_config), "init")
    assert result.exit_code == 2 and "must be a number" in result.output
