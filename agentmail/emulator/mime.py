"""RFC 822 in, Gmail's JSON out: summaries for indexing, MessagePart trees, header edits.

Parsing happens once when a message is stored (:func:`summarize`); the
MessagePart tree is built only for ``format=full|metadata`` and cached by the
store, since a stored message never changes.

MIME nesting is bounded: the standard library's parser recurses once per
level (``multipart/*`` and ``message/*``), so a message nested a thousand
levels deep would end in a RecursionError. :func:`parse` parses a part on
level :data:`MAX_MIME_DEPTH` as a leaf whose body is everything inside it
(the message is still stored whole, as Gmail stores it), so every walk over
the tree is bounded too.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.feedparser
import email.policy
import email.utils
import html
import re
import secrets
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

SNIPPET_CHARS = 200
SEARCH_TEXT_CHARS = 20000
ATTACHMENT_PREFIX = "ANGjdJ"
MAX_MIME_DEPTH = 100  # levels of multipart/message nesting parsed (Postfix's default limit)

_B64_OK = re.compile(rb"^[A-Za-z0-9_\-+/]*={0,2}$")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|r|aw|wg|tr|sv|vs)\s*(\[\d+\])?\s*:\s*)+", re.I)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


# -- base64url ---------------------------------------------------------------------

def b64decode(value: Any) -> bytes:
    """Decode Gmail's base64url (padded or not; the standard alphabet is tolerated)."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    data = value.strip().encode("ascii", "replace")
    if not _B64_OK.match(data) or len(data.rstrip(b"=")) % 4 == 1:
        raise ValueError("invalid base64url")
    data = data.rstrip(b"=").replace(b"+", b"-").replace(b"/", b"_")
    try:
        return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64url") from exc


def b64encode(data: bytes, *, pad: bool) -> str:
    out = base64.urlsafe_b64encode(data).decode("ascii")
    return out if pad else out.rstrip("=")


# -- headers -----------------------------------------------------------------------

def header_value(value: Any) -> str:
    """A header value unfolded and RFC 2047-decoded, as Gmail shows it."""
    text = _FOLD.sub("", str(value))
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except Exception:  # malformed encoded-words stay as they are
            pass
    return text


def normalize_subject(subject: str) -> str:
    """The subject Gmail compares for threading: reply/forward prefixes off, lower case."""
    return _SPACE.sub(" ", _REPLY_PREFIX.sub("", subject)).strip().lower()


def message_ids(value: str) -> list[str]:
    """Message-IDs in a References/In-Reply-To value, without brackets, lower case."""
    found = re.findall(r"<([^<>\s]+)>", value)
    if not found and value.strip():
        found = value.split()
    return [m.strip().lower() for m in found]


def strip_msgid(value: str) -> str:
    return value.strip().strip("<>").strip().lower()


def new_message_id() -> str:
    """A Gmail-style Message-ID (``<CA+...@mail.gmail.com>``)."""
    token = base64.b64encode(secrets.token_bytes(33)).decode().replace("/", "_")
    return f"<CA{token}@mail.gmail.com>"


def addresses(value: str) -> list[str]:
    return [addr.lower() for _, addr in email.utils.getaddresses([value]) if "@" in addr]


# -- summary for indexing ----------------------------------------------------------

class _BoundedFeedParser(email.feedparser.FeedParser):
    """The standard FeedParser, except that a part on level ``max_depth`` of the
    tree (the top is level 1) is parsed headers-only: its body, nested parts and
    all, stays one string, so the tree is at most ``max_depth`` levels deep.

    ``_parsegen`` is called once per part, recursively, with the enclosing
    messages on ``_msgstack``; the headers-only mode reads the part's body up to
    the enclosing boundary without descending into it.
    """

    max_depth = MAX_MIME_DEPTH
    # FeedParser's private state, which typeshed leaves out (declared here, set by it)
    _msgstack: list[Message]
    _headersonly: bool

    def _parsegen(self) -> Iterator[object]:
        if len(self._msgstack) < self.max_depth - 1:
            return super()._parsegen()  # type: ignore[misc]  # private, not in typeshed
        return self._leafgen()

    def _leafgen(self) -> Iterator[object]:
        self._headersonly = True
        try:
            yield from super()._parsegen()  # type: ignore[misc]  # private, not in typeshed
        finally:
            self._headersonly = False


