"""messages.get formats, attachments, modify, trash, delete, insert/import, labels, threads."""

from __future__ import annotations

import base64

import pytest
from googleapiclient.errors import HttpError

from agentmail.emulator.testing import decode, encode, raw_message


def status_of(call):
    with pytest.raises(HttpError) as info:
        call.execute()
    return info.value.status_code, info.value.reason


@pytest.fixture
def pair(new_account):
    return new_account("alice"), new_account("bob")


def test_get_formats(pair):
    alice, bob = pair
    raw = raw_message(alice.address, bob.address, "Formats", "It's <b>body</b> & more\n",
                      attachments=[("a.txt", b"attached bytes", "text/plain")])
    sent = alice.users.messages().insert(
        userId="me", body={"raw": encode(raw), "labelIds": ["INBOX"]}).execute()
    mid = sent["id"]

    minimal = alice.get(mid, "minimal")
    assert set(minimal) == {"id", "threadId", "labelIds", "snippet", "sizeEstimate",
                            "historyId", "internalDate"}
    assert isinstance(minimal["historyId"], str) and minimal["internalDate"].isdigit()
    assert minimal["snippet"] == "It&#39;s &lt;b&gt;body&lt;/b&gt; &amp; more"

    raw_form = alice.get(mid, "raw")
    assert "payload" not in raw_form
    assert len(raw_form["raw"]) % 4 == 0  # padded
    assert base64.urlsafe_b64decode(raw_form["raw"]) == raw

    full = alice.get(mid)
    payload = full["payload"]
    assert payload["partId"] == "" and payload["mimeType"] == "multipart/mixed"
    assert payload["body"] == {"size": 0}
    assert [h["name"] for h in payload["headers"]][:3] == ["From", "To", "Subject"]
    text, attachment = payload["parts"]
    assert (text["partId"], attachment["partId"]) == ("0", "1")
    assert "=" not in text["body"]["data"]  # unpadded
    assert decode(text["body"]["data"]) == b"It's <b>body</b> & more\r\n"
    assert attachment["filename"] == "a.txt"
    assert attachment["body"]["size"] == len(b"attached bytes")
    att = alice.users.messages().attachments().get(
        userId="me", messageId=mid, id=attachment["body"]["attachmentId"]).execute()
    assert decode(att["data"]) == b"attached bytes" and att["size"] == 14

    meta = alice.get(mid, "metadata", metadataHeaders=["subject", "From"])
    assert meta["payload"]["headers"] == [{"name": "From", "value": alice.address},
                                          {"name": "Subject", "value": "Formats"}]
    assert "parts" not in meta["payload"]


def test_nested_part_ids(pair):
    alice, _ = pair
    raw = (b"From: a@example.com\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
           b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
           b"--inner\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
           b"--inner\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--inner--\r\n"
           b"--outer--\r\n")
    mid = alice.users.messages().insert(userId="me", body={"raw": encode(raw)}).execute()["id"]
    payload = alice.get(mid)["payload"]
    alt = payload["parts"][0]
    assert alt["partId"] == "0" and [p["partId"] for p in alt["parts"]] == ["0.0", "0.1"]
    assert alice.get(mid, "minimal")["snippet"] == "plain"


