"""`agentmail replay` and `agentmail status` as a user runs them (in-process CLI, emulator)."""

from __future__ import annotations

import json
from contextlib import closing

import pytest

from agentmail.agent import Agent
from agentmail.config import load_settings
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials
from agentmail.services.runner import Run
from tests.cli.helpers import run_cli

from .conftest import AGENT, journal_messages


@pytest.fixture
def cli(lab, monkeypatch):
    monkeypatch.setenv("RECOVERY_SIDE_EFFECTS", str(lab.side_effects))
    monkeypatch.setenv("RECOVERY_FIX", str(lab.tmp / "fixed"))

    def invoke(*args: str, handler: str = "Failing"):
        command, *rest = args
        extra = ["--emulator", lab.emulator.url]
        if command in ("run", "replay"):
            extra += ["--handler", f"tests.recovery.handler:{handler}"]
        if command == "run":
            extra += ["--email", AGENT, "--interval", "0"]
        return run_cli("--config", str(lab.config), "--db", str(lab.db), command,
                       *(extra if command != "status" else []), *rest)

    return invoke


def _status(cli) -> dict:
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    [account] = json.loads(result.stdout)["accounts"]
    return account


def _dead_letter_one(lab, cli) -> str:
    lab.send_requests(1)
    result = cli("run", "--max-attempts", "1", "-n", "1")
    assert result.exit_code == 0, result.output
    return lab.requests[0]


def test_status_shows_runs_sync_counts_and_the_last_error(lab, cli):
    _dead_letter_one(lab, cli)
    lab.send_requests(1)  # arrives after the run: pending, unknown to the journal yet
    status = _status(cli)
    assert status["address"] == AGENT
    assert status["last_run"]["alive"] is False and status["last_run"]["status"] == "stopped"
    assert status["history_id"] and status["last_sync_at"]
    assert status["counts"] == {"pending": 0, "failed": 0, "in_flight": 0, "acked": 0,
                                "dead_lettered": 1, "rejected": 0}
    assert status["last_error"]["error"] == "RuntimeError: the model is down"
    assert status["oldest_pending_at"] is None

    text = cli("status").stdout
    assert "1 dead-lettered" in text and "RuntimeError: the model is down" in text
    assert "stopped" in text and "nothing pending" in text


def test_a_dead_lettered_message_is_replayed_and_succeeds_once_fixed(lab, cli):
    request = _dead_letter_one(lab, cli)

    dry = cli("replay", "--failed", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    [item] = json.loads(dry.stdout)["items"]
    assert item["outcome"] == "would_replay" and "dead-lettered after 1 attempt" in item["reason"]
    assert _status(cli)["counts"]["dead_lettered"] == 1  # a dry run changes nothing

    again = cli("replay", "--failed")  # still broken: fails again, exit 1
    assert again.exit_code == 1, again.output
    assert "dead-lettered" in again.stdout and "the model is down" in again.stdout
    # A replay is one attempt: failing again leaves it dead-lettered with the new error,
    # so the next `replay --failed` still finds it.
    status = _status(cli)
    assert status["counts"]["dead_lettered"] == 1 and status["counts"]["failed"] == 0
    listed = cli("replay", "--failed", "--dry-run", "--json")
    assert [i["outcome"] for i in json.loads(listed.stdout)["items"]] == ["would_replay"]

    (lab.tmp / "fixed").touch()
    fixed = cli("replay", "--message", request, "--json")
    assert fixed.exit_code == 0, fixed.output
    [item] = json.loads(fixed.stdout)["items"]
    assert item["outcome"] == "succeeded" and item["sent"] == 1
    lab.check_all_done()
    with lab.journal() as journal:
        [row] = [m for m in journal_messages(journal) if m.direction == "in"]
        kinds = [e.kind for e in journal.events_of_message(row.key)]
        assert kinds.count(ev.REPLAY_REQUESTED) == 2
    assert "agent-failed" not in _label_names(lab, row.provider_id)


def _label_names(lab, provider_id):
    with closing(build_service(lab.emulator.url, AGENT)) as svc:
        names = {x["id"]: x["name"] for x in svc.users().labels().list(userId="me").execute()[
            "labels"]}
        ids = svc.users().messages().get(userId="me", id=provider_id).execute()["labelIds"]
    return {names.get(i, i) for i in ids}


def test_replaying_a_success_needs_force_and_sends_a_new_reply(lab, cli):
    lab.send_requests(1)
    assert cli("run", "-n", "1", handler="Recorder").exit_code == 0
    skipped = cli("replay", "--thread", lab.requests[0], handler="Recorder")
    assert skipped.exit_code == 0 and "already succeeded" in skipped.stdout
    forced = cli("replay", "--thread", lab.requests[0], "--force", handler="Recorder")
    assert forced.exit_code == 0, forced.output
    assert "warning: --force" in forced.stderr and "succeeded" in forced.stdout
    replies = lab.replies()
    assert len(replies) == 2 and all(n == 1 for n in replies.values())  # two distinct replies
    assert {irt for irt, _ in replies} == {lab.requests[0]}


def test_replay_is_refused_while_a_live_run_holds_the_mailbox_unless_queued(lab, cli):
    request = _dead_letter_one(lab, cli)
    settings = load_settings(lab.config, overrides={"db": str(lab.db)})
    with lab.journal() as journal, GmailMailbox(AGENT, emulator_credentials(AGENT),
                                                api_endpoint=lab.emulator.url) as mailbox, \
            Run(journal=journal, mailbox=mailbox, agent=Agent(AGENT), settings=settings) as live:
        refused = cli("replay", "--failed")
        assert refused.exit_code == 2 and "live run" in refused.output and "--queue" in refused.output

        queued = cli("replay", "--message", request, "--queue", "--json")
        assert queued.exit_code == 0, queued.output
        assert json.loads(queued.stdout)["items"][0]["outcome"] == "queued"
        assert _status(cli)["counts"]["pending"] == 1

        # The live run claims it: now it is in flight there, and replay refuses it.
        [row] = [m for m in journal_messages(journal) if m.direction == "in"]
        assert journal.claim(row.key, run_id=live.run_id, lease_seconds=300)
        in_flight = cli("replay", "--message", request, "--queue")
        assert in_flight.exit_code == 1 and "in flight in live run" in in_flight.stdout


def test_replay_needs_a_selection_and_explains_unknown_ids(lab, cli):
    missing = cli("replay", "--failed")
    assert missing.exit_code == 2 and "no journal here" in missing.output
    assert not lab.db.exists()  # and it did not leave an empty one behind
    with lab.journal():
        pass
    assert cli("replay").exit_code == 2
    unknown = cli("replay", "--message", "<nope@example.com>")
    assert unknown.exit_code == 1 and "no received message matches" in unknown.output
    bad = cli("replay", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_since_alone_means_failures_since(lab, cli):
    _dead_letter_one(lab, cli)
    recent = cli("replay", "--since", "1h", "--dry-run", "--json")
    assert [i["outcome"] for i in json.loads(recent.stdout)["items"]] == ["would_replay"]
    future = cli("replay", "--since", "2999-01-01", "--dry-run", "--json")
    assert json.loads(future.stdout)["items"] == []
