"""Two accounts exchanging mail: delivery, threading per mailbox, headers, profile, auth."""

from __future__ import annotations

import google.auth.exceptions
import pytest
from googleapiclient.errors import HttpError

from agentmail.emulator.client import build_service
from agentmail.emulator.testing import encode, raw_message


def test_threaded_conversation_between_two_accounts(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    first = alice.send(bob.address, "Lunch?", "Shall we?\n", message_id="<lunch-1@example.com>")
    assert first["labelIds"] == ["SENT"]
    assert first["threadId"] == first["id"]
    assert len(first["id"]) == 16 and int(first["id"], 16)

    [delivered] = bob.list("is:unread in:inbox")
    got = bob.get(delivered["id"])
    assert got["labelIds"] == ["INBOX", "UNREAD"]
    assert delivered["threadId"] == delivered["id"] != first["threadId"]  # per mailbox
    headers = [(h["name"], h["value"]) for h in got["payload"]["headers"]]
    assert headers[0][0] == "Authentication-Results"
    assert headers[0][1].startswith("mx.google.com;")
    for part in ("dkim=pass header.i=@example.com", "spf=pass", f"smtp.mailfrom={alice.address}",
                 "dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com"):
        assert part in headers[0][1]
    assert ("Message-ID", "<lunch-1@example.com>") in headers
    assert ("Subject", "Lunch?") in headers
    assert not any(name == "Authentication-Results" for name, _ in alice.headers(first["id"]))

    reply = bob.send(alice.address, "Re: Lunch?", "Yes!\n", thread_id=delivered["threadId"],
                     message_id="<lunch-2@example.com>", in_reply_to="<lunch-1@example.com>",
                     references="<lunch-1@example.com>")
    assert reply["threadId"] == delivered["threadId"]
    inbox = alice.list("in:inbox")
    assert [m["threadId"] for m in inbox] == [first["threadId"]]

    third = alice.send(bob.address, "RE: lunch?", "Noon.\n", thread_id=first["threadId"],
                       in_reply_to="<lunch-2@example.com>",
                       references="<lunch-1@example.com> <lunch-2@example.com>")
    assert third["threadId"] == first["threadId"]
    thread = bob.users.threads().get(userId="me", id=delivered["threadId"]).execute()
    assert len(thread["messages"]) == 3
    assert [m["labelIds"] for m in thread["messages"]] == [["INBOX", "UNREAD"], ["SENT"],
                                                          ["INBOX", "UNREAD"]]
    alice_thread = alice.users.threads().get(userId="me", id=first["threadId"],
                                             format="minimal").execute()
    assert len(alice_thread["messages"]) == 3
    assert "payload" not in alice_thread["messages"][0]


def test_unrelated_or_unreferenced_messages_start_new_threads(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    first = alice.send(bob.address, "Topic", message_id="<t-1@example.com>")
    # threadId given but no References: Gmail starts a new thread silently
    second = alice.send(bob.address, "Re: Topic", thread_id=first["threadId"])
    assert second["threadId"] != first["threadId"]
    # References but a different subject: new thread, also for the recipient
    third = alice.send(bob.address, "Other", thread_id=first["threadId"],
                       references="<t-1@example.com>", in_reply_to="<t-1@example.com>")
    assert third["threadId"] != first["threadId"]
    assert len({m["threadId"] for m in bob.list()}) == 3
    # same subject, matching reference: the recipient joins it without a threadId hint
    alice.send(bob.address, "Fwd: Topic", references="<t-1@example.com>")
    assert len({m["threadId"] for m in bob.list()}) == 3


def test_cc_and_bcc_delivery_and_bcc_removed(new_account):
    alice, bob, carol, dave = (new_account(n) for n in ("alice", "bob", "carol", "dave"))
    sent = alice.send(bob.address, "Hi all", cc=[carol.address], bcc=[dave.address])
    for rcpt in (bob, carol, dave):
        [msg] = rcpt.list()
        names = [n.lower() for n, _ in rcpt.headers(msg["id"])]
        assert "bcc" not in names
        assert "cc" in names
    assert "Bcc" in [n for n, _ in alice.headers(sent["id"])]  # the sender's copy keeps it


def test_message_id_added_when_missing_and_kept_when_given(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    sent = alice.send(bob.address, "No id")
    [(_, value)] = [h for h in alice.headers(sent["id"]) if h[0] == "Message-ID"]
    assert value.startswith("<") and value.endswith("@mail.gmail.com>")
    [got] = bob.list(f"rfc822msgid:{value}")
    assert [v for n, v in bob.headers(got["id"]) if n == "Message-ID"] == [value]


def test_mail_to_self_gets_sent_inbox_unread(new_account):
    alice = new_account("alice")
    sent = alice.send(alice.address, "Note to self")
    assert set(sent["labelIds"]) == {"SENT", "INBOX", "UNREAD"}
    assert len(alice.list()) == 1


def test_from_is_the_authenticated_account(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    raw = raw_message("Alice <someone-else@example.org>", bob.address, "Spoof")
    sent = alice.users.messages().send(userId="me", body={"raw": encode(raw)}).execute()
    assert ("From", f"Alice <{alice.address}>") in alice.headers(sent["id"])


def test_profile_counts_and_history_id(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    empty = alice.profile()
    assert empty["emailAddress"] == alice.address
    assert empty["messagesTotal"] == 0 and isinstance(empty["historyId"], str)
    alice.send(bob.address, "One")
    alice.send(bob.address, "Two")
    profile = alice.profile()
    assert profile["messagesTotal"] == 2 and profile["threadsTotal"] == 2
    assert int(profile["historyId"]) > int(empty["historyId"])


def test_user_id_may_be_own_address_but_not_another(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    assert alice.users.getProfile(userId=alice.address).execute()["emailAddress"] == alice.address
    with pytest.raises(HttpError) as info:
        alice.users.getProfile(userId=bob.address).execute()
    assert info.value.status_code == 403
    assert info.value.reason == f"Delegation denied for {bob.address}"


def test_bad_token_is_401_and_the_client_cannot_refresh(emulator):
    with build_service(emulator.url, "not-an-address") as svc:
        with pytest.raises(google.auth.exceptions.RefreshError):
            svc.users().getProfile(userId="me").execute()
