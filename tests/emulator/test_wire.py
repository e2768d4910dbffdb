"""Wire details and bad input over plain HTTP: status codes, error bodies, keep-alive."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import urllib.parse

import pytest

from agentmail.emulator.testing import fresh_address, raw_message

ADDRESS = "wire-user@example.com"


class Client:
    """One keep-alive connection to the emulator."""

    def __init__(self, url: str, token: str = ADDRESS) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        self.token = token

    def request(self, method, path, body=None, headers=None):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        hdrs = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        self.conn.request(method, path, data, hdrs)
        response = self.conn.getresponse()
        content = response.read()
        return response.status, response, (json.loads(content) if content else None)

    def close(self):
        self.conn.close()


@pytest.fixture
def client(emulator):
    c = Client(emulator.url, fresh_address("wire"))
    yield c
    c.close()


def assert_error(result, code, reason=None, status=None):
    got, _, body = result
    assert got == code, body
    error = body["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "errors", "status"}
    assert set(error["errors"][0]) >= {"message", "domain", "reason"}
    if reason:
        assert error["errors"][0]["reason"] == reason
    if status:
        assert error["status"] == status


M = "/gmail/v1/users/me/messages"


def test_malformed_json_and_bad_base64(client):
    assert_error(client.request("POST", M + "/send", b"{not json"), 400, "invalidArgument",
                 "INVALID_ARGUMENT")
    assert_error(client.request("POST", M + "/send", b"[1, 2]"), 400, "invalidArgument")
    assert_error(client.request("POST", M + "/send", {"raw": "!!!not base64!!!"}), 400,
                 "invalidArgument")
    assert_error(client.request("POST", M + "/send", {}), 400, "invalidArgument")
    no_rcpt = base64.urlsafe_b64encode(b"Subject: x\r\n\r\nbody").decode()
    assert_error(client.request("POST", M + "/send", {"raw": no_rcpt}), 400)
    assert_error(client.request("POST", M + "/batchModify", {"ids": "nope"}), 400)
    assert_error(client.request("POST", "/gmail/v1/users/me/labels", {"name": 5}), 400)


def test_ids_and_unknown_things(client):
    assert_error(client.request("GET", M + "/zz-not-hex"), 400, "invalidArgument")
    assert_error(client.request("GET", M + "/0123456789abcdef"), 404, "notFound", "NOT_FOUND")
    assert_error(client.request("GET", M + "/0123456789abcdef/attachments/bogus"), 400)
    assert_error(client.request("GET", "/gmail/v1/users/me/labels/Label_77"), 404)
    assert_error(client.request("GET", "/gmail/v1/users/me/nothing"), 404)
    assert_error(client.request("GET", "/totally/else"), 404)
    assert_error(client.request("PATCH", M + "/send"), 405)
    assert_error(client.request("GET", M + "?maxResults=lots"), 400)
    assert_error(client.request("GET", M + "/0123456789abcdef?format=weird"), 400)
    assert_error(client.request("GET", "/gmail/v1/users/me/drafts"), 501)
    send_with_bad_thread = {"raw": base64.urlsafe_b64encode(
        raw_message(client.token, "x@example.com", "t")).decode(), "threadId": "0123456789abcdef"}
    assert_error(client.request("POST", M + "/send", send_with_bad_thread), 404)


def test_auth_errors(emulator):
    c = Client(emulator.url, token="not-an-email")
    try:
        result = c.request("GET", "/gmail/v1/users/me/profile")
        assert_error(result, 401, "authError", "UNAUTHENTICATED")
        error = result[2]["error"]
        assert error["message"].startswith("Request had invalid authentication credentials.")
        assert error["errors"] == [{"message": "Invalid Credentials", "domain": "global",
                                    "reason": "authError", "location": "Authorization",
                                    "locationType": "header"}]
        assert 'error="invalid_token"' in result[1].getheader("WWW-Authenticate")
        c.conn.request("GET", "/gmail/v1/users/me/profile")  # no header at all
        response = c.conn.getresponse()
        error = json.loads(response.read())["error"]
        assert response.status == 401 and error["code"] == 401
        assert error["status"] == "UNAUTHENTICATED"
        assert error["message"].startswith("Request is missing required authentication")
        assert error["errors"][0]["message"] == "Login Required."
        assert error["errors"][0]["reason"] == "required"
        assert response.getheader("WWW-Authenticate").startswith("Bearer realm=")
    finally:
        c.close()


def test_oversized_raw(client):
    big = b"From: a@example.com\r\nTo: b@example.com\r\n\r\n" + b"x" * 36_700_160
    body = {"raw": base64.urlsafe_b64encode(big).decode()}
    status, _, error = client.request("POST", M + "/send", body)
    assert status in (400, 413) and error["error"]["code"] == status


def test_huge_body_rejected_before_reading(emulator):
    parsed = urllib.parse.urlsplit(emulator.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(b"POST /gmail/v1/users/me/messages/send HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer a@example.com\r\nContent-Length: 900000000\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")


def test_garbage_does_not_hurt_the_server(emulator, client):
    parsed = urllib.parse.urlsplit(emulator.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(b"\x00\x01GARBAGE\r\n\r\n")
        sock.recv(65536)
    assert client.request("GET", "/gmail/v1/users/me/profile")[0] == 200


def test_keep_alive_and_json_shapes(client):
    statuses = [client.request("GET", "/gmail/v1/users/me/profile")[0] for _ in range(5)]
    assert statuses == [200] * 5
    status, response, body = client.request("GET", "/gmail/v1/users/me/profile?alt=json")
    assert response.getheader("Content-Type").startswith("application/json")
    assert response.getheader("Connection") != "close"
    assert isinstance(body["historyId"], str)
    status, response, body = client.request("DELETE", "/gmail/v1/users/me/messages/"
                                            "0123456789abcdef")
    assert status == 404
    raw = base64.urlsafe_b64encode(raw_message(client.token, client.token, "me")).decode()
    mid = client.request("POST", M + "/send", {"raw": raw})[2]["id"]
    status, response, body = client.request("DELETE", f"{M}/{mid}")
    assert (status, body) == (204, None)


def test_method_override_header(client):
    raw = base64.urlsafe_b64encode(raw_message(client.token, client.token, "over")).decode()
    client.request("POST", M + "/send", {"raw": raw})
    status, _, body = client.request(
        "POST", M, b"q=subject%3Aover&maxResults=5",
        {"X-HTTP-Method-Override": "GET",
         "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and len(body["messages"]) == 1


def test_chunked_request_body(emulator):
    parsed = urllib.parse.urlsplit(emulator.url)
    body = json.dumps({"name": "chunky"}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5])
                      for i in range(0, len(body), 5)) + b"0\r\n\r\n"
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(b"POST /gmail/v1/users/me/labels HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer chunked@example.com\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b'"name": "chunky"' in answer


def test_label_fields_of_the_wrong_kind_are_400s(client):
    labels = "/gmail/v1/users/me/labels"
    status, _, label = client.request("POST", labels, {"name": fresh_address("lbl")})
    assert status == 200
    for body in ({"messageListVisibility": ["show"]}, {"labelListVisibility": "sometimes"},
                 {"color": {"textColor": 5}}, {"color": "red"}):
        assert_error(client.request("PATCH", f"{labels}/{label['id']}", body), 400,
                     "invalidArgument")
        assert_error(client.request("POST", labels, {"name": fresh_address("x"), **body}), 400)
    status, _, patched = client.request("PATCH", f"{labels}/{label['id']}",
                                        {"labelListVisibility": "labelShowIfUnread"})
    assert status == 200 and patched["labelListVisibility"] == "labelShowIfUnread"


def test_empty_lists_are_left_out(client):
    raw = base64.urlsafe_b64encode(raw_message("x@example.com", client.token, "bare")).decode()
    status, _, inserted = client.request("POST", M, {"raw": raw})  # no labelIds at all
    assert status == 200 and set(inserted) == {"id", "threadId"}
    status, _, imported = client.request("POST", M + "/import", {"raw": raw})
    assert status == 200 and set(imported) == {"id", "threadId"}
    for fmt in ("minimal", "full"):
        status, _, got = client.request("GET", f"{M}/{inserted['id']}?format={fmt}")
        assert status == 200 and "labelIds" not in got
    status, _, meta = client.request(
        "GET", f"{M}/{inserted['id']}?format=metadata&metadataHeaders=X-Nothing-Like-This")
    assert status == 200 and "headers" not in meta["payload"]
    status, _, meta = client.request(
        "GET", f"{M}/{inserted['id']}?format=metadata&metadataHeaders=subject")
    assert meta["payload"]["headers"] == [{"name": "Subject", "value": "bare"}]
    status, _, history = client.request("GET", "/gmail/v1/users/me/history?startHistoryId="
                                        + client.request("GET", "/gmail/v1/users/me/profile")
                                        [2]["historyId"])
    assert status == 200 and set(history) == {"historyId"}
