"""`agentmail run`'s pipeline end to end: emulator + real googleapiclient + real SQLite."""

from __future__ import annotations

import base64
import json
import sys
import textwrap
import time
from contextlib import closing

import pytest

from agentmail import errors
from agentmail import message as msg
from agentmail.agent import Agent
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.services.runner import Run
from agentmail.services.sending import send_request

from .conftest import ALICE, BOB


def _inbox(emulator, address, q="in:inbox"):
    out = []
    with closing(build_service(emulator.url, address)) as svc:
        refs = svc.users().messages().list(userId="me", q=q, maxResults=500).execute()
        for ref in refs.get("messages", []):
            m = svc.users().messages().get(userId="me", id=ref["id"], format="metadata").execute()
            headers = {h["name"].lower(): h["value"] for h in m["payload"]["headers"]}
            out.append({"id": m["id"], "threadId": m["threadId"],
                        "labels": m.get("labelIds", []), **headers})
    return out


def _kinds(journal, key):
    return [e.kind for e in journal.events_of_message(key)]


def _cycle_all(runs, times=4):
    for _ in range(times):
        for run in runs:
            run.cycle()


def test_two_default_agents_exchange_one_request_and_one_reply_then_stay_quiet(agents, emulator,
                                                                             journal):
    bob, alice = agents.run(BOB), agents.run(ALICE)
    sent = send_request(journal, agents.mailbox(ALICE), to=[BOB], subject="ping",
                        payload={"task": "ping", "exchanges": []})
    _cycle_all([bob, alice], times=5)

    request = [m for m in _inbox(emulator, BOB)]
    assert len(request) == 1 and "UNREAD" not in request[0]["labels"]
    replies = _inbox(emulator, ALICE)
    assert len(replies) == 1
    reply = replies[0]
    assert reply["in-reply-to"] == sent.message_id
    assert reply["references"].split() == [sent.message_id]
    assert reply["auto-submitted"] == "auto-replied"
    assert reply["subject"] == "Re: ping"
    # Bob has nothing more to say; Alice never answers an automatic reply.
    assert bob.totals.sent == 1 and alice.totals.sent == 0
    assert alice.totals.loop_guarded + alice.totals.acked >= 1
    bob_rows = journal.conversation_messages(sent.conversation_id)
    assert {r.state for r in bob_rows if r.direction == "in"} == {"acked"}
    key = ev.message_key(BOB, request[0]["id"])
    assert _kinds(journal, key) == ["fetched", "claimed", "processed", "sent", "acked"]
    payload = json.loads(journal.message(ev.message_key(ALICE, reply["id"])).payload)
    assert payload["status"] == "acknowledged" and len(payload["exchanges"]) == 1


class Counter(Agent):
    """Answers every message with count + 1 until 4: a multi-turn conversation."""

    def process_message(self, message):
        count = message.payload["count"]
        if count < 4:
            self.reply_to_message(message, {"count": count + 1}, allow_auto_reply=True)


def test_a_multi_turn_conversation_threads_in_both_mailboxes(agents, emulator, journal):
    bob, alice = agents.run(BOB, Counter(BOB)), agents.run(ALICE, Counter(ALICE))
    sent = send_request(journal, agents.mailbox(ALICE), to=[BOB], subject="count",
                        payload={"count": 0})
    _cycle_all([bob, alice], times=4)

    at_bob = sorted(_inbox(emulator, BOB, "in:anywhere"), key=lambda m: m["date"])
    at_alice = sorted(_inbox(emulator, ALICE, "in:anywhere"), key=lambda m: m["date"])
    assert len({m["threadId"] for m in at_bob}) == 1  # one Gmail thread per mailbox
    assert len({m["threadId"] for m in at_alice}) == 1
    counts = sorted(json.loads(r.payload)["count"] for r in journal.conversation_messages(
        sent.conversation_id) if r.direction == "in")
    assert counts == [0, 1, 2, 3, 4]
    # References grow by one RFC Message-ID per turn; never a Gmail id.
    last = max((m for m in at_alice + at_bob if "references" in m),
               key=lambda m: len(m["references"].split()))
    refs = last["references"].split()
    assert len(refs) == 4 and refs[0] == sent.message_id and all(r.startswith("<") for r in refs)
    assert journal.conversation(sent.conversation_id).message_count == 5