def test_modify_and_label_errors(pair):
    alice, bob = pair
    mid = alice.send(bob.address, "x")["id"]
    out = alice.modify(mid, add=["STARRED", "IMPORTANT"])
    assert set(out) == {"id", "threadId", "labelIds"}
    assert set(out["labelIds"]) == {"SENT", "STARRED", "IMPORTANT"}
    assert set(alice.modify(mid, remove=["IMPORTANT"])["labelIds"]) == {"SENT", "STARRED"}
    msgs = alice.users.messages()
    assert status_of(msgs.modify(userId="me", id=mid, body={"addLabelIds": ["Label_999"]})) == (
        400, "Invalid label: Label_999")
    assert status_of(msgs.modify(userId="me", id=mid, body={"addLabelIds": ["SENT"]}))[0] == 400
    assert status_of(msgs.modify(userId="me", id=mid, body={"addLabelIds": ["DRAFT"]}))[0] == 400
    too_many = {"addLabelIds": ["STARRED"] * 101}
    assert status_of(msgs.modify(userId="me", id=mid, body=too_many))[0] == 400
    assert status_of(msgs.modify(userId="me", id="0123456789abcdef", body={}))[0] == 404
    assert status_of(msgs.modify(userId="me", id="not-an-id!", body={})) == (
        400, "Invalid id value")
    # a message of another mailbox is "not found" here
    [delivered] = bob.list()
    assert status_of(msgs.get(userId="me", id=delivered["id"]))[0] == 404


def test_batch_modify_and_batch_delete(pair, emulator):
    alice, bob = pair
    ids = [emulator.deliver(raw_message(alice.address, bob.address, f"m{i}"), bob.address)["id"]
           for i in range(5)]
    result = bob.users.messages().batchModify(
        userId="me", body={"ids": [*ids, "0123456789abcdef"], "removeLabelIds": ["UNREAD"],
                           "addLabelIds": ["STARRED"]}).execute()
    assert result == ""  # empty 204 body
    assert {m["id"] for m in bob.list("is:starred is:read")} == set(ids)
    too_many = {"ids": ["0123456789abcdef"] * 1001, "addLabelIds": ["STARRED"]}
    assert status_of(bob.users.messages().batchModify(userId="me", body=too_many))[0] == 400
    assert bob.users.messages().batchDelete(userId="me", body={"ids": ids[:2]}).execute() == ""
    assert {m["id"] for m in bob.list()} == set(ids[2:])


def test_trash_untrash_delete(pair):
    alice, bob = pair
    mid = alice.send(bob.address, "bye")["id"]
    trashed = alice.users.messages().trash(userId="me", id=mid).execute()
    assert "TRASH" in trashed["labelIds"]
    assert alice.list() == []
    back = alice.users.messages().untrash(userId="me", id=mid).execute()
    assert "TRASH" not in back["labelIds"]
    assert alice.users.messages().delete(userId="me", id=mid).execute() == ""
    assert status_of(alice.users.messages().get(userId="me", id=mid))[0] == 404
    assert status_of(alice.users.messages().delete(userId="me", id=mid))[0] == 404


def test_insert_and_import(pair):
    alice, bob = pair
    raw = raw_message("stranger@example.net", bob.address, "Injected",
                      headers={"Authentication-Results": "mx.google.com; dkim=fail",
                               "Date": "Tue, 02 Jan 2024 10:00:00 +0000"})
    inserted = bob.users.messages().insert(
        userId="me", body={"raw": encode(raw), "labelIds": ["INBOX", "UNREAD"]}).execute()
    assert inserted["labelIds"] == ["INBOX", "UNREAD"]
    assert bob.raw(inserted["id"]) == raw  # no header added
    assert int(bob.get(inserted["id"], "minimal")["internalDate"]) > 1704189600000
    imported = bob.users.messages().import_(userId="me", body={"raw": encode(raw)}).execute()
    assert "labelIds" not in imported or imported["labelIds"] == []
    assert bob.get(imported["id"], "minimal")["internalDate"] == "1704189600000"
    received = bob.users.messages().import_(
        userId="me", internalDateSource="receivedTime", body={"raw": encode(raw)}).execute()
    assert int(bob.get(received["id"], "minimal")["internalDate"]) > 1704189600000
    own = raw_message(alice.address, bob.address, "mine")
    mine = alice.users.messages().insert(userId="me", body={"raw": encode(own)}).execute()
    assert mine["labelIds"] == ["SENT"]
    bad = bob.users.messages().insert(userId="me", body={"raw": encode(raw),
                                                         "labelIds": ["NOPE"]})
    assert status_of(bad) == (400, "Invalid label: NOPE")


