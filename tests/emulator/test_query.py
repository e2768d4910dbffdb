"""messages.list / threads.list: each `q` operator, labelIds, paging, spam/trash, long queries."""

from __future__ import annotations

import time

import pytest
from googleapiclient.errors import HttpError

from agentmail.emulator.testing import encode, raw_message


@pytest.fixture
def mailbox(new_account, emulator):
    """bob's mailbox with a few varied messages; returns (bob, {name: id})."""
    alice, carol, bob = new_account("alice"), new_account("carol"), new_account("bob")
    ids = {}
    ids["plain"] = alice.send(bob.address, "Quarterly report", "numbers inside\n",
                              message_id="<report-1@example.com>")
    ids["cc"] = carol.send(alice.address, "Party", "bring snacks\n", cc=[bob.address])
    ids["attach"] = alice.send(bob.address, "Invoice", "see attached\n",
                               attachments=[("invoice.pdf", b"%PDF-1.4 fake", "application/pdf")])
    old = raw_message(carol.address, bob.address, "Old news", "from the archive\n",
                      headers={"Date": "Mon, 01 Jan 2024 12:00:00 +0000"})
    ids["old"] = bob.users.messages().import_(
        userId="me", body={"raw": encode(old), "labelIds": ["INBOX"]}).execute()
    by_subject = {}
    for ref in bob.list("in:anywhere"):
        subject = next(v for n, v in bob.headers(ref["id"]) if n == "Subject")
        by_subject[subject] = ref["id"]
    names = {"plain": "Quarterly report", "cc": "Party", "attach": "Invoice", "old": "Old news"}
    return bob, {k: by_subject[v] for k, v in names.items()}


def ids_for(account, q, **kw):
    return {m["id"] for m in account.list(q, **kw)}


def test_status_and_location_operators(mailbox):
    bob, ids = mailbox
    assert ids_for(bob, "is:unread") == {ids["plain"], ids["cc"], ids["attach"]}
    assert ids_for(bob, "is:read") == {ids["old"]}
    bob.modify(ids["plain"], add=["STARRED"])
    assert ids_for(bob, "is:starred") == {ids["plain"]}
    assert ids_for(bob, "in:inbox") == set(ids.values())
    assert ids_for(bob, "in:sent") == set()
    bob.users.messages().trash(userId="me", id=ids["cc"]).execute()
    assert ids["cc"] not in ids_for(bob, "")
    assert ids_for(bob, "in:trash") == {ids["cc"]}
    assert ids["cc"] in ids_for(bob, "in:anywhere")
    assert ids["cc"] in ids_for(bob, "", includeSpamTrash=True)


def test_label_operators_fold_names(mailbox):
    bob, ids = mailbox
    label = bob.users.labels().create(userId="me", body={"name": "Agent/Done Items"}).execute()
    bob.modify(ids["plain"], add=[label["id"]])
    for q in ("label:agent-done-items", 'label:"agent/done items"', "label:Agent/Done-Items",
              "label:AGENT|DONE&ITEMS"):
        assert ids_for(bob, q) == {ids["plain"]}, q
    assert ids["plain"] not in ids_for(bob, "-label:agent-done-items")
    assert len(ids_for(bob, "-label:agent-done-items")) == 3
    assert ids_for(bob, "label:unread -label:agent-done-items") == {ids["cc"], ids["attach"]}
    assert ids_for(bob, "label:no-such-label") == set()


def test_address_and_subject_operators(mailbox):
    bob, ids = mailbox
    alice_address = next(v for n, v in bob.headers(ids["plain"]) if n == "From")
    assert ids_for(bob, f"from:{alice_address}") == {ids["plain"], ids["attach"]}
    assert ids_for(bob, f"to:{bob.address}") == {ids["plain"], ids["attach"], ids["old"]}
    assert ids_for(bob, f"cc:{bob.address}") == {ids["cc"]}
    assert ids_for(bob, "subject:report") == {ids["plain"]}
    assert ids_for(bob, 'subject:"quarterly report"') == {ids["plain"]}
    assert ids_for(bob, "rfc822msgid:<report-1@example.com>") == {ids["plain"]}
    assert ids_for(bob, "rfc822msgid:report-1@example.com") == {ids["plain"]}
    assert ids_for(bob, "snacks") == {ids["cc"]}


def test_date_operators(mailbox):
    bob, ids = mailbox
    now = int(time.time())
    assert ids_for(bob, "before:2025/01/01") == {ids["old"]}
    assert ids["old"] not in ids_for(bob, "after:2025/01/01")
    assert ids_for(bob, f"after:{now - 3600}") == {ids["plain"], ids["cc"], ids["attach"]}
    assert ids_for(bob, f"before:{now - 3600}") == {ids["old"]}
    assert ids_for(bob, "older_than:30d") == {ids["old"]}
    assert ids_for(bob, "newer_than:1d") == {ids["plain"], ids["cc"], ids["attach"]}
    assert ids_for(bob, "older_than:1y") == ids_for(bob, "before:2025/11/01") & {ids["old"]}


def test_attachment_negation_or_and_grouping(mailbox):
    bob, ids = mailbox
    assert ids_for(bob, "has:attachment") == {ids["attach"]}
    assert ids_for(bob, "filename:pdf") == {ids["attach"]}
    assert ids_for(bob, "-has:attachment is:unread") == {ids["plain"], ids["cc"]}
    assert ids_for(bob, "subject:party OR subject:invoice") == {ids["cc"], ids["attach"]}
    assert ids_for(bob, "{subject:party subject:invoice}") == {ids["cc"], ids["attach"]}
    assert ids_for(bob, "is:unread (subject:party OR has:attachment)") == {ids["cc"],
                                                                           ids["attach"]}
    assert ids_for(bob, "-(subject:party OR has:attachment)") == {ids["plain"], ids["old"]}


