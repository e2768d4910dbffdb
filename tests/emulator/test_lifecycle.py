"""Embedding and running: file-backed store across restarts, the CLI command, the client helper."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from agentmail.emulator import Emulator
from agentmail.emulator.client import batch_uri, new_batch
from agentmail.emulator.testing import raw_message


def test_file_store_survives_a_restart(tmp_path, account_on):
    path = str(tmp_path / "emulator.db")
    with Emulator(path) as emu:
        bob = account_on(emu, "bob")
        first = emu.deliver(raw_message("a@example.com", bob.address, "kept"), bob.address)
        label = bob.users.labels().create(userId="me", body={"name": "kept"}).execute()
        history_id = bob.profile()["historyId"]
    with Emulator(path) as emu:
        again = account_on(emu, address=bob.address)
        assert [m["id"] for m in again.list()] == [first["id"]]
        assert again.profile()["historyId"] == history_id
        second = emu.deliver(raw_message("a@example.com", bob.address, "new"), bob.address)
        assert second["id"] > first["id"]
        other = again.users.labels().create(userId="me", body={"name": "other"}).execute()
        assert other["id"] != label["id"]


def test_url_and_client_helpers(emulator):
    assert emulator.url.startswith("http://127.0.0.1:") and not emulator.url.endswith("/")
    assert batch_uri(emulator.url + "/") == emulator.url + "/batch/gmail/v1"
    assert new_batch(emulator.url)._batch_uri == emulator.url + "/batch/gmail/v1"


def test_outer_batch_is_one_http_request(new_account, emulator):
    alice = new_account("alice")
    alice.profile()
    before = emulator.stats()["accounts"][alice.address]["http_requests"]
    batch = alice.new_batch()
    for _ in range(4):
        batch.add(alice.users.getProfile(userId="me"))
    batch.execute()
    after = emulator.stats()["accounts"][alice.address]
    assert after["http_requests"] == before + 1
    assert after["calls"]["gmail.users.getProfile"] == 5


def _app() -> typer.Typer:
    # imported here: agentmail.cli loads every command, the emulator's tests need none
    from agentmail.cli.emulator_cmd import serve

    app = typer.Typer()
    app.command()(serve)
    return app


def test_cli_help_lists_the_options():
    result = CliRunner().invoke(_app(), ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--db", "--rate-limit", "--fail-rate", "--latency-ms",
                   "--regime", "--history-retention"):
        assert option in result.output


def test_cli_rejects_bad_settings():
    result = CliRunner().invoke(_app(), ["--regime", "nope", "--db", ":memory:"])
    assert result.exit_code != 0
    result = CliRunner().invoke(_app(), ["--fail-rate", "3", "--db", ":memory:"])
    assert result.exit_code != 0