def test_labels_crud(pair):
    alice, _ = pair
    labels = alice.users.labels()
    system = {lbl["id"] for lbl in labels.list(userId="me").execute()["labels"]}
    assert {"INBOX", "SENT", "TRASH", "SPAM", "UNREAD", "STARRED"} <= system
    created = labels.create(userId="me", body={"name": "agent/failed"}).execute()
    assert created["id"].startswith("Label_") and created["type"] == "user"
    for clash in ("Agent Failed", "agent-failed", "AGENT/FAILED", "inbox"):
        assert status_of(labels.create(userId="me", body={"name": clash}))[0] == 409, clash
    assert status_of(labels.create(userId="me", body={"name": " "}))[0] == 400
    got = labels.get(userId="me", id=created["id"]).execute()
    assert got["messagesTotal"] == 0 and got["threadsUnread"] == 0
    patched = labels.patch(userId="me", id=created["id"], body={"name": "agent/done"}).execute()
    assert patched["name"] == "agent/done" and patched["labelListVisibility"] == "labelShow"
    updated = labels.update(userId="me", id=created["id"],
                            body={"name": "agent/ok", "labelListVisibility": "labelHide"}
                            ).execute()
    assert updated["labelListVisibility"] == "labelHide"
    other = labels.create(userId="me", body={"name": "other"}).execute()
    assert other["id"] != created["id"]
    assert status_of(labels.patch(userId="me", id=other["id"], body={"name": "Agent OK"}))[0] \
        == 409
    assert labels.delete(userId="me", id=created["id"]).execute() == ""
    assert status_of(labels.get(userId="me", id=created["id"]))[0] == 404
    assert status_of(labels.delete(userId="me", id="INBOX"))[0] == 400
    inbox = labels.get(userId="me", id="INBOX").execute()
    assert inbox["type"] == "system" and "messagesTotal" in inbox


def test_label_counts_and_delete_removes_from_messages(pair, emulator):
    alice, bob = pair
    label = bob.users.labels().create(userId="me", body={"name": "work"}).execute()
    ids = [emulator.deliver(raw_message(alice.address, bob.address, f"w{i}"), bob.address)["id"]
           for i in range(3)]
    for mid in ids:
        bob.modify(mid, add=[label["id"]])
    bob.modify(ids[0], remove=["UNREAD"])
    got = bob.users.labels().get(userId="me", id=label["id"]).execute()
    assert (got["messagesTotal"], got["messagesUnread"]) == (3, 2)
    bob.users.labels().delete(userId="me", id=label["id"]).execute()
    assert all(label["id"] not in bob.get(mid, "minimal")["labelIds"] for mid in ids)


def test_threads_modify_trash_delete(pair):
    alice, bob = pair
    first = alice.send(bob.address, "T", message_id="<th-1@example.com>")
    [got] = bob.list()
    bob.send(alice.address, "Re: T", thread_id=got["threadId"], references="<th-1@example.com>",
             in_reply_to="<th-1@example.com>")
    threads = alice.users.threads()
    out = threads.modify(userId="me", id=first["threadId"],
                         body={"addLabelIds": ["STARRED"]}).execute()
    assert out["id"] == first["threadId"] and len(out["messages"]) == 2
    assert all("STARRED" in m["labelIds"] for m in out["messages"])
    threads.trash(userId="me", id=first["threadId"]).execute()
    assert alice.list() == []
    threads.untrash(userId="me", id=first["threadId"]).execute()
    assert len(alice.list()) == 2
    assert (alice.profile()["messagesTotal"], alice.profile()["threadsTotal"]) == (2, 1)
    assert threads.delete(userId="me", id=first["threadId"]).execute() == ""
    assert (alice.profile()["messagesTotal"], alice.profile()["threadsTotal"]) == (0, 0)
    assert status_of(threads.get(userId="me", id=first["threadId"]))[0] == 404