def test_label_ids_must_all_match_and_newest_first(mailbox):
    bob, ids = mailbox
    listed = bob.list(labelIds=["INBOX", "UNREAD"])
    assert [m["id"] for m in listed] == [ids["attach"], ids["cc"], ids["plain"]]
    assert bob.list(labelIds=["INBOX", "STARRED"]) == []


def test_empty_result_has_no_messages_key(mailbox):
    bob, _ = mailbox
    page = bob.users.messages().list(userId="me", q="subject:nothing-like-this").execute()
    assert page == {"resultSizeEstimate": 0}


def test_paging_with_max_results_and_tokens(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    for i in range(7):
        emulator.deliver(raw_message(alice.address, bob.address, f"n{i}"), bob.address)
    seen = []
    token = None
    pages = 0
    while True:
        page = bob.users.messages().list(userId="me", maxResults=3, pageToken=token).execute()
        pages += 1
        seen += [m["id"] for m in page["messages"]]
        assert page["resultSizeEstimate"] == 7
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)
    with pytest.raises(HttpError) as info:
        bob.users.messages().list(userId="me", pageToken="garbage!").execute()
    assert info.value.status_code == 400


def test_max_results_capped_at_500_and_default_100(new_account, emulator):
    bob = new_account("bob")
    for i in range(120):
        emulator.deliver(raw_message("x@example.com", bob.address, f"n{i}"), bob.address)
    assert len(bob.users.messages().list(userId="me").execute()["messages"]) == 100
    assert len(bob.users.messages().list(userId="me", maxResults=1000).execute()
               ["messages"]) == 120


def test_threads_list_matches_if_any_message_matches(new_account):
    alice, bob = new_account("alice"), new_account("bob")
    first = alice.send(bob.address, "Plan", message_id="<plan-1@example.com>")
    [got] = bob.list()
    bob.send(alice.address, "Re: Plan", "agreed\n", thread_id=got["threadId"],
             references="<plan-1@example.com>", in_reply_to="<plan-1@example.com>")
    alice.send(bob.address, "Unrelated")
    page = alice.users.threads().list(userId="me", q="agreed").execute()
    assert [t["id"] for t in page["threads"]] == [first["threadId"]]
    assert page["threads"][0]["snippet"] == "agreed"
    assert set(page["threads"][0]) == {"id", "snippet", "historyId"}
    assert len(alice.users.threads().list(userId="me").execute()["threads"]) == 2


def test_long_query_goes_through_method_override(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    alice.send(bob.address, "needle")
    long_q = "subject:needle " + " ".join(f"-subject:hay{i:04d}" for i in range(200))
    assert len(long_q) > 2048
    page = bob.users.messages().list(userId="me", q=long_q).execute()
    assert len(page["messages"]) == 1
    # it was a list, not an insert
    assert bob.profile()["messagesTotal"] == 1
    calls = emulator.stats()["accounts"][bob.address]["calls"]
    assert calls["gmail.users.messages.list"] == 1
    assert "gmail.users.messages.insert" not in calls


def test_negated_spam_or_trash_keeps_the_other_hidden(mailbox):
    bob, ids = mailbox
    msgs = bob.users.messages()
    msgs.trash(userId="me", id=ids["cc"]).execute()
    bob.modify(ids["old"], add=["SPAM"], remove=["INBOX"])
    rest = {ids["plain"], ids["attach"]}
    # "-in:trash" names TRASH only to leave it out: SPAM stays hidden, and the reverse
    for q in ("-in:trash", "-in:spam", "-label:trash", "-(in:spam OR in:trash)", "--in:inbox"):
        assert ids_for(bob, q) == rest, q
    assert ids_for(bob, "-in:trash", includeSpamTrash=True) == rest | {ids["old"]}
    assert ids_for(bob, "-in:spam", includeSpamTrash=True) == rest | {ids["cc"]}
    # positive mentions show what they name, and only that
    assert ids_for(bob, "in:trash OR in:inbox") == rest | {ids["cc"]}
    assert ids_for(bob, "label:spam") == {ids["old"]}
    assert ids_for(bob, "{in:spam in:trash}") == {ids["old"], ids["cc"]}
    assert ids_for(bob, "in:anywhere -subject:quarterly -has:attachment") == {ids["old"], ids["cc"]}
    threads = bob.users.threads().list(userId="me", q="-in:trash").execute()
    assert {t["id"] for t in threads["threads"]} <= {
        bob.get(i, "minimal")["threadId"] for i in rest}


def test_every_operator_reads_only_fetched_columns(mailbox):
    """Searches fetch only the columns the query reads: each operator still works."""
    bob, ids = mailbox
    terms = ["from:nobody", "to:nobody", "cc:nobody", "bcc:nobody", "deliveredto:nobody",
             "list:nobody", "subject:nothing-like-it", "has:attachment", "filename:zzz",
             "larger:900m", "smaller:0", "size:900m", "after:4000000000", "before:1",
             "newer_than:0d", "older_than:999y", "category:social", "zzzword", "foo:bar",
             "has:userlabels", "is:starred", "-in:anywhere"]
    everything = set(ids.values())
    for term in terms:  # a term and its negation split the mailbox
        hits, misses = ids_for(bob, term), ids_for(bob, f"-({term})")
        assert hits | misses == everything and not hits & misses, term
    assert ids_for(bob, " OR ".join(t for t in terms if t != "has:attachment")) == set()
    assert ids_for(bob, "has:attachment filename:invoice.pdf larger:10") == {ids["attach"]}
