"""The Mailbox contract: what every adapter must do, whatever its backend.

Subclass :class:`MailboxContract` and provide the fixtures ``make_mailbox``
(address -> open Mailbox, closed by the fixture), ``deliver`` (put a message into
an address's inbox as new mail) and ``expire_history`` (make an address's old
history ids invalid). Addresses are unique per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from agentmail import errors
from agentmail.mailbox import OUTBOX_ID_HEADER, Mailbox, send_exactly_once

MakeMailbox = Callable[[str], Mailbox]
Deliver = Callable[[bytes, str], None]


def new_address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def compose(sender: str, to: str, subject: str, *, message_id: str | None = None,
            outbox_id: str | None = None, body: str = '{"hello": "world"}') -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="agents.example.com")
    if outbox_id:
        msg[OUTBOX_ID_HEADER] = outbox_id
    msg.set_content(body)
    return msg.as_bytes()


def user_labels(label_ids: tuple[str, ...]) -> list[str]:
    """The ids of user labels (system label ids are upper-case names)."""
    return [label for label in label_ids if not label.isupper()]


def subject_of(raw: bytes) -> str:
    from email import message_from_bytes

    return str(message_from_bytes(raw)["Subject"])


class MailboxContract:
    """Behaviour every Mailbox adapter shares (see the module docstring)."""

    @pytest.fixture
    def alice(self, make_mailbox: MakeMailbox) -> Mailbox:
        return make_mailbox(new_address("alice"))

    @pytest.fixture
    def bob(self, make_mailbox: MakeMailbox) -> Mailbox:
        return make_mailbox(new_address("bob"))

    def test_profile_names_the_owner(self, alice: Mailbox) -> None:
        email, history_id = alice.profile()
        assert email == alice.address
        assert history_id and int(history_id) >= 0
        assert alice.history_point() == history_id

    def test_full_sync_then_incremental_changes(self, bob: Mailbox, deliver: Deliver) -> None:
        for n in range(3):
            deliver(compose("carol@example.com", bob.address, f"old {n}"), bob.address)
        full = bob.list_unread(limit=100)
        assert len(full.added) == 3
        raws = bob.get_raw([ref.id for ref in full.added])
        assert [subject_of(m.raw) for m in raws] == ["old 0", "old 1", "old 2"]  # oldest first

        assert bob.changes_since(full.history_id).added == ()
        for n in range(2):
            deliver(compose("carol@example.com", bob.address, f"new {n}"), bob.address)
        changes = bob.changes_since(full.history_id)
        assert len(changes.added) == 2
        assert [subject_of(m.raw) for m in bob.get_raw([r.id for r in changes.added])] == [
            "new 0", "new 1"]
        assert int(changes.history_id) > int(full.history_id)
        assert bob.changes_since(changes.history_id).added == ()

    def test_full_sync_is_bounded_to_the_newest(self, bob: Mailbox, deliver: Deliver) -> None:
        for n in range(5):
            deliver(compose("carol@example.com", bob.address, f"m{n}"), bob.address)
        limited = bob.list_unread(limit=2)
        assert [subject_of(m.raw) for m in bob.get_raw([r.id for r in limited.added])] == [
            "m3", "m4"]

    def test_read_mail_still_counts_as_a_change(self, bob: Mailbox, deliver: Deliver) -> None:
        point = bob.history_point()
        deliver(compose("carol@example.com", bob.address, "opened by a person"), bob.address)
        (ref,) = bob.changes_since(point).added
        bob.modify([ref.id], remove=["UNREAD"])  # a person opened it in Gmail
        assert [r.id for r in bob.changes_since(point).added] == [ref.id]
        assert bob.list_unread(limit=10).added == ()

    def test_our_sent_mail_is_not_new_mail(self, alice: Mailbox, bob: Mailbox) -> None:
        point = alice.history_point()
        alice.send(compose(alice.address, bob.address, "outgoing"))
        assert alice.changes_since(point).added == ()

    def test_stale_history_raises_history_expired(self, bob: Mailbox, deliver: Deliver,
                                                  expire_history: Callable[[str], None]) -> None:
        point = bob.history_point()
        deliver(compose("carol@example.com", bob.address, "x"), bob.address)
        expire_history(bob.address)
        with pytest.raises(errors.HistoryExpired) as caught:
            bob.changes_since(point)
        assert isinstance(caught.value, errors.MailboxRejected)
        assert caught.value.__cause__ is not None

    def test_get_raw_keeps_input_order_and_omits_missing(self, bob: Mailbox,
                                                         deliver: Deliver) -> None:
        for n in range(3):
            deliver(compose("carol@example.com", bob.address, f"s{n}"), bob.address)
        refs = bob.list_unread(limit=10).added
        ids = [refs[2].id, "0123456789abcdef", refs[0].id, refs[1].id]
        raws = bob.get_raw(ids)
        assert [m.id for m in raws] == [refs[2].id, refs[0].id, refs[1].id]
        first = raws[0]
        assert subject_of(first.raw) == "s2"
        assert first.thread_id == refs[2].thread_id
        assert {"INBOX", "UNREAD"} <= set(first.label_ids)
        assert first.internal_date_ms > 0 and first.history_id
        assert b"hello" in first.raw
        assert bob.get_raw([]) == []

    def test_ensure_labels_and_modify(self, bob: Mailbox, deliver: Deliver) -> None:
        for n in range(3):
            deliver(compose("carol@example.com", bob.address, f"l{n}"), bob.address)
        ids = [r.id for r in bob.list_unread(limit=10).added]
        bob.ensure_labels(["agent-processing", "agent-done"])
        bob.ensure_labels(["Agent Processing", "agent/done"])  # the same labels to Gmail
        bob.modify(ids[:1], add=["agent-processing"])
        bob.modify(ids, add=["agent-done"], remove=["UNREAD", "agent-processing"])
        done = None
        for message in bob.get_raw(ids):
            assert "UNREAD" not in message.label_ids and "INBOX" in message.label_ids
            (label,) = user_labels(message.label_ids)  # agent-done; agent-processing is gone
            assert done in (None, label)
            done = label
        assert bob.list_unread(limit=10).added == ()
        bob.modify([], add=["agent-done"])  # nothing to do
        bob.modify(["0123456789abcdef"], add=["agent-done"])  # deleted meanwhile: nothing

    def test_modify_resolves_unknown_names_by_creating_them(self, bob: Mailbox,
                                                            deliver: Deliver) -> None:
        deliver(compose("carol@example.com", bob.address, "y"), bob.address)
        (ref,) = bob.list_unread(limit=10).added
        bob.modify([ref.id], add=["agent-rejected"])
        (message,) = bob.get_raw([ref.id])
        assert len(user_labels(message.label_ids)) == 1

    def test_list_labelled_newest_first(self, bob: Mailbox, deliver: Deliver) -> None:
        for n in range(4):
            deliver(compose("carol@example.com", bob.address, f"p{n}"), bob.address)
        refs = bob.list_unread(limit=10).added  # oldest first
        bob.modify([refs[0].id, refs[2].id], add=["agent-processing"])
        assert bob.list_labelled("agent-processing", 10) == [refs[2], refs[0]]
        assert bob.list_labelled("Agent Processing", 1) == [refs[2]]
        assert bob.list_labelled("agent-done", 10) == []

    def test_send_and_find_sent_by_message_id(self, alice: Mailbox, bob: Mailbox) -> None:
        mid = make_msgid(domain="agents.example.com")
        point = alice.history_point()
        ref = alice.send(compose(alice.address, bob.address, "hi bob", message_id=mid,
                                 outbox_id="out-1"))
        assert ref.id and ref.thread_id
        assert alice.find_sent(mid, "out-1", point) == ref
        assert alice.find_sent(mid, "out-1", None) == ref
        assert alice.find_sent(make_msgid(domain="agents.example.com"), "out-2", point) is None
        (received,) = bob.get_raw([r.id for r in bob.list_unread(limit=10).added])
        assert subject_of(received.raw) == "hi bob"

    def test_reply_keeps_the_thread(self, alice: Mailbox, bob: Mailbox) -> None:
        mid = make_msgid(domain="agents.example.com")
        first = alice.send(compose(alice.address, bob.address, "topic", message_id=mid))
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = alice.address, bob.address, "Re: topic"
        msg["Message-ID"] = make_msgid(domain="agents.example.com")
        msg["In-Reply-To"] = msg["References"] = mid
        msg.set_content("again")
        second = alice.send(msg.as_bytes(), thread_id=first.thread_id)
        assert second.thread_id == first.thread_id

    def test_send_exactly_once_sends_once(self, alice: Mailbox, bob: Mailbox) -> None:
        mid = make_msgid(domain="agents.example.com")
        raw = compose(alice.address, bob.address, "once", message_id=mid, outbox_id="out-9")
        points: list[str] = []
        ref, already = send_exactly_once(alice, raw, None, mid, "out-9", sleep=_no_sleep,
                                         record_point=points.append)
        assert not already
        assert len(points) == 1 and int(points[0]) <= int(alice.history_point())
        # reconciliation after a crash: the journal has the history point, not `sent`
        again, already = send_exactly_once(alice, raw, None, mid, "out-9", sleep=_no_sleep,
                                           since_history_id="1")
        assert (again, already) == (ref, True)
        assert len(bob.list_unread(limit=10).added) == 1

    def test_closing_twice_is_harmless(self, make_mailbox: MakeMailbox) -> None:
        with make_mailbox(new_address("dora")) as box:
            box.profile()
        box.close()


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"nothing should have failed, yet it slept {seconds} s")
