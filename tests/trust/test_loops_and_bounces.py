"""Loop guard, bounces and the no-backscatter rule, between agents on the emulator."""

from __future__ import annotations

import json
from contextlib import closing

from agentmail import message as msg
from agentmail.agent import Agent
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.services.sending import send_request
from tests.cli.helpers import run_cli

from . import mail as m


class Chatty(Agent):
    """Answers every message, automatic or not: the worst case for loops."""

    def process_message(self, message):
        turn = (message.payload or {}).get("turn", 0) if isinstance(message.payload, dict) else 0
        self.reply_to_message(message, {"turn": turn + 1}, allow_auto_reply=True)


def _inbox(emulator, address):
    with closing(build_service(emulator.url, address)) as svc:
        return svc.users().messages().list(userId="me", q="in:inbox").execute().get(
            "messages", [])


def _events(journal, kind, account):
    return [e for e in journal.events_since(0) if e.kind == kind and e.account == account]


def test_two_agents_that_always_answer_stop_at_the_per_conversation_cap(trust_emulator,
                                                                         journal, start_run):
    a, b = m.address("chatty-a", "agents.example"), m.address("chatty-b", "agents.example")
    cap = 3
    run_a = start_run(a, Chatty(a), max_replies_per_conversation=cap)
    run_b = start_run(b, Chatty(b), max_replies_per_conversation=cap)
    sent = send_request(journal, run_a.mailbox, to=[b], subject="ping", payload={"turn": 0})
    for _ in range(2 * cap + 4):
        run_b.cycle()
        run_a.cycle()
    quiet = (run_a.totals.sent, run_b.totals.sent)
    for _ in range(3):
        run_b.cycle()
        run_a.cycle()
    assert (run_a.totals.sent, run_b.totals.sent) == quiet  # nothing moves any more
    cid = sent.conversation_id
    assert journal.replies_in_conversation(b, cid) == cap
    assert journal.replies_in_conversation(a, cid) == cap  # its request counts as one
    guarded = _events(journal, ev.LOOP_GUARDED, a) + _events(journal, ev.LOOP_GUARDED, b)
    assert guarded and all(e.data["reason"] == "loop" for e in guarded)
    counts = {**journal.state_counts(a)}
    assert set(counts) == {"acked"} and set(journal.state_counts(b)) == {"acked"}


def test_an_unauthenticated_sender_gets_no_reply_even_with_error_replies_on(trust_emulator,
                                                                            journal, start_run):
    agent = m.address("agent", "agents.example")
    run = start_run(agent, Chatty(agent), error_replies=True, require_auth=False)
    stranger, forger = m.address("stranger"), m.address("forger")
    trust_emulator.deliver(m.mail(stranger, agent, auth=None), to=agent)
    trust_emulator.deliver(m.mail(forger, agent, body=b'{"broken": ',
                                  auth=m.auth_results(forger, dkim="fail", spf="fail",
                                                      dmarc="fail"),
                                  headers=[("Authentication-Results", m.auth_results(forger))]),
                           to=agent)
    run.cycle()
    run.cycle()
    # Accepted (require_auth off) and handled, but never answered; broken JSON: no error reply.
    assert run.totals.sent == 0 and run.totals.loop_guarded == 1 and run.totals.rejected == 1
    assert _inbox(trust_emulator, stranger) == [] and _inbox(trust_emulator, forger) == []
    [guard] = _events(journal, ev.LOOP_GUARDED, agent)
    assert guard.data["blockers"] == ["unauthenticated"]


