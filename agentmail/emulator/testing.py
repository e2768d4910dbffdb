"""Test helpers for code that talks to the emulator: fixtures, accounts, messages.

In a ``conftest.py``::

    from agentmail.emulator.testing import gmail_emulator, emulator, new_account  # noqa: F401

``gmail_emulator`` is one in-memory emulator for the session; ``emulator`` is
the same one per test, with faults cleared afterwards; ``new_account()``
returns an :class:`Account` with a fresh address (so tests never see each
other's mail) and a googleapiclient service closed at teardown.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import itertools
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service, new_batch

_counter = itertools.count(1)


def fresh_address(prefix: str = "user", domain: str = "example.com") -> str:
    """An address no other test uses."""
    return f"{prefix}{next(_counter)}-{uuid.uuid4().hex[:6]}@{domain}"


def encode(raw: bytes) -> str:
    """base64url, as ``messages.send`` wants ``raw``."""
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode(data: str) -> bytes:
    """Decode Gmail's base64url (``raw`` padded, ``body.data`` unpadded)."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def raw_message(sender: str, to: str | Iterable[str], subject: str = "Hello",
                body: str = "Hello there.\n", *, cc: Iterable[str] = (),
                bcc: Iterable[str] = (), message_id: str | None = None,
                in_reply_to: str | None = None, references: str | None = None,
                headers: dict[str, str] | None = None,
                attachments: Iterable[tuple[str, bytes, str]] = ()) -> bytes:
    """An RFC 822 message (CRLF). ``attachments`` are (filename, data, mime type)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if bcc:
        msg["Bcc"] = ", ".join(bcc)
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    for filename, data, mime_type in attachments:
        maintype, _, subtype = mime_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@dataclasses.dataclass
class Account:
    """One mailbox on the emulator, with a googleapiclient service bound to it."""

    address: str
    service: Any
    url: str

    @property
    def users(self) -> Any:
        return self.service.users()

    def send(self, to: str | Iterable[str], subject: str = "Hello", body: str = "Hi.\n",
             *, thread_id: str | None = None, **kw: Any) -> dict[str, Any]:
        request: dict[str, Any] = {"raw": encode(raw_message(self.address, to, subject, body,
                                                             **kw))}
        if thread_id:
            request["threadId"] = thread_id
        return self.users.messages().send(userId="me", body=request).execute()

    def list(self, q: str | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Every matching message ({id, threadId}), all pages."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.users.messages().list(userId="me", q=q, pageToken=token,
                                              **kw).execute()
            out += page.get("messages", [])
            token = page.get("nextPageToken")
            if not token:
                return out

    def get(self, message_id: str, fmt: str = "full", **kw: Any) -> dict[str, Any]:
        return self.users.messages().get(userId="me", id=message_id, format=fmt,
                                          **kw).execute()

    def raw(self, message_id: str) -> bytes:
        return decode(self.get(message_id, "raw")["raw"])

    def headers(self, message_id: str) -> builtins.list[tuple[str, str]]:  # `list` is a method here
        payload = self.get(message_id, "metadata")["payload"]
        return [(h["name"], h["value"]) for h in payload.get("headers", [])]

    def modify(self, message_id: str, add: Iterable[str] = (),
               remove: Iterable[str] = ()) -> dict[str, Any]:
        return self.users.messages().modify(
            userId="me", id=message_id,
            body={"addLabelIds": list(add), "removeLabelIds": list(remove)}).execute()

    def profile(self) -> dict[str, Any]:
        return self.users.getProfile(userId="me").execute()

    def new_batch(self, callback: Callable[..., Any] | None = None) -> Any:
        return new_batch(self.url, callback)


def admin(url: str, path: str, body: dict[str, Any] | None = None,
          method: str | None = None) -> Any:
    """Call an admin endpoint (``stats``, ``reset``, ``faults``, ``history/expire``)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/emulator/v1/{path}", data=data,
                                     method=method or ("GET" if data is None else "PUT"))
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="session")
def gmail_emulator() -> Iterator[Emulator]:
    """One in-memory emulator for the whole test session."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emulator(gmail_emulator: Emulator) -> Iterator[Emulator]:
    """The session emulator, with faults cleared after the test."""
    gmail_emulator.clear_faults()
    yield gmail_emulator
    gmail_emulator.clear_faults()


@pytest.fixture
def new_account(emulator: Emulator) -> Iterator[Callable[..., Account]]:
    """Factory: ``new_account("alice")`` -> an Account with a fresh address."""
    services: list[Any] = []

    def make(prefix: str = "user", *, url: str | None = None, **build_kw: Any) -> Account:
        address = fresh_address(prefix)
        where = url or emulator.url
        service = build_service(where, address, **build_kw)
        services.append(service)
        return Account(address, service, where)

    yield make
    for service in services:
        service.close()
