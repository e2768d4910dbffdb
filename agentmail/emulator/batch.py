"""The batch endpoint (``POST /batch`` and ``/batch/gmail/v1``): multipart/mixed in and out.

Request parts (as googleapiclient writes them, lines separated by bare LF)::

    Content-Type: application/http
    Content-ID: <uuid + 1>

    GET /gmail/v1/users/me/messages/ID?format=minimal&alt=json HTTP/1.1
    authorization: Bearer alice@example.com

Each part is answered in a part with ``Content-Type: application/http``,
``Content-ID: <response-uuid + 1>`` and CRLFs throughout, the blank line
before the inner body included (the client splits on ``\\r\\n\\r\\n``). Inner
calls are billed one by one and hold one concurrency slot each for the whole
batch, as Gmail runs them in parallel.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

from agentmail.emulator import errors

if TYPE_CHECKING:
    from agentmail.emulator.api import Api, Response

MAX_PARTS = 100
_BLANK = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)


class Headers(dict):
    """Header fields by lower-cased name (the email parser is too slow for this)."""

    @classmethod
    def parse(cls, lines: list[str]) -> Headers:
        out = cls()
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                out[name.strip().lower()] = value.strip()
        return out

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name.lower(), value)


class Part:
    def __init__(self, content_id: str, verb: str, target: str, headers: Any,
                 body: bytes) -> None:
        self.content_id = content_id
        self.verb = verb
        self.target = target
        self.headers = headers
        self.body = body


def parse(content_type: str, body: bytes) -> list[Part]:
    found = _BOUNDARY.search(content_type or "")
    if not content_type.lower().startswith("multipart/mixed") or not found:
        raise errors.invalid("Batch requests must be multipart/mixed with a boundary")
    delimiter = b"--" + found[1].encode()
    chunks = body.split(delimiter)[1:]
    parts = []
    for index, chunk in enumerate(chunks):
        if chunk.startswith(b"--"):
            break
        parts.append(_part(_trim(chunk), index))
    if not parts:
        raise errors.invalid("Batch request contains no parts")
    if len(parts) > MAX_PARTS:
        raise errors.invalid(f"Too many requests in batch: {len(parts)} (at most {MAX_PARTS})")
    return parts


def _trim(chunk: bytes) -> bytes:
    if chunk.startswith(b"\r\n"):
        chunk = chunk[2:]
    elif chunk.startswith(b"\n"):
        chunk = chunk[1:]
    if chunk.endswith(b"\r\n"):
        chunk = chunk[:-2]
    elif chunk.endswith(b"\n"):
        chunk = chunk[:-1]
    return chunk


def _split(data: bytes) -> tuple[bytes, bytes]:
    found = _BLANK.search(data)
    return (data, b"") if found is None else (data[:found.start()], data[found.end():])


def _part(chunk: bytes, index: int) -> Part:
    outer, inner = _split(chunk)
    outer_headers = Headers.parse(outer.decode("latin-1").splitlines())
    content_id = outer_headers.get("Content-ID") or f"<item{index + 1}>"
    head, body = _split(inner)
    lines = head.decode("latin-1").splitlines()
    request_line = lines[0].split() if lines else []
    if len(request_line) < 2:
        raise errors.invalid(f"Invalid batch part {content_id}: no request line")
    headers = Headers.parse(lines[1:])
    length = headers.get("Content-Length")
    if length and length.strip().isdigit():
        body = body[:int(length)]
    return Part(content_id, request_line[0].upper(), request_line[1], headers, body)


def handle(api: Api, headers: Any, body: bytes) -> Response:
    from agentmail.emulator.api import Response, bearer_account, error_response

    parts = parse(headers.get("Content-Type", ""), body)
    outer_account = bearer_account(headers)
    # Gmail runs the parts of a batch in parallel: each holds a concurrency slot.
    held: list[str | None] = []
    for part in parts:
        user = bearer_account(part.headers) or outer_account
        held.append(user if user is None or api.gate.acquire(user) else "")
    answers = []
    try:
        for part, user in zip(parts, held, strict=False):
            if user == "":
                answers.append(error_response(
                    errors.rate_limited("Too many concurrent requests for user")))
                continue
            if bearer_account(part.headers) is None and outer_account:
                part.headers["Authorization"] = f"Bearer {outer_account}"
            path, _, query = part.target.partition("?")
            answers.append(api.call_response(part.verb, path, query, part.headers, part.body,
                                             in_batch=True, slot_held=user is not None))
    finally:
        for user in held:
            if user:
                api.gate.release(user)
    boundary = "batch_" + secrets.token_hex(12)
    out = bytearray()
    for part, answer in zip(parts, answers, strict=False):
        out += _encode(boundary, part.content_id, answer)
    out += f"--{boundary}--\r\n".encode()
    return Response(200, bytes(out), {"Content-Type": f"multipart/mixed; boundary={boundary}"})


def _encode(boundary: str, content_id: str, answer: Response) -> bytes:
    cid = content_id.strip().strip("<>")
    head = [f"--{boundary}", "Content-Type: application/http",
            f"Content-ID: <response-{cid}>", "",
            f"HTTP/1.1 {answer.status} {answer.reason}"]
    head += [f"{k}: {v}" for k, v in answer.headers.items()]
    head += [f"Content-Length: {len(answer.body)}", "", ""]
    return "\r\n".join(head).encode() + answer.body + b"\r\n"
