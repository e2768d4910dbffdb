"""The batch endpoint through googleapiclient (both URIs) and on the wire."""

from __future__ import annotations

import http.client
import json
import urllib.parse

import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from agentmail.emulator.client import batch_uri


def run_batch(account, requests, uri=None):
    results = {}

    def callback(request_id, response, exception):
        results[request_id] = (response, exception)

    batch = (BatchHttpRequest(callback=callback, batch_uri=uri) if uri
             else account.new_batch(callback))
    for request in requests:
        batch.add(request)
    batch.execute()
    return [results[str(i + 1)] for i in range(len(requests))]


@pytest.mark.parametrize("suffix", ["/batch/gmail/v1", "/batch"])
def test_batch_with_mixed_outcomes(new_account, emulator, suffix):
    alice, bob = new_account("alice"), new_account("bob")
    sent = alice.send(bob.address, "batch me")
    msgs = alice.users.messages()
    results = run_batch(alice, [
        msgs.get(userId="me", id=sent["id"], format="minimal"),
        msgs.get(userId="me", id="0123456789abcdef"),
        msgs.modify(userId="me", id=sent["id"], body={"addLabelIds": ["STARRED"]}),
        msgs.modify(userId="me", id=sent["id"], body={"addLabelIds": ["NOPE"]}),
        msgs.batchModify(userId="me", body={"ids": [sent["id"]], "addLabelIds": ["IMPORTANT"]}),
        alice.users.getProfile(userId=bob.address),
    ], uri=emulator.url + suffix)
    assert results[0][0]["id"] == sent["id"] and results[0][1] is None
    assert isinstance(results[1][1], HttpError) and results[1][1].status_code == 404
    assert "STARRED" in results[2][0]["labelIds"]
    assert results[3][1].status_code == 400 and results[3][1].reason == "Invalid label: NOPE"
    assert results[4] == ("", None)
    assert results[5][1].status_code == 403
    assert set(alice.get(sent["id"], "minimal")["labelIds"]) == {"SENT", "STARRED", "IMPORTANT"}
    stats = emulator.stats()["accounts"][alice.address]
    assert stats["calls"]["gmail.users.messages.get"] == 3  # two in the batch, one after
    assert stats["calls"]["gmail.users.messages.modify"] == 2


def test_batch_billed_per_inner_call(new_account, emulator):
    alice = new_account("alice")
    before = emulator.stats()["accounts"].get(alice.address, {"quota_units": 0})["quota_units"]
    run_batch(alice, [alice.users.labels().list(userId="me") for _ in range(10)])
    stats = emulator.stats()["accounts"][alice.address]
    assert stats["quota_units"] - before == 10
    assert stats["calls"]["gmail.users.labels.list"] == 10


def _batch_body(boundary, parts):
    lines = []
    for i, (verb, path, body) in enumerate(parts, 1):
        lines += [f"--{boundary}", "Content-Type: application/http", "MIME-Version: 1.0",
                  "Content-Transfer-Encoding: binary", f"Content-ID: <abc-123 + {i}>", "",
                  f"{verb} {path} HTTP/1.1", "Content-Type: application/json",
                  "authorization: Bearer wire@example.com"]
        if body is not None:
            data = json.dumps(body)
            lines += [f"content-length: {len(data)}", "", data]
        else:
            lines += [""]
    lines.append(f"--{boundary}--")
    return "\n".join(lines).encode()  # bare LF, as googleapiclient writes it


def post_batch(url, body, boundary="===============1234=="):
    parsed = urllib.parse.urlsplit(batch_uri(url))
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        conn.request("POST", parsed.path, body, {
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "Authorization": "Bearer wire@example.com"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_batch_wire_format(emulator):
    body = _batch_body("===============1234==", [
        ("GET", "/gmail/v1/users/me/profile?alt=json", None),
        ("DELETE", "/gmail/v1/users/me/messages/0123456789abcdef", None),
        ("POST", "/gmail/v1/users/me/labels?alt=json", {"name": "wire-label"}),
    ])
    status, headers, content = post_batch(emulator.url, body)
    assert status == 200
    ctype = headers["Content-Type"]
    assert ctype.startswith("multipart/mixed; boundary=")
    boundary = ctype.split("boundary=")[1]
    parts = content.split(f"--{boundary}".encode())
    assert parts[-1].strip() == b"--"
    parts = parts[1:-1]
    assert len(parts) == 3
    for i, part in enumerate(parts, 1):
        assert b"Content-Type: application/http\r\n" in part
        assert f"Content-ID: <response-abc-123 + {i}>\r\n".encode() in part
        _, inner = part.split(b"\r\n\r\n", 1)
        assert b"\r\n\r\n" in inner  # status + headers, CRLFCRLF, body
    assert b"HTTP/1.1 200 OK" in parts[0] and b'"emailAddress": "wire@example.com"' in parts[0]
    assert b"HTTP/1.1 404 Not Found" in parts[1]
    assert b"HTTP/1.1 200 OK" in parts[2] and b"wire-label" in parts[2]


def test_batch_limits_and_errors(emulator):
    too_many = _batch_body("b", [("GET", "/gmail/v1/users/me/profile", None)] * 101)
    status, _, content = post_batch(emulator.url, too_many, boundary="b")
    assert status == 400 and json.loads(content)["error"]["status"] == "INVALID_ARGUMENT"
    exactly = _batch_body("b", [("GET", "/gmail/v1/users/me/profile", None)] * 100)
    assert post_batch(emulator.url, exactly, boundary="b")[0] == 200
    status, _, content = post_batch(emulator.url, b"not multipart", boundary="zzz")
    assert status == 400


def test_inner_part_without_auth_uses_outer(emulator):
    body = (b"--b\nContent-Type: application/http\nContent-ID: <x + 1>\n\n"
            b"GET /gmail/v1/users/me/profile HTTP/1.1\n\n--b--")
    status, _, content = post_batch(emulator.url, body, boundary="b")
    assert status == 200 and b"wire@example.com" in content