def parse(raw: bytes, max_depth: int = MAX_MIME_DEPTH) -> Message:
    """``raw`` as a Message tree at most ``max_depth`` levels deep (as
    ``email.message_from_bytes`` with the compat32 policy otherwise)."""
    parser = _BoundedFeedParser(policy=email.policy.compat32)
    parser.max_depth = max_depth
    parser.feed(raw.decode("ascii", "surrogateescape"))
    return parser.close()



def summarize(raw: bytes) -> dict[str, Any]:
    """The fields the store indexes and the query language searches."""
    msg = parse(raw)

    def get(name: str) -> str:
        values = msg.get_all(name) or []
        return ", ".join(header_value(v) for v in values)

    subject = get("Subject")
    text, filenames = _text_and_files(msg)
    snippet_text = _SPACE.sub(" ", text).strip()[:SNIPPET_CHARS]
    date_ms = None
    if msg.get("Date"):
        try:
            parsed = email.utils.parsedate_to_datetime(header_value(msg["Date"]))
            date_ms = int(parsed.timestamp() * 1000)
        except (TypeError, ValueError, IndexError, OverflowError):
            date_ms = None
    return {
        "from": get("From"), "to": get("To"), "cc": get("Cc"), "bcc": get("Bcc"),
        "delivered_to": get("Delivered-To"), "list": get("List-Id"),
        "subject": subject, "subject_key": normalize_subject(subject),
        "rfc822_id": strip_msgid(get("Message-ID")) if msg.get("Message-ID") else "",
        "refs": " ".join(message_ids(get("In-Reply-To")) + message_ids(get("References"))),
        "date_ms": date_ms,
        "snippet": html.escape(snippet_text, quote=True).replace("&#x27;", "&#39;"),
        "filenames": " ".join(f.lower() for f in filenames),
        "has_attachment": bool(filenames),
        "search_text": " ".join((subject, get("From"), get("To"), get("Cc"),
                                 text[:SEARCH_TEXT_CHARS])).lower(),
    }


def _text_and_files(msg: Message) -> tuple[str, list[str]]:
    plain: str | None = None
    htmltext: str | None = None
    files: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = _filename(part)
        if name:
            files.append(name)
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            plain = _decoded_text(part)
        elif ctype == "text/html" and htmltext is None:
            htmltext = html.unescape(_TAGS.sub(" ", _decoded_text(part)))
    return (plain if plain is not None else htmltext or ""), files


