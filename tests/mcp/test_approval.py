"""`--require-approval`: send and reply wait for a person (`agentmail outbox`, `approve`)."""

from __future__ import annotations

import json
import time

from agentmail.journal import projections as proj
from agentmail.journal.verify import verify
from agentmail.services import approval
from tests.cli.helpers import run_cli

from .conftest import ALICE, BOB, call, call_error, drive, server
from .test_exchange import _mail


def _outbox(settings, *args):
    done = run_cli("--db", settings.db, "outbox", "--json", *args)
    assert done.exit_code == 0, done.output
    return [json.loads(line) for line in done.stdout.splitlines()]


def _approve(settings, approval_id, *args):
    done = run_cli("--db", settings.db, "approve", approval_id, *args)
    assert done.exit_code == 0, done.output
    return done


def test_a_send_waits_for_approval_then_goes_out_once(make_inbox, settings, emulator, journal):
    inbox = make_inbox(ALICE)
    app = server(inbox, require_approval=True)

    async def ask(client):
        held = await call(client, "send", to=BOB, subject="job", payload={"n": 1})
        again = await call(client, "send", to=BOB, subject="job", payload={"n": 1})
        other = await call_error(client, "send", to=BOB, subject="job", payload={"n": 2},
                                 idempotency_key=held["idempotency_key"])
        return held, again, other

    held, again, other = drive(app, ask)
    assert held["status"] == "awaiting_approval" and not held["duplicate"]
    assert again["approval_id"] == held["approval_id"] and again["duplicate"]
    assert "already holds another send" in other
    assert _mail(emulator, BOB, "in:inbox") == []
    [pending] = _outbox(settings)
    assert pending["id"] == held["approval_id"] and pending["request"]["to"] == [BOB]
    assert pending["request"]["payload"] == {"n": 1}
    assert approval.carry_out(inbox) == []  # nothing decided yet
    status = drive(app, lambda client: call(client, "status"))
    assert status["mailboxes"][0]["awaiting_approval"] == 1

    _approve(settings, held["approval_id"], "--note", "fine")
    assert [a.id for a in approval.carry_out(inbox)] == [held["approval_id"]]
    assert approval.carry_out(inbox) == []  # carried out once
    [(headers, _)] = _mail(emulator, BOB, "in:inbox")
    assert headers["message-id"] == held["message_id"]
    row = journal.message(journal.sent_message_source(ALICE, held["message_id"]))
    assert row.conversation_id == held["conversation_id"]
    [done] = _outbox(settings, "--all")
    assert done["state"] == "done" and done["decided_by"] and done["note"] == "fine"
    assert done["result"]["message_id"] == held["message_id"]
    # A model retrying after it went out gets the sent original, and nothing is held again.
    later = drive(app, lambda client: call(client, "send", to=BOB, subject="job",
                                           payload={"n": 1}))
    assert later["status"] == "sent" and later["duplicate"]
    assert _outbox(settings) == [] and len(_mail(emulator, BOB, "in:inbox")) == 1
    assert verify(journal).ok


def test_a_held_reply_keeps_its_claim_until_approved_and_is_sent_once(agents, make_inbox,
                                                                     settings, emulator, journal):
    from agentmail.services.sending import send_request

    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="q", payload={})
    inbox = make_inbox(ALICE)
    app = server(inbox, require_approval=True)

    async def answer(client):
        [claim] = (await call(client, "inbox", lease_s=0.3))["claims"]
        held = await call(client, "reply", claim_id=claim["claim_id"], payload={"a": 1})
        time.sleep(0.4)  # past the lease: a held reply keeps the claim
        return claim, held, await call(client, "inbox")

    claim, held, after = drive(app, answer)
    assert held["status"] == "awaiting_approval" and not held["sent"]
    assert [c["claim_id"] for c in after["claims"]] == [claim["claim_id"]]
    _approve(settings, held["approval_id"])
    approval.carry_out(inbox)
    key = journal.received_matching(asked.message_id, account=ALICE)[0].key
    assert journal.message(key).state == "acked"
    agents.run(BOB).cycle()
    [(headers, _)] = _mail(emulator, BOB, "in:inbox")
    assert headers["in-reply-to"] == asked.message_id
    assert headers["message-id"] == held["message_id"]
    assert verify(journal).ok


def test_a_declined_reply_sends_nothing_and_its_request_returns_to_the_queue(
        agents, make_inbox, settings, emulator, journal):
    from agentmail.services.sending import send_request

    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="q", payload={})
    inbox = make_inbox(ALICE)
    app = server(inbox, require_approval=True)

    async def answer(client):
        [claim] = (await call(client, "inbox"))["claims"]
        return await call(client, "reply", claim_id=claim["claim_id"], payload={"a": "no"})

    held = drive(app, answer)
    _approve(settings, held["approval_id"], "--decline", "--note", "wrong answer")
    again = run_cli("--db", settings.db, "approve", held["approval_id"])
    assert again.exit_code == 2 and "declined already" in again.output
    approval.carry_out(inbox)
    key = journal.received_matching(asked.message_id, account=ALICE)[0].key
    released = journal.events_of_message(key)[-1]
    assert released.kind == "released" and "wrong answer" in released.data["detail"]
    assert _mail(emulator, ALICE, "in:sent") == []
    assert journal.message(key).state == proj.PENDING


def test_approve_names_an_unknown_id_clearly(settings, journal):
    done = run_cli("--db", settings.db, "approve", "ap-nope")
    assert done.exit_code == 1 and "no approval 'ap-nope'" in done.output
