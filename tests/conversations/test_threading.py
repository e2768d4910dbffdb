"""Conversations across mailboxes: two agents, three agents, late parents, merges, dedupe."""

from __future__ import annotations

from dataclasses import replace

from agentmail.journal import conversations as conv
from agentmail.journal.verify import verify

from .mail import A, B, C


def _one_conversation(journal, *idents):
    found = {tuple(conv.resolve(journal, i)) for i in idents}
    assert len(found) == 1, found
    (cids,) = found
    assert len(cids) == 1
    return cids[0]


def test_two_agents_request_and_reply_are_one_conversation_of_two_messages(journal, mail):
    req = mail.request(A, [B], payload={"q": 1})
    kb = mail.deliver(req, B)
    [reply] = mail.handle(kb, replies=[{"to": [A], "payload": {"a": 1}}])
    ka = mail.deliver(reply, A)
    mail.handle(ka)

    cid = _one_conversation(journal, req.message_id, reply.message_id, kb, ka)
    messages = conv.conversation_messages(journal, cid)
    assert [m.message_id for m in messages] == [req.message_id, reply.message_id]
    # A's sent copy and B's received copy are one message; the received copy's state wins.
    first, second = messages
    assert sorted((c.account, c.direction) for c in first.copies) == [(A, "out"), (B, "in")]
    assert (first.state, first.attempts) == ("acked", 1)
    assert (second.sender, second.recipients, second.state) == (B, [A], "acked")
    assert second.in_reply_to == req.message_id and second.references == [req.message_id]
    summary = conv.summary(journal, cid)
    assert summary.message_count == 2 and summary.participants == [A, B]
    assert not (summary.pending or summary.failed or summary.rejected)
    assert verify(journal).ok


def test_three_agents_a_asks_b_b_asks_c_and_c_answers_a(journal, mail):
    req = mail.request(A, [B], subject="forecast", payload={"q": "weather?"})
    kb = mail.deliver(req, B)
    [ask] = mail.handle(kb, replies=[{"to": [C], "payload": {"q": "ask C"}}])
    kc = mail.deliver(ask, C)
    [answer] = mail.handle(kc, replies=[{"to": [A, B], "payload": {"a": "sunny"}}])
    ka = mail.deliver(answer, A)
    kb2 = mail.deliver(answer, B)
    mail.handle(ka)
    mail.handle(kb2)

    # Each mailbox has its own Gmail thread id; every one of them names the conversation.
    thread_ids = {c.thread_id for m in conv.conversation_messages(
        journal, conv.resolve(journal, req.message_id)[0]) for c in m.copies}
    assert len(thread_ids) == 3
    cid = _one_conversation(journal, *thread_ids, req.message_id, ask.message_id,
                            answer.message_id)
    messages = conv.conversation_messages(journal, cid)
    assert [(m.sender, m.recipients) for m in messages] == [(A, [B]), (B, [C]), (C, [A, B])]
    assert answer.references == (req.message_id, ask.message_id)
    assert len(messages[2].copies) == 3  # C's sent copy, A's and B's received copies
    assert {c.account for c in messages[2].copies if c.direction == "in"} == {A, B}
    assert conv.summary(journal, cid).participants == [A, B, C]
    assert len(conv.list_conversations(journal)) == 1
    assert verify(journal).ok


def test_a_reply_fetched_before_its_parent_joins_the_parent(journal, mail):
    req = mail.request(A, [B])
    kb = mail.deliver(req, B)
    [reply] = mail.handle(kb, replies=[{"to": [A, C], "payload": {"a": 1}}])
    # C was copied on the reply but only receives the request afterwards.
    late_reply = mail.deliver(reply, C)
    assert conv.resolve(journal, req.message_id) == conv.resolve(journal, late_reply)
    early = mail.deliver(req, C)
    cid = _one_conversation(journal, early, late_reply, req.message_id)
    messages = conv.conversation_messages(journal, cid)
    # Shown in the order they were written, not the order C fetched them.
    assert [m.message_id for m in messages] == [req.message_id, reply.message_id]
    assert verify(journal).ok


def test_a_message_linking_two_conversations_merges_them(journal, mail):
    first = mail.request(A, [B], subject="first")
    second = mail.request(C, [B], subject="second")
    kb1, kb2 = mail.deliver(first, B), mail.deliver(second, B)
    before = {conv.resolve_one(journal, kb1), conv.resolve_one(journal, kb2)}
    assert len(before) == 2
    # B answers both at once: its reply references both requests.
    [reply] = mail.handle(kb1, replies=[{"to": [A, C], "payload": {"both": True}}])
    joined = replace(reply, references=(first.message_id, second.message_id))
    bridge = mail.deliver(joined, C)
    cid = _one_conversation(journal, first.message_id, second.message_id, bridge, kb2)
    assert cid in before
    assert [s.id for s in conv.list_conversations(journal)] == [cid]
    assert {m.message_id for m in conv.conversation_messages(journal, cid)} == {
        first.message_id, second.message_id, joined.message_id}
    assert verify(journal).ok


def test_copies_of_one_message_in_several_mailboxes_are_one_message(journal, mail):
    req = mail.request(A, [B, C])
    mail.deliver(req, B)
    mail.deliver(req, C)
    cid = conv.resolve_one(journal, req.message_id)
    [message] = conv.conversation_messages(journal, cid)
    assert sorted(c.key for c in message.copies) == sorted(
        [f"{A}:{req.provider_id}", *(c.key for c in message.copies if c.direction == "in")])
    assert [c.direction for c in message.copies] == ["in", "in", "out"]
    assert message.state == "pending" and conv.summary(journal, cid).message_count == 1


def test_a_reply_not_sent_yet_is_shown_as_queued(journal, mail):
    req = mail.request(A, [B])
    kb = mail.deliver(req, B)
    # Processed, but the process stopped before sending: the outbox still holds the reply.
    from agentmail.journal import events as ev

    mail.step(ev.CLAIMED, kb, attempt=1, lease_until="2026-11-01T13:00:00+00:00")
    mail.step(ev.PROCESSED, kb, attempt=1, result=None, outgoing=[{
        "outbox_id": "ob1", "message_id": "<queued@b>", "thread_id": "Tb9", "recipients": [A],
        "subject": "Re: question", "in_reply_to": req.message_id,
        "references": [req.message_id], "payload": {"later": True}, "raw": "eA"}])
    cid = conv.resolve_one(journal, "<queued@b>")
    messages = conv.conversation_messages(journal, cid, with_events=True)
    assert [(m.message_id, m.state) for m in messages] == [(req.message_id, "processed"),
                                                            ("<queued@b>", "queued")]
    assert messages[1].payload == {"later": True} and messages[1].sender == B
    assert [e.kind for e in messages[0].events] == ["sent", "fetched", "claimed", "processed"]
    assert conv.summary(journal, cid).pending
