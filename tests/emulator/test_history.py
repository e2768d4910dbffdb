"""history.list after sends, label changes, trash and delete; paging; filters; 404 on expiry."""

from __future__ import annotations

import pytest
from googleapiclient.errors import HttpError

from agentmail.emulator.testing import admin, raw_message


def history(account, start, **kw):
    return account.users.history().list(userId="me", startHistoryId=start, **kw).execute()


def test_history_records_every_change(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    start = bob.profile()["historyId"]
    alice.send(bob.address, "one")
    [msg] = bob.list()
    mid = msg["id"]
    bob.modify(mid, add=["STARRED"], remove=["UNREAD"])
    bob.users.messages().trash(userId="me", id=mid).execute()
    bob.users.messages().delete(userId="me", id=mid).execute()

    page = history(bob, start)
    records = page["history"]
    ids = [int(r["id"]) for r in records]
    assert ids == sorted(ids) and all(i > int(start) for i in ids)
    assert page["historyId"] == str(ids[-1]) == bob.profile()["historyId"]
    kinds = [next(k for k in r if k not in ("id", "messages")) for r in records]
    assert kinds == ["messagesAdded", "labelsAdded", "labelsRemoved", "labelsAdded",
                     "messagesDeleted"]
    added = records[0]["messagesAdded"][0]["message"]
    assert added == {"id": mid, "threadId": msg["threadId"], "labelIds": ["INBOX", "UNREAD"]}
    assert records[1]["labelsAdded"][0]["labelIds"] == ["STARRED"]
    assert records[2]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    assert records[3]["labelsAdded"][0]["labelIds"] == ["TRASH"]
    assert records[4]["messagesDeleted"][0]["message"]["id"] == mid
    assert all(r["messages"] == [{"id": mid, "threadId": msg["threadId"]}] for r in records)


def test_history_filters_and_empty_answer(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    start = bob.profile()["historyId"]
    assert history(bob, start) == {"historyId": start}
    alice.send(bob.address, "one")
    [msg] = bob.list()
    bob.modify(msg["id"], add=["STARRED"])
    only_added = history(bob, start, historyTypes=["messageAdded"])["history"]
    assert [list(r)[-1] for r in only_added] == ["messagesAdded"]
    starred = history(bob, start, labelId="STARRED")["history"]
    assert len(starred) == 1 and "labelsAdded" in starred[0]
    inbox = history(bob, start, labelId="INBOX", historyTypes=["messageAdded"])["history"]
    assert len(inbox) == 1
    sent = history(alice, alice.profile()["historyId"])  # nothing new for alice
    assert "history" not in sent


def test_history_paging(new_account, emulator):
    bob = new_account("bob")
    start = bob.profile()["historyId"]
    for i in range(7):
        emulator.deliver(raw_message("x@example.com", bob.address, f"n{i}"), bob.address)
    seen, token = [], None
    while True:
        page = history(bob, start, maxResults=3, pageToken=token)
        seen += [r["id"] for r in page["history"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert len(seen) == 7 and seen == sorted(seen, key=int)


def test_history_404_after_admin_expiry(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    start = bob.profile()["historyId"]
    alice.send(bob.address, "one")
    emulator.expire_history(bob.address)
    with pytest.raises(HttpError) as info:
        history(bob, start)
    assert info.value.status_code == 404
    assert info.value.error_details[0]["reason"] == "notFound"
    fresh = bob.profile()["historyId"]
    alice.send(bob.address, "two")
    assert len(history(bob, fresh)["history"]) == 1
    # the same through the admin endpoint
    admin(emulator.url, "history/expire", {"email": bob.address}, method="POST")
    with pytest.raises(HttpError):
        history(bob, fresh)
    assert len(history(alice, alice.profile()["historyId"]).get("history", [])) == 0


def test_history_retention_keeps_last_n(private_emulator, account_on):
    emu = private_emulator(history_retention=3)
    bob = account_on(emu, "bob")
    start = bob.profile()["historyId"]
    for i in range(2):
        emu.deliver(raw_message("x@example.com", bob.address, f"n{i}"), bob.address)
    assert len(history(bob, start)["history"]) == 2
    for i in range(3):
        emu.deliver(raw_message("x@example.com", bob.address, f"m{i}"), bob.address)
    with pytest.raises(HttpError) as info:
        history(bob, start)
    assert info.value.status_code == 404
    recent = int(bob.profile()["historyId"]) - 3
    assert len(history(bob, str(recent))["history"]) == 3


def test_history_bad_start(new_account):
    bob = new_account("bob")
    with pytest.raises(HttpError) as info:
        history(bob, "abc")
    assert info.value.status_code == 400