class Broken(Agent):
    def process_message(self, message):
        raise RuntimeError("model timed out")


def test_a_failing_handler_retries_with_backoff_then_dead_letters(agents, emulator, journal):
    bob = agents.run(BOB, Broken(BOB), max_attempts=3)
    _deliver(emulator, ALICE, BOB, "work")
    for _ in range(30):
        bob.cycle()
        if bob.totals.dead_lettered:
            break
        time.sleep(0.02)
    [m] = _inbox(emulator, BOB, "in:anywhere")
    key = ev.message_key(BOB, m["id"])
    assert _kinds(journal, key) == ["fetched", "claimed", "failed", "released", "claimed", "failed",
                                    "released", "claimed", "failed", "dead_lettered"]
    failed = [e for e in journal.events_of_message(key) if e.kind == ev.FAILED]
    assert failed[0].data["error_class"] == "RuntimeError" and "model timed out" in failed[0].data[
        "traceback"]
    releases = [e for e in journal.events_of_message(key) if e.kind == ev.RELEASED]
    assert all(e.data["next_attempt_at"] for e in releases)
    label_names = _label_names(emulator, BOB, m["labels"])
    assert "agent-failed" in label_names and "agent-processing" not in label_names
    assert journal.message(key).state == "dead_lettered"


def _label_names(emulator, address, ids):
    with closing(build_service(emulator.url, address)) as svc:
        labels = {lab["id"]: lab["name"] for lab in
                  svc.users().labels().list(userId="me").execute()["labels"]}
    return {labels.get(i, i) for i in ids}


def _request(sender, to, subject, payload=None):
    return msg.compose_request(from_addr=sender, to=to, subject=subject,
                               payload=payload or {"task": subject})


def _deliver(emulator, sender, to, subject, payload=None):
    """Mail a request through the sender's own mailbox, as another agent would (with the
    provider's Authentication-Results); returns the recipient's copy."""
    out = _request(sender, to, subject, payload)
    with closing(build_service(emulator.url, sender)) as svc:
        svc.users().messages().send(userId="me", body={
            "raw": base64.urlsafe_b64encode(out.raw).decode()}).execute()
    with closing(build_service(emulator.url, to)) as svc:
        found = svc.users().messages().list(
            userId="me", q=f"rfc822msgid:{out.message_id}").execute()["messages"]
    return found[0]


def test_a_message_read_by_a_person_first_is_still_processed(agents, emulator, journal):
    bob = agents.run(BOB)
    bob.cycle()  # the first run does its full sync; the cursor is set
    delivered = _deliver(emulator, ALICE, BOB, "read me")
    with closing(build_service(emulator.url, BOB)) as svc:
        svc.users().messages().modify(userId="me", id=delivered["id"],
                                      body={"removeLabelIds": ["UNREAD"]}).execute()
    bob.cycle()
    assert journal.message(ev.message_key(BOB, delivered["id"])).state == "acked"
    assert len(_inbox(emulator, ALICE)) == 1


def test_fault_storms_lose_and_duplicate_nothing(agents, emulator, journal):
    bob = agents.run(BOB)
    requests = [_deliver(emulator, ALICE, BOB, f"job {i}") for i in range(15)]
    emulator.set_faults(error_rate=0.25, error_codes=[429, 503, 500], drop_rate=0.05,
                        drop_phase="either", seed=7)
    for _ in range(40):
        bob.cycle()
        if all(journal.message(ev.message_key(BOB, r["id"])) is not None and
               journal.message(ev.message_key(BOB, r["id"])).state == "acked" for r in requests):
            break
    emulator.set_faults(error_rate=0.0, drop_rate=0.0)
    for r in requests:
        assert journal.message(ev.message_key(BOB, r["id"])).state == "acked"
    replies = _inbox(emulator, ALICE)
    assert len(replies) == 15
    assert len({m["in-reply-to"] for m in replies}) == 15


