"""`agentmail history`, `threads` and `events` on a journal written by agents."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest

from agentmail.journal import conversations as conv
from agentmail.journal import events as ev
from tests.cli.helpers import run_cli

from .mail import A, B, C


@pytest.fixture
def exchange(mail):
    """A asks B, B answers A: both mailboxes hold a copy of both messages."""
    req = mail.request(A, [B], subject="weather", payload={"q": "rain?"})
    kb = mail.deliver(req, B)
    [reply] = mail.handle(kb, replies=[{"to": [A], "payload": {"a": "no rain"}}])
    ka = mail.deliver(reply, A)
    mail.handle(ka)
    return {"req": req, "reply": reply, "kb": kb, "ka": ka,
            "cid": conv.resolve_one(mail.journal, req.message_id)}


def _history(db, *args):
    result = run_cli("--db", db, "history", *args)
    return result


def _ids(exchange, journal):
    req, reply = exchange["req"], exchange["reply"]
    b_copy = journal.message(exchange["kb"])
    return {
        "conversation id": exchange["cid"],
        "sender's thread id": req.thread_id,
        "recipient's thread id": b_copy.thread_id,
        "Message-ID with brackets": reply.message_id,
        "Message-ID without brackets": reply.message_id.strip("<>"),
        "provider id": b_copy.provider_id,
        "message key": exchange["ka"],
    }


@pytest.mark.parametrize("kind", ["conversation id", "sender's thread id", "recipient's thread id",
                                  "Message-ID with brackets", "Message-ID without brackets",
                                  "provider id", "message key"])
def test_history_accepts_every_kind_of_id(db, journal, exchange, kind):
    result = _history(db, "--thread", _ids(exchange, journal)[kind], "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["conversation"]["id"] == exchange["cid"]
    assert [m["message_id"] for m in doc["messages"]] == [exchange["req"].message_id,
                                                          exchange["reply"].message_id]


def test_history_shows_each_message_once_with_state_payload_and_steps(db, exchange):
    result = _history(db, "--thread", exchange["cid"], "--events")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"conversation {exchange['cid']}  weather" in out
    assert out.count("── ") == 2  # two messages, though each has two copies
    assert f"{A} → {B}" in out and f"{B} → {A}" in out
    assert "acked, 1 attempt" in out and '"q": "rain?"' in out and '"a": "no rain"' in out
    for kind in ("sent", "fetched", "claimed", "processed", "acked"):
        assert f" {kind} " in out
    assert "raw" not in out
    plain = _history(db, "--thread", exchange["cid"]).stdout
    assert "steps:" not in plain and "claimed" not in plain


def test_history_json_schema(db, exchange):
    doc = json.loads(_history(db, "--thread", exchange["cid"], "--json", "--events").stdout)
    assert doc["schema"] == "agentmail.history/1"
    assert set(doc) == {"schema", "conversation", "messages"}
    c = doc["conversation"]
    assert set(c) == {"id", "subject", "participants", "message_count", "first_at", "last_at",
                      "last_activity", "last_seq", "pending", "failed", "rejected"}
    assert (c["id"], c["subject"], c["participants"], c["message_count"]) == (
        exchange["cid"], "weather", [A, B], 2)
    assert all(isinstance(c[k], bool) for k in ("pending", "failed", "rejected"))
    assert isinstance(c["last_seq"], int) and c["last_activity"].endswith("+00:00")
    for m in doc["messages"]:
        assert set(m) == {"message_id", "time", "from", "to", "subject", "in_reply_to",
                          "references", "state", "attempts", "last_error", "payload", "copies",
                          "events"}
        assert isinstance(m["to"], list) and isinstance(m["references"], list)
        assert isinstance(m["attempts"], int) and m["time"].endswith("+00:00")
        assert {c["direction"] for c in m["copies"]} == {"in", "out"}
        for copy in m["copies"]:
            assert set(copy) == {"key", "account", "provider_id", "thread_id", "direction",
                                 "state", "attempts"}
        for e in m["events"]:
            assert set(e) == {"seq", "at", "account", "run_id", "message_key", "kind", "attempt",
                              "data"}
            assert "raw" not in e["data"]
    reply = doc["messages"][1]
    assert reply["in_reply_to"] == exchange["req"].message_id
    assert reply["payload"] == {"a": "no rain"} and reply["state"] == "acked"
    fetched = next(e for e in doc["messages"][0]["events"] if e["kind"] == "fetched")
    assert fetched["data"]["raw_chars"] > 0
    without = json.loads(_history(db, "--thread", exchange["cid"], "--json").stdout)
    assert "events" not in without["messages"][0]
    full = json.loads(_history(db, "--thread", exchange["cid"], "--json", "--events",
                               "--full").stdout)
    assert any("raw" in e["data"] for e in full["messages"][0]["events"])


def test_an_unknown_id_is_a_clear_error(db, exchange):
    result = _history(db, "--thread", "<nobody@nowhere>")
    assert result.exit_code == 1
    assert "no conversation matches '<nobody@nowhere>'" in result.output
    assert "Traceback" not in result.output


def test_an_ambiguous_thread_id_lists_the_candidates(db, mail):
    # Gmail put two unrelated requests in one thread (it threads by subject too).
    first, second = mail.request(A, [B], subject="status"), mail.request(C, [B], subject="status")
    k1, k2 = mail.deliver(first, B), mail.deliver(second, B)
    with mail.journal.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE messages SET thread_id = 'Tshared' WHERE key IN (?, ?)",
                             (k1, k2))
    result = _history(db, "--thread", "Tshared")
    assert result.exit_code == 1
    assert "'Tshared' is ambiguous: it matches 2 conversations" in result.output
    for message_id in (first.message_id, second.message_id):
        assert conv.resolve_one(mail.journal, message_id) in result.output


def test_the_conversation_of_a_rejected_message(db, mail):
    req = mail.request(C, [A], subject="spam?", payload={"buy": "now"})
    key = mail.deliver(req, A)
    mail.step(ev.REJECTED, key, reason="sender_not_allowed", details={"sender": C})
    doc = json.loads(_history(db, "--thread", req.message_id, "--json", "--events").stdout)
    assert doc["conversation"]["rejected"] and not doc["conversation"]["pending"]
    [message] = doc["messages"]
    assert (message["state"], message["last_error"], message["attempts"]) == (
        "rejected", "sender_not_allowed", 0)
    assert [e["kind"] for e in message["events"]] == ["sent", "fetched", "rejected"]
    text = _history(db, "--thread", req.message_id).stdout
    assert "rejected, 0 attempts — sender_not_allowed" in text


def test_the_conversation_of_a_dead_lettered_message(db, mail):
    req = mail.request(B, [A], subject="crash me")
    key = mail.deliver(req, A)
    for attempt in (1, 2):
        mail.step(ev.CLAIMED, key, attempt=attempt, lease_until="2026-11-01T13:00:00+00:00")
        mail.step(ev.FAILED, key, attempt=attempt, stage="handler", error_class="ValueError",
                  error="bad payload", retryable=True, traceback="…")
        if attempt == 1:
            mail.step(ev.RELEASED, key, next_attempt_at="2026-11-01T12:30:00+00:00")
    mail.step(ev.DEAD_LETTERED, key, reason="max_attempts")
    doc = json.loads(_history(db, "--thread", key, "--json", "--events").stdout)
    assert doc["conversation"]["failed"] and not doc["conversation"]["pending"]
    [message] = doc["messages"]
    assert (message["state"], message["attempts"]) == ("dead_lettered", 2)
    assert message["last_error"] == "ValueError: bad payload"
    assert [e["kind"] for e in message["events"]] == [
        "sent", "fetched", "claimed", "failed", "released", "claimed", "failed", "dead_lettered"]
    text = _history(db, "--thread", key, "--events").stdout
    assert "dead_lettered, 2 attempts — ValueError: bad payload" in text
    assert "handler: ValueError: bad payload (retryable)" in text


def test_long_payloads_are_truncated_unless_full(db, mail):
    req = mail.request(A, [B], payload={"rows": list(range(100))})
    out = _history(db, "--thread", req.message_id).stdout
    assert "more lines (--full shows all)" in out and "99" not in out
    full = _history(db, "--thread", req.message_id, "--full").stdout
    assert "more lines" not in full and "99" in full


def test_threads_newest_activity_first_with_flags(db, mail):
    done = mail.request(A, [B], subject="done")
    mail.handle(mail.deliver(done, B))
    failing = mail.request(A, [C], subject="failing")
    kc = mail.deliver(failing, C)
    waiting = mail.request(B, [C], subject="waiting")
    mail.deliver(waiting, C)
    mail.step(ev.CLAIMED, kc, attempt=1, lease_until="2026-11-01T13:00:00+00:00")
    mail.step(ev.FAILED, kc, attempt=1, stage="handler", error_class="KeyError", error="x",
              retryable=True)
    mail.step(ev.RELEASED, kc, next_attempt_at="2026-11-01T13:00:00+00:00")

    doc = json.loads(run_cli("--db", db, "threads", "--json").stdout)
    assert doc["schema"] == "agentmail.threads/1"
    rows = [(c["subject"], c["pending"], c["failed"], c["rejected"], c["message_count"])
            for c in doc["conversations"]]
    assert rows == [("failing", True, True, False, 1), ("waiting", True, False, False, 1),
                    ("done", False, False, False, 1)]
    limited = json.loads(run_cli("--db", db, "threads", "--json", "--limit", "1").stdout)
    assert [c["subject"] for c in limited["conversations"]] == ["failing"]
    of_a = json.loads(run_cli("--db", db, "threads", "--json", "--email", A).stdout)
    assert [c["subject"] for c in of_a["conversations"]] == ["failing", "done"]
    text = run_cli("--db", db, "threads").stdout
    assert text.splitlines()[0].startswith("ID")
    assert "pending,failed" in text and "waiting" in text.splitlines()[2]


def test_threads_on_an_empty_journal(db, journal):
    result = run_cli("--db", db, "threads")
    assert result.exit_code == 0 and "no conversations yet" in result.output


def test_events_oldest_first_for_the_journal_a_message_and_a_conversation(db, mail, exchange):
    other = mail.request(C, [B], subject="unrelated")
    mail.deliver(other, B)
    everything = [json.loads(line) for line in
                  run_cli("--db", db, "events", "--json").stdout.splitlines()]
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs) and len(seqs) == mail.journal.event_count()
    assert all("raw" not in e["data"] for e in everything)

    of_thread = [json.loads(line) for line in run_cli(
        "--db", db, "events", "--thread", exchange["cid"], "--json").stdout.splitlines()]
    assert {e["data"].get("subject") for e in of_thread if e["kind"] == "fetched"} == {
        "weather", "Re: weather"}
    assert len(of_thread) == len(everything) - 2

    # A Message-ID names every copy of the message: A's sent event and B's steps.
    of_request = run_cli("--db", db, "events", "--message", exchange["req"].message_id)
    kinds = [line.split()[3] for line in of_request.stdout.splitlines()]
    assert kinds == ["sent", "fetched", "claimed", "processed", "sent", "acked"]
    of_key = run_cli("--db", db, "events", "--message", exchange["ka"]).stdout
    assert [line.split()[3] for line in of_key.splitlines()] == [
        "fetched", "claimed", "processed", "acked"]
    missing = run_cli("--db", db, "events", "--message", "<nope@x>")
    assert missing.exit_code == 1 and "no message matches" in missing.output
    both = run_cli("--db", db, "events", "--message", "x", "--thread", "y")
    assert both.exit_code == 2


def test_follow_yields_new_events_until_stopped(journal, mail, exchange):
    scope = conv.conversation_scope(journal, exchange["cid"])
    before = conv.last_seq(journal)
    polls = []

    def sleep(_seconds):
        # Between polls, the conversation gets a new message and an unrelated event arrives.
        polls.append(len(polls))
        if len(polls) == 1:
            mail.request(C, [B], subject="unrelated")
            req, reply = exchange["req"], exchange["reply"]
            mail.deliver(replace(reply, message_id="<more@agents.test>", in_reply_to=reply.message_id,
                                 references=(req.message_id, reply.message_id)), B)

    seen = list(conv.follow(journal, lambda: conv.conversation_scope(journal, exchange["cid"]),
                            after=before, interval=0.01, sleep=sleep,
                            stop=lambda: len(polls) >= 3))
    assert len(polls) == 3
    assert [e.kind for e in seen] == ["fetched"]
    assert seen[0].seq > before and seen[0].message_key not in scope.keys


def test_events_follow_prints_events_appended_while_it_runs(db, mail, exchange):
    before = mail.journal.event_count()
    timer = threading.Timer(0.3, lambda: mail.request(A, [C], subject="later"))
    timer.start()
    try:
        result = run_cli("--db", db, "events", "--follow", "--json", "--interval", "0.05",
                         "--timeout", "1.5", "--after", str(before))
    finally:
        timer.cancel()
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert json.loads(line)["data"]["subject"] == "later"
