"""Two agents talk: one is a normal `agentmail run`, the other is driven only through MCP tools."""

from __future__ import annotations

import threading
from contextlib import closing

from agentmail.agent import Agent
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.services.runner import RunOptions
from agentmail.services.sending import send_request

from .conftest import ALICE, BOB, call, call_error, drive, server


def _mail(emulator, address, q):
    """(headers, id) of every message matching `q` in `address`'s mailbox."""
    out = []
    with closing(build_service(emulator.url, address)) as svc:
        for ref in svc.users().messages().list(userId="me", q=q).execute().get("messages", []):
            m = svc.users().messages().get(userId="me", id=ref["id"], format="metadata").execute()
            out.append(({h["name"].lower(): h["value"] for h in m["payload"]["headers"]}, m["id"]))
    return out


class Doubler(Agent):
    def process_message(self, message):
        self.reply_to_message(message, {"doubled": message.payload["n"] * 2})


def test_a_request_sent_through_mcp_is_answered_by_a_running_agent(agents, make_inbox, emulator,
                                                                   journal):
    bob = agents.run(BOB, Doubler(BOB))
    stop = threading.Event()
    loop = threading.Thread(target=bob.loop, args=(RunOptions(interval=0.05, stop=stop),))
    loop.start()
    try:
        async def scenario(client):
            sent = await call(client, "send", to=BOB, subject="double", payload={"n": 21})
            waited = await call(client, "wait_for_reply", conversation=sent["conversation_id"],
                                timeout_s=20)
            return sent, waited, await call(client, "conversation",
                                            conversation=sent["message_id"])
        sent, waited, whole = drive(server(make_inbox(ALICE)), scenario)
    finally:
        stop.set()
        loop.join()
    assert not waited["timed_out"]
    [answer] = waited["messages"]
    assert answer["sender"] == BOB and answer["in_reply_to"] == sent["message_id"]
    assert answer["body"]["payload"] == {"doubled": 42}
    assert answer["body"]["untrusted"] is True and BOB in answer["body"]["notice"]
    assert answer["trust"]["accepted"] and answer["trust"]["sender_authenticated"]
    assert answer["direction"] == "received"
    # The request and the answer are one conversation, whichever id names it.
    assert whole["id"] == sent["conversation_id"] == waited["conversation_id"]
    assert [x["sender"] for x in whole["messages"]] == [ALICE, BOB]
    assert [h["in-reply-to"] for h, _ in _mail(emulator, ALICE, "in:inbox")] == [sent["message_id"]]
    # Alice's copy of the answer went through the same pipeline: fetched, claimed, acked.
    [alice_copy] = [r for r in journal.conversation_messages(sent["conversation_id"])
                    if r.account == ALICE and r.direction == "in"]
    assert alice_copy.state == "acked"


def test_a_request_to_the_mcp_side_is_claimed_answered_once_and_threaded(agents, make_inbox,
                                                                        emulator, journal):
    bob = agents.run(BOB)
    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="question",
                         payload={"q": "colour?"})

    async def scenario(client):
        inbox = await call(client, "inbox")
        [claim] = inbox["claims"]
        replied = await call(client, "reply", claim_id=claim["claim_id"],
                             payload={"answer": "blue"})
        again = await call_error(client, "reply", claim_id=claim["claim_id"],
                                 payload={"answer": "blue"})
        return claim, replied, again, await call(client, "inbox")

    claim, replied, again, after = drive(server(make_inbox(ALICE)), scenario)
    assert claim["sender"] == BOB and claim["message_id"] == asked.message_id
    assert claim["body"]["payload"] == {"q": "colour?"} and claim["body"]["untrusted"]
    assert claim["trust"]["sender_authenticated"] is True
    assert claim["conversation_id"] == asked.conversation_id
    assert replied["sent"] and replied["conversation_id"] == asked.conversation_id
    assert "not held any more" in again and "acked" in again
    assert after["claims"] == []
    bob.cycle()
    [(headers, _)] = _mail(emulator, BOB, "in:inbox")
    assert headers["in-reply-to"] == asked.message_id
    assert headers["message-id"] == replied["message_id"]
    assert headers["auto-submitted"] == "auto-replied"
    key = ev.message_key(ALICE, journal.received_matching(asked.message_id, account=ALICE)[0]
                         .provider_id)
    assert [e.kind for e in journal.events_of_message(key)] == [
        "fetched", "claimed", "processed", "sent", "acked"]


def test_a_retried_send_with_the_same_key_sends_once(make_inbox, emulator, journal):
    async def scenario(client):
        first = await call(client, "send", to=BOB, subject="job", payload={"n": 1},
                           idempotency_key="job-1")
        second = await call(client, "send", to=BOB, subject="job", payload={"n": 1},
                            idempotency_key="job-1")
        other = await call_error(client, "send", to=BOB, subject="job", payload={"n": 2},
                                 idempotency_key="job-1")
        # No key: derived from the arguments, so a plain retry is safe too.
        third = await call(client, "send", to=BOB, subject="job", payload={"n": 3})
        fourth = await call(client, "send", to=[BOB], subject="job", payload={"n": 3})
        return first, second, other, third, fourth

    first, second, other, third, fourth = drive(server(make_inbox(ALICE)), scenario)
    assert not first["duplicate"] and second["duplicate"]
    assert (second["conversation_id"], second["message_id"]) == (
        first["conversation_id"], first["message_id"])
    assert "used for a different request" in other and "nothing was sent" in other
    assert not third["duplicate"] and fourth["duplicate"]
    assert fourth["message_id"] == third["message_id"]
    # The emulator's mailboxes are the truth: two messages went out, each once.
    received = sorted(h["message-id"] for h, _ in _mail(emulator, BOB, "in:inbox"))
    assert received == sorted([first["message_id"], third["message_id"]])
    assert len(_mail(emulator, ALICE, "in:sent")) == 2


def test_a_send_that_went_out_but_was_not_journaled_is_found_not_sent_again(make_inbox, emulator,
                                                                           journal, agents):
    """A crash between the provider's accepting the send and the journal's `sent`: the
    retry finds the message among the sent mail by its key's Message-ID."""
    from agentmail import message as msg
    from agentmail.services import exchange

    mailbox = agents.mailbox(ALICE)
    key = "crashed-send"
    message_id = exchange.message_id_for_key(ALICE, key)
    out = msg.compose_request(from_addr=ALICE, to=[BOB], subject="s", payload={"a": 1},
                              message_id=message_id)
    mailbox.send(out.raw)  # went out; the process died before journaling it
    inbox = make_inbox(ALICE)
    again = exchange.send(journal, inbox.mailbox(ALICE), inbox.settings, to=[BOB], subject="s",
                          payload={"a": 1}, idempotency_key=key)
    assert again.message_id == message_id and not again.duplicate
    assert len(_mail(emulator, BOB, "in:inbox")) == 1
    [event] = [e for e in journal.events_since(0) if e.kind == "sent"]
    assert event.data["recovered"] is True
    assert journal.request_by_idempotency_key(ALICE, key).state == "sent"


def test_allow_to_applies_to_every_send(make_inbox, emulator):
    async def scenario(client):
        return await call_error(client, "send", to="stranger@elsewhere.example", subject="s",
                                payload={})
    error = drive(server(make_inbox(ALICE, allow_to=("@example.com",))), scenario)
    assert "stranger@elsewhere.example are not in the allow_to list; nothing was sent" in error
    assert _mail(emulator, ALICE, "in:sent") == []