def _leaf_bytes(part: Message) -> bytes:
    """The decoded body of a leaf part (b"" if it has none)."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _decoded_text(part: Message) -> str:
    data = _leaf_bytes(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _filename(part: Message) -> str:
    name = part.get_filename()
    return header_value(name) if name else ""


# -- MessagePart trees -------------------------------------------------------------

def payload_full(raw: bytes, message_id: str) -> dict[str, Any]:
    """The ``payload`` of ``format=full``: the MessagePart tree with partIds."""
    return _part(parse(raw), "", message_id)


def _part(part: Message, part_id: str, message_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "partId": part_id, "mimeType": part.get_content_type(),
        "filename": _filename(part),
    }
    if part.items():
        out["headers"] = [{"name": k, "value": header_value(v)} for k, v in part.items()]
    if part.is_multipart():
        out["body"] = {"size": 0}
        prefix = f"{part_id}." if part_id else ""
        out["parts"] = [_part(sub, f"{prefix}{i}", message_id)
                        for i, sub in enumerate(part.get_payload())]
        return out
    data = _leaf_bytes(part)
    if out["filename"]:
        out["body"] = {"attachmentId": attachment_id(message_id, part_id), "size": len(data)}
    elif data:
        out["body"] = {"size": len(data), "data": b64encode(data, pad=False)}
    else:
        out["body"] = {"size": 0}
    return out


def headers_only(raw: bytes, wanted: list[str] | None) -> dict[str, Any]:
    """The ``payload`` of ``format=metadata``: top-level headers, filtered if asked."""
    end = _HEADER_END.search(raw)
    msg = parse(raw[:end.end()] if end else raw, max_depth=1)  # the body stays unparsed
    keep = {w.lower() for w in wanted} if wanted else None
    out: dict[str, Any] = {"partId": "", "mimeType": msg.get_content_type(), "filename": ""}
    headers = [{"name": k, "value": header_value(v)} for k, v in msg.items()
               if keep is None or k.lower() in keep]
    if headers:  # empty lists are left out, as everywhere in Gmail's JSON
        out["headers"] = headers
    return out


def attachment_id(message_id: str, part_id: str) -> str:
    return ATTACHMENT_PREFIX + b64encode(f"{message_id}:{part_id}:".encode() * 3, pad=False)


def parse_attachment_id(value: str) -> tuple[str, str] | None:
    if not value.startswith(ATTACHMENT_PREFIX):
        return None
    try:
        text = b64decode(value[len(ATTACHMENT_PREFIX):]).decode()
        message_id, part_id = text.split(":")[:2]
    except (ValueError, UnicodeDecodeError):
        return None
    return message_id, part_id


def attachment_data(raw: bytes, part_id: str) -> bytes | None:
    """The decoded bytes of the part ``part_id`` ("1", "1.0", ...)."""
    part: Message = parse(raw)
    for index in part_id.split("."):
        if not part.is_multipart() or not index.isdigit():
            return None
        children = part.get_payload()
        if not isinstance(children, list) or int(index) >= len(children):
            return None
        child = children[int(index)]
        if not isinstance(child, Message):
            return None
        part = child
    if part.is_multipart():
        return None
    return _leaf_bytes(part)


# -- header edits on raw bytes -----------------------------------------------------

class RawMessage:
    """A raw message split into header fields (each with its folded lines) and a body."""

    def __init__(self, raw: bytes) -> None:
        self.eol = b"\r\n" if b"\r\n" in raw[:4096] or not raw else b"\n"
        if raw.startswith((b"\r\n", b"\n")):
            head, self.body = b"", raw.split(b"\n", 1)[1]
        else:
            end = _HEADER_END.search(raw)
            head, self.body = (raw, b"") if end is None else (raw[:end.start()], raw[end.end():])
        self.fields: list[list[bytes]] = []
        for line in head.splitlines():
            if line[:1] in (b" ", b"\t") and self.fields:
                self.fields[-1].append(line)
            elif line:
                self.fields.append([line])

    def names(self) -> list[str]:
        return [f[0].split(b":", 1)[0].strip().decode("latin-1").lower() for f in self.fields]

    def get(self, name: str) -> str | None:
        """The first ``name`` field's value, unfolded and decoded (None if absent)."""
        names = self.names()
        if name.lower() not in names:
            return None
        field = self.fields[names.index(name.lower())]
        text = b"".join(field).split(b":", 1)[1].decode("utf-8", "replace")
        return header_value(text.strip())

    def has(self, name: str) -> bool:
        return name.lower() in self.names()

    def remove(self, name: str) -> None:
        self.fields = [f for f, n in zip(self.fields, self.names(), strict=False) if n != name.lower()]

    def prepend(self, name: str, value: str) -> None:
        self.fields.insert(0, [f"{name}: {value}".encode()])

    def append(self, name: str, value: str) -> None:
        self.fields.append([f"{name}: {value}".encode()])

    def replace(self, name: str, value: str) -> None:
        """Set ``name`` to ``value`` in place of its first occurrence (append if absent)."""
        names = self.names()
        if name.lower() in names:
            self.fields[names.index(name.lower())] = [f"{name}: {value}".encode()]
        else:
            self.append(name, value)

    def to_bytes(self) -> bytes:
        head = self.eol.join(self.eol.join(f) for f in self.fields)
        return head + self.eol + self.eol + self.body