def test_a_lost_send_response_with_a_rewritten_message_id_sends_no_duplicate(agents, emulator,
                                                                            journal):
    bob = agents.run(BOB)
    delivered = _deliver(emulator, ALICE, BOB, "once")
    emulator.set_faults(rewrite_message_id=True, script=[
        {"method": "gmail.users.messages.send", "action": "drop_after", "count": 1}])
    bob.cycle()
    bob.cycle()
    replies = _inbox(emulator, ALICE)
    assert len(replies) == 1
    sent = [e for e in journal.events_of_message(ev.message_key(BOB, delivered["id"]))
            if e.kind == ev.SENT]
    assert len(sent) == 1 and sent[0].data["recovered"] is True


def test_a_second_run_on_the_same_mailbox_is_refused(agents, journal, settings):
    agents.run(BOB)
    with pytest.raises(errors.AlreadyRunning, match="already being processed"):
        Run(journal=journal, mailbox=agents.mailbox(BOB), agent=Agent(BOB),
            settings=settings).__enter__()


SEED_EXAMPLE = '''
from agentmail import Agent

class MyCustomAgent(Agent):
    def process_message(self, message):
        print(f"Processing message from {message.sender}")
        response = {"status": "processed", "original_payload": message.payload}
        self.reply_to_message(message, response)
'''


def test_the_seed_projects_extension_example_runs(tmp_path, emulator, monkeypatch):
    (tmp_path / "seed_agent.py").write_text(textwrap.dedent(SEED_EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "agent_config.json"
    config.write_text(json.dumps({"check_interval": 0, "db": "journal.db"}))
    _deliver(emulator, ALICE, BOB, "seed", {"q": 1})
    sys.modules.pop("seed_agent", None)
    from seed_agent import MyCustomAgent

    MyCustomAgent(BOB, config_path=str(config)).run(iterations=1, emulator=emulator.url)
    [reply] = _inbox(emulator, ALICE)
    assert reply["subject"] == "Re: seed"


def test_a_mailbox_that_refuses_calls_is_reported_and_journaled_not_fatal(agents, emulator,
                                                                         journal):
    bob = agents.run(BOB)
    emulator.set_faults(error_rate=1.0, error_codes=[403], methods=["gmail.users.messages.list",
                                                                    "gmail.users.history.list"])
    first, second = bob.cycle(), bob.cycle()
    assert first.errors and second.errors  # reported each cycle, the loop goes on
    failures = [e for e in journal.events_since(0) if e.kind == ev.FAILED]
    assert len(failures) == 1  # one outage, journaled once
    assert failures[0].data["stage"] == "mailbox" and failures[0].message_key is None
    emulator.set_faults(error_rate=0.0)
    delivered = _deliver(emulator, ALICE, BOB, "after the outage")
    bob.cycle()
    assert journal.message(ev.message_key(BOB, delivered["id"])).state == "acked"


def test_a_reply_refused_once_for_now_is_sent_after_waiting_with_the_runs_sleep(agents, emulator,
                                                                               journal):
    sent = send_request(journal, agents.mailbox(ALICE), to=[BOB], subject="ping",
                        payload={"task": "ping", "exchanges": []})
    emulator.set_faults(script=[{"method": "gmail.users.messages.send", "action": "error",
                                 "code": 503, "count": 1}])
    sleeps: list[float] = []
    with Run(journal=journal, mailbox=agents.mailbox(BOB), agent=Agent(BOB),
             settings=agents.settings, sleep=sleeps.append) as bob:
        report = bob.cycle()
    assert report.sent == 1 and not report.errors
    assert len(sleeps) == 1  # the run's sleep, not time.sleep, waited before the second try
    [reply] = _inbox(emulator, ALICE)
    assert reply["in-reply-to"] == sent.message_id
