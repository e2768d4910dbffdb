"""No request crashes the server or corrupts its store: deep MIME, deep JSON and
queries, internal errors, and generated garbage on several endpoints."""

from __future__ import annotations

import base64
import email
import email.policy
import http.client
import json
import re
import urllib.parse

import pytest
from googleapiclient.errors import HttpError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmail.emulator import mime
from agentmail.emulator.testing import encode, fresh_address, raw_message

DEPTH = 1000  # the reported crash: ~1000 levels of nesting


def nested_multipart(sender: str, to: str, depth: int, text: str = "deep inside") -> bytes:
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: nested {depth}\r\n"
            f"MIME-Version: 1.0\r\n").encode()
    opening = b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
                       for i in range(depth))
    inner = f"Content-Type: text/plain\r\n\r\n{text}\r\n".encode()
    closing = b"".join(f"--b{i}--\r\n".encode() for i in reversed(range(depth)))
    return head + opening + inner + closing


def nested_rfc822(sender: str, to: str, depth: int) -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: forwarded {depth}\r\n".encode()
    chain = b"Content-Type: message/rfc822\r\n\r\nSubject: fwd\r\n" * depth
    return head + chain + b"Content-Type: text/plain\r\n\r\nthe original\r\n"


def nested_without_blank_lines(sender: str, to: str, depth: int) -> bytes:
    """Headers run straight into a boundary line: the body starts there (a defect)."""
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: squashed {depth}\r\n".encode()
    return head + b"".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n--b{i}\r\n"
                           .encode() for i in range(depth)) + b"text\r\n"


def tree_depth(payload: dict) -> int:
    depth, part = 1, payload
    while part.get("parts"):
        part = part["parts"][0]
        depth += 1
    return depth


def innermost(payload: dict) -> dict:
    while payload.get("parts"):
        payload = payload["parts"][0]
    return payload


# -- deep MIME ---------------------------------------------------------------------

@pytest.mark.parametrize("build", [nested_multipart, nested_rfc822,
                                   nested_without_blank_lines])
def test_deeply_nested_message_is_stored_by_insert_import_and_send(new_account, emulator, build):
    alice, bob = new_account("alice"), new_account("bob")
    raw = build(alice.address, bob.address, DEPTH)
    msgs = alice.users.messages()
    inserted = msgs.insert(userId="me", body={"raw": encode(raw),
                                              "labelIds": ["INBOX"]}).execute()
    imported = msgs.import_(userId="me", body={"raw": encode(raw)}).execute()
    sent = msgs.send(userId="me", body={"raw": encode(raw)}).execute()
    for message in (inserted, imported, sent):
        full = alice.get(message["id"])
        # the part tree stops at the bound; the rest is the body of the last part
        assert tree_depth(full["payload"]) == mime.MAX_MIME_DEPTH
        leaf = innermost(full["payload"])
        assert leaf["body"]["size"] > 0 and leaf["body"]["data"]  # the unparsed rest
        assert alice.get(message["id"], "metadata")["payload"]["headers"]
    assert alice.raw(inserted["id"]) == raw  # stored whole, byte for byte
    assert bob.list(q="subject:" + raw.split(b"Subject: ")[1].split()[0].decode())
    assert alice.profile()["messagesTotal"] == 3
    assert emulator.store.check() == []


def test_nesting_within_the_bound_is_parsed_whole(new_account):
    alice = new_account("alice")
    raw = nested_multipart(alice.address, "x@example.com", 40, "the bottom")
    inserted = alice.users.messages().insert(userId="me", body={"raw": encode(raw)}).execute()
    full = alice.get(inserted["id"])
    assert tree_depth(full["payload"]) == 41
    leaf = innermost(full["payload"])
    assert leaf["mimeType"] == "text/plain" and leaf["partId"] == ".".join(["0"] * 40)
    assert base64.urlsafe_b64decode(leaf["body"]["data"] + "==").strip() == b"the bottom"
    assert full["snippet"] == "the bottom"


