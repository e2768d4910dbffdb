"""The IMAP/SMTP adapter against real Dovecot + Postfix: the port's verbs."""

from __future__ import annotations

import threading
import time

import pytest

from agentmail import errors
from agentmail.mailbox.imap import ImapMailbox, keyword
from agentmail.mailbox.imap_account import ImapAccount
from tests.imap import servers
from tests.imap.conftest import make_account


def _mail(frm: str, to: str, n: int, extra: str = "") -> bytes:
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: t{n}\r\nMessage-ID: <m{n}.{time.time_ns()}@x>\r\n"
            f"{extra}\r\n{{\"n\": {n}}}\r\n").encode()


def test_changes_fetch_marks_and_sent(mail_servers: servers.MailServers,
                                      account: ImapAccount) -> None:
    with ImapMailbox(account) as box:
        _, start = box.profile()
        assert box.changes_since(start).added == ()
        mail_servers.deliver(_mail("a@example.test", account.address, 1), account.address)
        mail_servers.deliver(_mail("a@example.test", account.address, 2), account.address)
        ch = box.changes_since(start)
        assert len(ch.added) == 2
        assert box.changes_since(ch.history_id).added == ()
        raws = box.get_raw([r.id for r in ch.added])
        assert [b"t1" in r.raw for r in raws] == [True, False]
        assert "UNREAD" in raws[0].label_ids
        box.ensure_labels(["agent-processing", "agent-done"])
        box.modify([ch.added[0].id], add=["agent-processing"])
        assert [r.id for r in box.list_labelled("agent-processing", 10)] == [ch.added[0].id]
        box.modify([ch.added[0].id], add=["agent-done"], remove=["agent-processing", "UNREAD"])
        again = box.get_raw([ch.added[0].id])[0]
        assert "agent-done" in again.label_ids and "UNREAD" not in again.label_ids
        # a person's \Seen is no ack: the full sync still lists the second message
        box.modify([ch.added[1].id], remove=["UNREAD"])
        assert [r.id for r in box.list_unread(10).added] == [ch.added[1].id]


def test_send_reaches_recipient_and_sent_copy(mail_servers: servers.MailServers,
                                              account: ImapAccount) -> None:
    peer = make_account(mail_servers)
    raw = _mail(account.address, peer.address, 3, "X-Agentmail-Outbox-Id: ob-3\r\n")
    mid = raw.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    with ImapMailbox(account) as box, ImapMailbox(peer) as other:
        point = other.history_point()
        assert box.find_sent(mid, "ob-3", None) is None
        box.send(raw)
        assert box.find_sent(mid, "ob-3", None) is not None
        assert box.find_sent("<nope@x>", "ob-3", None) is not None  # by outbox id
        deadline = time.monotonic() + 5
        while not other.changes_since(point).added and time.monotonic() < deadline:
            time.sleep(0.05)
        got = other.get_raw([other.changes_since(point).added[0].id])[0]
        assert b"Authentication-Results: " + servers.AUTHSERV_ID.encode() in got.raw


def test_idle_wakes_within_a_second_and_a_half(mail_servers: servers.MailServers,
                                               account: ImapAccount) -> None:
    with ImapMailbox(account) as box:
        box.history_point()
        sent_at: list[float] = []

        def later() -> None:
            time.sleep(0.3)
            sent_at.append(time.monotonic())
            mail_servers.deliver(_mail("a@example.test", account.address, 4), account.address)
        t = threading.Thread(target=later)
        t.start()
        assert box.wait_for_mail(10)
        latency = time.monotonic() - sent_at[0]
        t.join()
        assert latency < 1.5, latency


def test_wrong_password_and_bad_cert_are_clear(mail_servers: servers.MailServers,
                                               account: ImapAccount) -> None:
    bad = ImapAccount(**{**account.__dict__, "_password": "wrong"})
    with pytest.raises(errors.AuthError, match="refused the login"):
        ImapMailbox(bad).connect()
    untrusted = ImapAccount(**{**account.__dict__, "tls_ca_file": None})
    with pytest.raises(errors.MailboxUnavailable, match="does not verify"):
        ImapMailbox(untrusted).connect()
    closed = ImapAccount(**{**account.__dict__, "imap_port": servers.free_port()})
    with pytest.raises(errors.MailboxUnavailable, match="cannot reach"):
        ImapMailbox(closed).connect()


def test_keyword_names() -> None:
    assert keyword("agent-processing") == "$AgentProcessing"
    assert keyword("agent-done") == "$AgentDone"
