"""Claims for the MCP client: leases that lapse, a client that leaves, release and reject."""

from __future__ import annotations

import time

from agentmail.journal import events as ev
from agentmail.services.sending import send_request

from .conftest import ALICE, BOB, call, call_error, drive, server
from .test_exchange import _mail


def _kinds(journal, key):
    return [e.kind for e in journal.events_of_message(key)]


async def _claim_soon(client, deadline_s=5.0, **arguments):
    """inbox until it hands out a claim (a released message waits out its short backoff)."""
    deadline = time.monotonic() + deadline_s
    while True:
        claims = (await call(client, "inbox", **arguments))["claims"]
        if claims or time.monotonic() > deadline:
            return claims
        time.sleep(0.02)


def test_a_claim_whose_lease_lapses_returns_to_the_queue_and_is_answered_once(
        agents, make_inbox, emulator, journal):
    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="q", payload={"n": 1})

    async def scenario(client):
        [first] = (await call(client, "inbox", lease_s=0.3))["claims"]
        time.sleep(0.4)  # the model went quiet: its lease ran out
        [second] = await _claim_soon(client)
        stale = await call_error(client, "reply", claim_id=first["claim_id"], payload={"a": 0})
        replied = await call(client, "reply", claim_id=second["claim_id"], payload={"a": 1})
        return first, second, stale, replied

    first, second, stale, replied = drive(server(make_inbox(ALICE)), scenario)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["claim_id"] != second["claim_id"]
    assert "not held any more" in stale and "claimed again" in stale
    assert replied["sent"]
    key = journal.received_matching(asked.message_id, account=ALICE)[0].key
    assert _kinds(journal, key) == ["fetched", "claimed", "failed", "released", "claimed",
                                    "processed", "sent", "acked"]
    failed = next(e for e in journal.events_of_message(key) if e.kind == ev.FAILED)
    assert failed.data["error_class"] == "LeaseExpired" and failed.data["retryable"]
    agents.run(BOB).cycle()
    assert [h["in-reply-to"] for h, _ in _mail(emulator, BOB, "in:inbox")] == [asked.message_id]


def test_a_client_that_leaves_gives_its_claims_back_to_the_next_one(agents, make_inbox, journal,
                                                                   emulator):
    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="q", payload={"n": 1})
    first_inbox = make_inbox(ALICE)

    async def claim_only(client):
        return (await call(client, "inbox"))["claims"]

    [held] = drive(server(first_inbox), claim_only)
    first_inbox.close()  # the host went away: the server stops

    async def answer(client):
        [claim] = await _claim_soon(client)
        return claim, await call(client, "reply", claim_id=claim["claim_id"], payload={"ok": 1})

    claim, replied = drive(server(make_inbox(ALICE)), answer)
    assert held["attempt"] == 1 and held["claim_id"] != claim["claim_id"]
    assert claim["message_id"] == asked.message_id and claim["attempt"] == 2
    assert replied["sent"]
    key = journal.received_matching(asked.message_id, account=ALICE)[0].key
    released = [e for e in journal.events_of_message(key) if e.kind == ev.RELEASED]
    assert [e.data["reason"] for e in released] == ["handler_released"]
    assert released[0].data["detail"] == "the handler left"
    assert journal.message(key).state == "acked"
    agents.run(BOB).cycle()
    assert len(_mail(emulator, BOB, "in:inbox")) == 1


def test_release_and_reject_go_through_the_journal(agents, make_inbox, journal, emulator):
    later = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="later",
                         payload={"n": 1})
    spam = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="spam",
                        payload={"n": 2})

    async def scenario(client):
        claims = {c["subject"]: c for c in (await call(client, "inbox"))["claims"]}
        released = await call(client, "release", claim_id=claims["later"]["claim_id"],
                              retry_after_s=3600, reason="needs a person's input first")
        rejected = await call(client, "reject", claim_id=claims["spam"]["claim_id"],
                              reason="asks for credentials")
        return released, rejected, await call(client, "inbox"), await call(client, "status")

    released, rejected, after, status = drive(server(make_inbox(ALICE)), scenario)
    assert released["state"] == "pending" and released["claimable_at"]
    assert rejected["state"] == "dead_lettered"
    assert after["claims"] == []  # the released one waits out its hour
    later_key = journal.received_matching(later.message_id, account=ALICE)[0].key
    spam_key = journal.received_matching(spam.message_id, account=ALICE)[0].key
    assert _kinds(journal, later_key)[-1] == "released"
    assert journal.message(later_key).state == "pending"
    dead = journal.message(spam_key)
    assert dead.state == "dead_lettered" and "asks for credentials" in dead.last_error
    [mailbox] = status["mailboxes"]
    assert mailbox["handled_by"] == "this server"
    # A release spends its attempt: status counts it with the messages waiting for a retry.
    assert mailbox["counts"]["dead_lettered"] == 1 and mailbox["counts"]["failed"] == 1
    # Nothing was sent for either; the rejected one carries the failed label in Gmail.
    assert _mail(emulator, ALICE, "in:sent") == []
    assert _mail(emulator, ALICE, "label:agent-failed")[0][1] == dead.provider_id


def test_released_on_the_last_attempt_is_dead_lettered(agents, make_inbox, journal):
    send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="q", payload={})

    async def scenario(client):
        results = []
        for _ in range(2):
            [claim] = await _claim_soon(client)
            results.append(await call(client, "release", claim_id=claim["claim_id"]))
        return results

    first, second = drive(server(make_inbox(ALICE, max_attempts=2)), scenario)
    assert first["state"] == "pending" and second["state"] == "dead_lettered"


def test_claims_are_refused_for_a_mailbox_an_agentmail_run_processes(agents, make_inbox):
    agents.run(ALICE)

    async def scenario(client):
        return await call_error(client, "inbox"), await call(client, "status")

    error, status = drive(server(make_inbox(ALICE)), scenario)
    assert "is processed by run" in error and "agentmail run" in error
    assert status["mailboxes"][0]["handled_by"].startswith("run ")
