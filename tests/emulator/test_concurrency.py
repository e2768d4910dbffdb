"""Parallel clients: no lost label updates, no lost sends, a consistent history."""

from __future__ import annotations

import threading

from agentmail.emulator.client import build_service
from agentmail.emulator.testing import encode, raw_message

THREADS = 6


def run_parallel(target, count=THREADS):
    errors = []

    def wrapper(index):
        try:
            target(index)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_parallel_label_changes_are_not_lost(new_account, emulator):
    bob = new_account("bob")
    mid = emulator.deliver(raw_message("x@example.com", bob.address, "shared"), bob.address)["id"]
    labels = [bob.users.labels().create(userId="me", body={"name": f"p{i}"}).execute()["id"]
              for i in range(THREADS)]

    def work(index):
        with build_service(emulator.url, bob.address) as svc:
            for _ in range(5):
                svc.users().messages().modify(userId="me", id=mid, body={
                    "addLabelIds": [labels[index]]}).execute()
                svc.users().messages().modify(userId="me", id=mid, body={
                    "removeLabelIds": [labels[index]]}).execute()
            svc.users().messages().modify(userId="me", id=mid, body={
                "addLabelIds": [labels[index]]}).execute()

    run_parallel(work)
    assert set(labels) <= set(bob.get(mid, "minimal")["labelIds"])
    history = bob.users.history().list(userId="me", startHistoryId="1", maxResults=500).execute()
    ids = [int(r["id"]) for r in history["history"]]
    assert ids == sorted(set(ids))
    # 1 message added + per thread 5 * (add + remove) + 1 add
    assert len(ids) == 1 + THREADS * 11


def test_parallel_senders_all_delivered(new_account, emulator):
    bob = new_account("bob")
    senders = [new_account(f"s{i}") for i in range(THREADS)]

    def work(index):
        sender = senders[index]
        with build_service(emulator.url, sender.address) as svc:
            for n in range(5):
                raw = raw_message(sender.address, bob.address, f"from {index} #{n}")
                svc.users().messages().send(userId="me", body={"raw": encode(raw)}).execute()

    run_parallel(work)
    assert len(bob.list()) == THREADS * 5
    assert bob.profile()["messagesTotal"] == THREADS * 5
    assert len(set(m["id"] for m in bob.list())) == THREADS * 5
