"""Hand-built raw mail for the trust suite: exactly the bytes a hostile sender could write."""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import Sequence

PROVIDER = "mx.google.com"
_n = itertools.count(1)


def address(prefix: str = "sender", domain: str = "corp.example") -> str:
    """A sender no other message of the suite uses (so replies can be told apart)."""
    return f"{prefix}{next(_n)}-{uuid.uuid4().hex[:6]}@{domain}"


def auth_results(sender: str, *, dkim: str = "pass", spf: str = "pass", dmarc: str = "pass",
                 authserv_id: str = PROVIDER, dkim_domain: str | None = None,
                 mailfrom: str | None = None) -> str:
    """An Authentication-Results value as Gmail writes it (folded), for `sender`."""
    domain = sender.rpartition("@")[2]
    return (f"{authserv_id};\r\n"
            f"       dkim={dkim} header.i=@{dkim_domain or domain} header.s=s1 header.b=AbCd1234;\r\n"
            f"       spf={spf} (google.com: domain of {mailfrom or sender} designates 192.0.2.1 "
            f"as permitted sender) smtp.mailfrom={mailfrom or sender};\r\n"
            f"       dmarc={dmarc} (p=REJECT sp=REJECT dis=NONE) header.from={domain}")


def message_id() -> str:
    return f"<{uuid.uuid4().hex}@corp.example>"


def mail(sender: str | None, to: str, *, subject: str = "request",
         body: bytes | str = b'{"task": "work"}\r\n',
         content_type: str | None = "text/plain; charset=utf-8", cte: str | None = None,
         headers: Sequence[tuple[str, str]] = (), auth: str | bool | None = True,
         msg_id: str | None = None, mime: bool = True) -> bytes:
    """One message. `auth=True` puts the provider's passing Authentication-Results on top
    (as Gmail does on delivery); a string puts that value there; None/False leaves it out.
    `headers` come after the standard ones, so forged copies there sit below the provider's."""
    lines: list[tuple[str, str]] = []
    if auth is True and sender:
        lines.append(("Authentication-Results", auth_results(sender)))
    elif isinstance(auth, str):
        lines.append(("Authentication-Results", auth))
    if sender is not None:
        lines.append(("From", sender))
    lines += [("To", to), ("Subject", subject), ("Date", "Mon, 06 Jan 2025 10:00:00 +0000"),
              ("Message-ID", msg_id or message_id())]
    lines += list(headers)
    if mime:
        lines.append(("MIME-Version", "1.0"))
    if content_type:
        lines.append(("Content-Type", content_type))
    if cte:
        lines.append(("Content-Transfer-Encoding", cte))
    head = "".join(f"{k}: {v}\r\n" for k, v in lines).encode("utf-8", "surrogateescape")
    return head + b"\r\n" + (body.encode("utf-8") if isinstance(body, str) else body)


def multipart(parts: Sequence[tuple[str, bytes]], boundary: str | None = None,
              subtype: str = "mixed") -> tuple[str, bytes]:
    """(content_type, body) of a multipart made of (part headers, part body) pairs."""
    boundary = boundary or "b" + uuid.uuid4().hex[:12]
    body = b""
    for head, content in parts:
        body += f"--{boundary}\r\n{head}\r\n\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f'multipart/{subtype}; boundary="{boundary}"', body


def nested_multipart(depth: int) -> tuple[str, bytes]:
    """`depth` multiparts inside one another around a JSON text part."""
    ctype, body = "text/plain; charset=utf-8", b'{"deep": true}'
    for level in range(depth):
        boundary = f"n{level}x{uuid.uuid4().hex[:6]}"
        body = (f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + body
                + f"\r\n--{boundary}--\r\n".encode())
        ctype = f'multipart/mixed; boundary="{boundary}"'
    return ctype, body


def dsn(to: str, bounced_id: str, *, diagnostic: str = "smtp; 550 5.1.1 user unknown",
        recipient: str = "nobody@nowhere.example", sender: str = "mailer-daemon@googlemail.com",
        auth: bool = True) -> bytes:
    """A delivery status notification (RFC 3464) reporting on message `bounced_id`."""
    ctype, body = multipart([
        ("Content-Type: text/plain; charset=utf-8",
         b"Address not found: your message wasn't delivered to " + recipient.encode()),
        ("Content-Type: message/delivery-status",
         (f"Reporting-MTA: dns; googlemail.com\r\n\r\nFinal-Recipient: rfc822; {recipient}\r\n"
          f"Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: {diagnostic}").encode()),
        ("Content-Type: text/rfc822-headers",
         f"From: {to}\r\nTo: {recipient}\r\nSubject: job\r\nMessage-ID: {bounced_id}".encode()),
    ], subtype='report; report-type="delivery-status"')
    ctype = ctype.replace('multipart/report; report-type="delivery-status"',
                          "multipart/report; report-type=delivery-status")
    return mail(sender, to, subject="Delivery Status Notification (Failure)", body=body,
                content_type=ctype, auth=auth_results("x@googlemail.com") if auth else None,
                headers=[("Auto-Submitted", "auto-replied")])


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def b64decode(data: str) -> bytes:
    """Gmail's base64url, padded or not."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