def test_deep_attachment_is_reachable_up_to_the_bound(new_account):
    alice = new_account("alice")
    depth = mime.MAX_MIME_DEPTH - 2
    head = f"From: {alice.address}\r\nTo: x@example.com\r\nSubject: deep file\r\n".encode()
    opening = b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                       .encode() for i in range(depth))
    attachment = (b'Content-Type: application/pdf\r\nContent-Disposition: attachment; '
                  b'filename="deep.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                  + base64.b64encode(b"%PDF deep") + b"\r\n")
    closing = b"".join(f"--b{i}--\r\n".encode() for i in reversed(range(depth)))
    inserted = alice.users.messages().insert(
        userId="me", body={"raw": encode(head + opening + attachment + closing)}).execute()
    leaf = innermost(alice.get(inserted["id"])["payload"])
    assert leaf["filename"] == "deep.pdf"
    data = alice.users.messages().attachments().get(
        userId="me", messageId=inserted["id"], id=leaf["body"]["attachmentId"]).execute()
    assert base64.urlsafe_b64decode(data["data"] + "==") == b"%PDF deep"
    assert alice.list(q="has:attachment filename:deep.pdf")


@pytest.mark.parametrize("raw", [
    raw_message("a@example.com", "b@example.com", "plain", "text\n"),
    raw_message("a@example.com", "b@example.com", "files", "text\n",
                attachments=[("a.txt", b"x" * 100, "text/plain"), ("b.bin", b"\0\1", "a/b")]),
    nested_multipart("a@example.com", "b@example.com", 30),
    nested_rfc822("a@example.com", "b@example.com", 30),
    b"no headers at all",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n",
])
def test_bounded_parser_equals_the_standard_one_within_the_bound(raw):
    ours = mime.parse(raw)
    theirs = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert ours.as_bytes() == theirs.as_bytes()
    assert [p.get_content_type() for p in ours.walk()] == [
        p.get_content_type() for p in theirs.walk()]


# -- deep JSON and queries -----------------------------------------------------------

def request(url: str, method: str, path: str, body: bytes | None = None,
            token: str = "robust@example.com",
            headers: dict[str, str] | None = None) -> tuple[int, dict | None]:
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.request(method, path, body, {"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json",
                                          **(headers or {})})
        response = conn.getresponse()
        content = response.read()
    finally:
        conn.close()
    if (response.getheader("Content-Type") or "").startswith("multipart/"):
        return response.status, {"statuses": [
            int(code) for code in re.findall(rb"^HTTP/1.1 (\d+)", content, re.M)]}
    return response.status, (json.loads(content) if content else None)


def assert_envelope(status: int, body: dict | None) -> None:
    assert body is not None and set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == status and error["status"] and error["message"]
    assert {"message", "domain", "reason"} <= set(error["errors"][0])


def test_deeply_nested_json_and_queries_are_bad_requests(emulator):
    url, token = emulator.url, fresh_address("deep")
    deep_json = b"[" * 100_000 + b"]" * 100_000
    for path in ("/gmail/v1/users/me/messages/send", "/gmail/v1/users/me/labels",
                 "/gmail/v1/users/me/messages/batchModify"):
        status, body = request(url, "POST", path, deep_json, token)
        assert status == 400, body
        assert_envelope(status, body)
        assert body["error"]["message"] == "Invalid JSON payload received."
    for q in ("(" * 5000 + "x" + ")" * 5000, "-" * 5000 + "x", "{" * 5000 + "x"):
        status, body = request(url, "GET", "/gmail/v1/users/me/messages?q="
                               + urllib.parse.quote(q), token=token)
        assert status == 400, body
        assert_envelope(status, body)
    status, _ = request(url, "GET", "/gmail/v1/users/me/messages?q="
                        + urllib.parse.quote("-" * 50 + "x"), token=token)
    assert status == 200  # fifty levels are still fine
    status, _ = request(url, "GET", "/gmail/v1/users/me/messages?q="
                        + urllib.parse.quote("((-(x OR {y -z})))"), token=token)
    assert status == 200


# -- internal errors -----------------------------------------------------------------

@pytest.mark.parametrize("exc", [RuntimeError("boom"), RecursionError(), MemoryError(),
                                 KeyError("x")])
def test_unexpected_exception_is_a_500_envelope_and_the_server_goes_on(
        private_emulator, account_on, monkeypatch, exc):
    emu = private_emulator()
    alice = account_on(emu, "alice")
    good_profile = emu.store.profile

    def broken(email):
        raise exc

    monkeypatch.setattr(emu.store, "profile", broken)
    with pytest.raises(HttpError) as info:
        alice.profile()
    assert info.value.status_code == 500
    body = json.loads(info.value.content)
    assert_envelope(500, body)
    assert body["error"]["errors"][0]["reason"] == "backendError"
    # the same inside a batch: that part fails, the others are answered
    results = {}
    batch = alice.new_batch(lambda rid, resp, err: results.__setitem__(rid, (resp, err)))
    batch.add(alice.users.getProfile(userId="me"))
    batch.add(alice.users.labels().list(userId="me"))
    batch.execute()
    assert results["1"][1].status_code == 500
    assert results["2"][0]["labels"]
    monkeypatch.setattr(emu.store, "profile", good_profile)
    assert alice.profile()["emailAddress"] == alice.address


def test_failure_inside_a_transaction_rolls_back(private_emulator, account_on, monkeypatch):
    emu = private_emulator()
    alice, bob = account_on(emu, "alice"), account_on(emu, "bob")
    alice.send(bob.address, "before")
    before = alice.profile(), bob.profile()
    calls = {"n": 0}
    record = emu.store._record

    def fail_on_second_record(*args, **kw):  # the sender's copy is written, then boom
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return record(*args, **kw)

    monkeypatch.setattr(emu.store, "_record", fail_on_second_record)
    with pytest.raises(HttpError) as info:
        alice.send(bob.address, "during")
    assert info.value.status_code == 500
    monkeypatch.setattr(emu.store, "_record", record)
    assert (alice.profile(), bob.profile()) == before
    assert not bob.list(q="subject:during") and not alice.list(q="subject:during")
    assert emu.store.check() == []


def test_exception_outside_the_api_still_gets_an_envelope(private_emulator, monkeypatch):
    emu = private_emulator()

    def broken(*args, **kw):
        raise ValueError("not even routed")

    monkeypatch.setattr(emu.api, "handle", broken)
    status, body = request(emu.url, "GET", "/gmail/v1/users/me/profile")
    assert status == 500
    assert_envelope(status, body)
    monkeypatch.undo()
    assert request(emu.url, "GET", "/gmail/v1/users/me/profile")[0] == 200


# -- generated garbage -----------------------------------------------------------------

MIME_PIECES = [
    b"From: {me}\r\n", b"To: {other}\r\n", b"Cc: {me}, \r\n", b"Bcc: {other}\r\n",
    b"Subject: =?utf-8?b?w6k=?= =?bogus?q?x?=\r\n", b"Message-ID: <x@y>\r\n",
    b"In-Reply-To: <x@y>\r\n", b"References: <x@y> <<>>\r\n", b"Date: Mon, 99 Foo 1 99:99\r\n",
    b"Date: Tue, 1 Jan 2030 00:00:00 +0000\r\n", b"MIME-Version: 1.0\r\n",
    b'Content-Type: multipart/mixed; boundary="a"\r\n', b"Content-Type: multipart/mixed\r\n",
    b'Content-Type: multipart/alternative; boundary=a\r\n', b"Content-Type: message/rfc822\r\n",
    b"Content-Type: message/delivery-status\r\n", b"Content-Type: text/html; charset=bogus\r\n",
    b"Content-Type: text/plain; charset=utf-16\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b'Content-Disposition: attachment; filename="=?utf-8?q?f=C3=A9.pdf?="\r\n',
    b"Content-Disposition: attachment; filename*=utf-8''%ff%fe\r\n",
    b"\r\n", b"\n", b"\r", b"--a\r\n", b"--a--\r\n", b"=\r\n", b"====\r\n", b"<b>&amp;</b>\r\n",
    b" folded\r\n", b"\xff\xfe\x00", b"QUJD\r\n",
]
JSON_FIELDS = ["raw", "threadId", "labelIds", "ids", "addLabelIds", "removeLabelIds", "name",
               "color", "messageListVisibility", "labelListVisibility"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=12)


def mime_ish(me: str, other: str) -> st.SearchStrategy[bytes]:
    pieces = [p.replace(b"{me}", me.encode()).replace(b"{other}", other.encode())
              for p in MIME_PIECES]
    return st.lists(st.sampled_from(pieces) | st.binary(max_size=16), max_size=40).map(b"".join)


class Mailbox:
    """One account with a message and a label, for the ids in generated requests."""

    def __init__(self, emu) -> None:
        self.url = emu.url
        self.me, self.other = fresh_address("fuzz"), fresh_address("peer")
        raw = raw_message(self.me, self.other, "seed", "seed\n")
        status, sent = request(self.url, "POST", "/gmail/v1/users/me/messages/send",
                               json.dumps({"raw": encode(raw)}).encode(), self.me)
        assert status == 200
        self.message_id, self.thread_id = sent["id"], sent["threadId"]
        status, label = request(self.url, "POST", "/gmail/v1/users/me/labels",
                                json.dumps({"name": "fuzz"}).encode(), self.me)
        assert status == 200
        self.label_id = label["id"]


@pytest.fixture(scope="module")
def fuzz_mailbox(gmail_emulator):
    return Mailbox(gmail_emulator)


ENDPOINTS = [
    ("POST", "/messages/send"), ("POST", "/messages"), ("POST", "/messages/import"),
    ("POST", "/messages/import?internalDateSource=dateHeader"),
    ("POST", "/messages/batchModify"), ("POST", "/messages/batchDelete"),
    ("POST", "/messages/{message}/modify"), ("POST", "/threads/{thread}/modify"),
    ("POST", "/labels"), ("PATCH", "/labels/{label}"), ("PUT", "/labels/{label}"),
    ("POST", "/messages?alt=json"), ("BATCH", "/batch/gmail/v1"),
]


@st.composite
def garbage(draw, box: Mailbox) -> tuple[str, str, bytes, dict[str, str]]:
    verb, path = draw(st.sampled_from(ENDPOINTS))
    path = path.format(message=box.message_id, thread=box.thread_id, label=box.label_id)
    raw_bytes = st.binary(max_size=400) | mime_ish(box.me, box.other)
    body = draw(st.one_of(
        st.binary(max_size=400),  # arbitrary bytes as the body
        st.dictionaries(st.sampled_from(JSON_FIELDS), json_values, max_size=4)
        .map(lambda d: json.dumps(d).encode()),  # the right keys, any shapes
        raw_bytes.map(lambda b: json.dumps({"raw": encode(b)}).encode()),  # any bytes as raw
        raw_bytes.map(lambda b: json.dumps({"raw": encode(b), "threadId": box.thread_id,
                                            "labelIds": ["INBOX"]}).encode()),
    ))
    if verb == "BATCH":
        inner = draw(st.sampled_from(ENDPOINTS[:-1]))
        part = (b"--zz\nContent-Type: application/http\nContent-ID: <a + 1>\n\n"
                + f"{inner[0]} /gmail/v1/users/me{inner[1]} HTTP/1.1\n".format(
                    message=box.message_id, thread=box.thread_id, label=box.label_id).encode()
                + b"Content-Type: application/json\n\n" + body + b"\n--zz--")
        return "POST", path, draw(st.sampled_from([part, body])), {
            "Content-Type": "multipart/mixed; boundary=zz"}
    return verb, "/gmail/v1/users/me" + path, body, {}


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_bodies_never_break_the_server(gmail_emulator, fuzz_mailbox, data):
    box = fuzz_mailbox
    verb, path, body, headers = data.draw(garbage(box))
    status, answer = request(box.url, verb, path, body, box.me, headers)
    ok = (200, 204, 400, 404, 409)
    assert status in ok, (status, answer)  # never a 500
    if status >= 400:
        assert_envelope(status, answer)
    if answer and "statuses" in answer:  # a batch: every part answered, none with a 500
        assert answer["statuses"] and set(answer["statuses"]) <= set(ok), answer
    if status == 200 and path.endswith(("/messages", "/send", "/import")):
        for fmt in ("full", "metadata", "raw", "minimal"):  # what was stored reads back
            got = request(box.url, "GET", f"{path.rsplit('/messages', 1)[0]}/messages/"
                          f"{answer['id']}?format={fmt}", token=box.me)
            assert got[0] == 200, got
        assert request(box.url, "GET", f"/gmail/v1/users/me/threads/{answer['threadId']}",
                       token=box.me)[0] == 200
    status, profile = request(box.url, "GET", "/gmail/v1/users/me/profile", token=box.me)
    assert status == 200 and profile["emailAddress"] == box.me
    assert gmail_emulator.store.check() == []


QUERY_PIECES = ["in:", "is:", "label:", "from:", "subject:", "after:", "before:", "newer_than:",
                "older_than:", "larger:", "smaller:", "has:", "rfc822msgid:", "filename:",
                "category:", "trash", "spam", "anywhere", "unread", "1d", "2030/01/01", "10k",
                "me", "OR", "AND", "-", "(", ")", "{", "}", '"', " ", ":", "x", "<a@b>", "é"]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(pieces=st.lists(st.sampled_from(QUERY_PIECES) | st.text(max_size=3), max_size=30),
       spam_trash=st.booleans())
def test_generated_queries_are_answered(fuzz_mailbox, pieces, spam_trash):
    box = fuzz_mailbox
    q = urllib.parse.quote("".join(pieces))
    flag = "&includeSpamTrash=true" if spam_trash else ""
    for what in ("messages", "threads"):
        status, answer = request(box.url, "GET", f"/gmail/v1/users/me/{what}?q={q}{flag}",
                                 token=box.me)
        assert status in (200, 400), (status, answer)
        if status == 400:
            assert_envelope(status, answer)
        else:
            assert answer["resultSizeEstimate"] >= len(answer.get(what, []))