def test_an_authenticated_sender_gets_a_structured_error_reply_when_enabled(trust_emulator,
                                                                            journal, start_run):
    agent = m.address("agent", "agents.example")
    run = start_run(agent, error_replies=True)
    sender, victim = m.address("sender"), m.address("victim")
    delivered = trust_emulator.deliver(
        m.mail(sender, agent, body=b'{"task": [1, 2', headers=[("Reply-To", victim)]), to=agent)
    deep = trust_emulator.deliver(m.mail(sender, agent, body=b"[" * 100 + b"]" * 100), to=agent)
    run.cycle()
    run.cycle()
    key = ev.message_key(agent, delivered["id"])
    assert [e.kind for e in journal.events_of_message(key)] == ["fetched", "rejected", "sent"]
    assert journal.message(key).state == "rejected"
    assert _inbox(trust_emulator, victim) == []  # only the authenticated From is answered
    replies = _inbox(trust_emulator, sender)
    assert len(replies) == 2
    with closing(build_service(trust_emulator.url, sender)) as svc:
        bodies = []
        for ref in replies:
            raw = svc.users().messages().get(userId="me", id=ref["id"], format="raw").execute()
            parsed = msg.parse(m.b64decode(raw["raw"]), account=sender, provider_id=ref["id"])
            bodies.append(parsed.payload)
            assert parsed.auto_submitted == "auto-replied"
    assert sorted(b["error"] for b in bodies) == ["invalid_json", "json_too_deep"]
    assert journal.message(ev.message_key(agent, deep["id"])).state == "rejected"
    # Nothing more is sent on later cycles (the outbox is drained).
    run.cycle()
    assert run.totals.sent == 2


def test_a_bounce_is_linked_to_the_message_it_bounces(trust_emulator, journal, start_run,
                                                      settings):
    agent = m.address("agent", "agents.example")
    run = start_run(agent)
    sent = send_request(journal, run.mailbox, to=["nobody@nowhere.example"], subject="job",
                        payload={"task": 1})
    sent_key = ev.message_key(agent, sent.provider_id)
    bounce = trust_emulator.deliver(m.dsn(agent, sent.message_id), to=agent)
    stray = trust_emulator.deliver(m.dsn(agent, m.message_id()), to=agent)
    run.cycle()
    bounce_key = ev.message_key(agent, bounce["id"])
    assert [e.kind for e in journal.events_of_message(bounce_key)] == ["fetched", "rejected"]
    assert journal.message(bounce_key).last_error == "bounce"
    [failed] = [e for e in journal.events_of_message(sent_key) if e.kind == ev.DELIVERY_FAILED]
    assert failed.data["bounce_key"] == bounce_key
    assert failed.data["message_id"] == sent.message_id
    assert failed.data["diagnostic"]["status"] == "5.1.1"
    assert "user unknown" in failed.data["diagnostic"]["diagnostic_code"]
    # A bounce of a message this journal never sent is rejected and linked to nothing.
    assert journal.message(ev.message_key(agent, stray["id"])).state == "rejected"
    assert len(_events(journal, ev.DELIVERY_FAILED, agent)) == 1
    assert run.totals.sent == 0  # bounces are never answered
    history = run_cli("--db", settings.db, "history", "--thread", sent.message_id, "--events")
    assert history.exit_code == 0, history.output
    assert "delivery_failed" in history.output and "user unknown" in history.output


def test_a_bounced_reply_is_filed_under_the_request_it_answered(trust_emulator, journal,
                                                                start_run):
    agent = m.address("agent", "agents.example")
    run = start_run(agent)
    requester = m.address("requester")
    request = trust_emulator.deliver(m.mail(requester, agent), to=agent)
    run.cycle()
    request_key = ev.message_key(agent, request["id"])
    [sent] = [e for e in journal.events_of_message(request_key) if e.kind == ev.SENT]
    bounce = trust_emulator.deliver(m.dsn(agent, sent.data["message_id"]), to=agent)
    run.cycle()
    [failed] = [e for e in journal.events_of_message(request_key)
                if e.kind == ev.DELIVERY_FAILED]
    assert failed.data["bounce_key"] == ev.message_key(agent, bounce["id"])
    assert journal.message(request_key).state == "acked"  # the request itself was handled


def test_history_shows_why_a_message_was_rejected(trust_emulator, journal, start_run, settings):
    agent = m.address("agent", "agents.example")
    run = start_run(agent)
    msg_id = m.message_id()
    trust_emulator.deliver(m.mail(m.address(), agent, auth=None, msg_id=msg_id), to=agent)
    run.cycle()
    text = run_cli("--db", settings.db, "history", "--thread", msg_id, "--events")
    assert "rejected, 0 attempts — unauthenticated" in text.output
    assert "reason=unauthenticated" in text.output
    doc = json.loads(run_cli("--db", settings.db, "history", "--thread", msg_id, "--json").stdout)
    assert doc["conversation"]["rejected"]
    assert doc["messages"][0]["last_error"] == "unauthenticated"
