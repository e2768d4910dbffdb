"""Messages: parse any bytes into a `Message`, compose JSON requests and replies as RFC 5322.

Pure: no I/O, no network, no database. Two halves:

* `parse(raw, account=..., provider_id=...)` turns the raw bytes of a received mail into the
  `Message` a handler sees. It never raises: whatever a sender wrote, the result is a
  `Message` whose `defects` say what was wrong; `agentmail.policy` decides what to reject.
* `compose_reply` / `compose_request` build the `Outgoing` mail an agent sends, with a
  deterministic Message-ID (`make_message_id`) so that a crashed run re-sends the same message
  rather than a new one, and refuse anything unsafe (header injection, bad addresses,
  non-JSON payloads) with `errors.OutgoingRejected` before producing any bytes.

Where the payload is found, in order: the first `application/json` (or `*+json`, or a
``*.json`` attachment) part, the first inline text/plain part, the text of the first HTML part.
The first complete JSON value at the start of the text counts (after a UTF-8 BOM and
whitespace), so a signature after it is ignored. An object or array may be followed by any
text; a bare scalar (``42``, ``"hi"``, ``true``) only counts when nothing else follows, so
that prose such as "2024 was a good year" is not read as the number 2024.

`Message.payload_error` says why `payload` is None although a body was there:

* ``not_json``      the text does not start like JSON (ordinary prose, an empty object aside)
* ``invalid_json``  it starts like a JSON object or array but does not parse (cut off, broken)
* ``too_deep``      nesting deeper than `ParseLimits.max_json_depth` (checked before decoding)
* ``too_large``     more than `ParseLimits.max_json_bytes` bytes of candidate text

Limits (`ParseLimits`, all counted, none raising; exceeding one adds a defect):

=================  ==========  ======================================================
max_json_bytes     1_000_000   bytes of JSON text decoded      -> ``json_too_large``
max_json_depth     64          nesting of objects and arrays   -> ``json_too_deep``
max_references     100         References kept (the last N)    -> ``too_many_references``
max_header_line    8192        characters per header value     -> ``header_too_long``
max_parts          100         MIME parts walked               -> ``too_many_parts``
max_mime_depth     20          MIME nesting                    -> ``mime_too_deep``
=================  ==========  ======================================================

Outgoing mail: the JSON payload is the text/plain (UTF-8) body, pretty-printed so people can
read it; ``X-Agentmail-Outbox-Id`` carries the Message-ID's left part so the sent copy can be
found even if the provider rewrites the Message-ID; at most `MAX_RECIPIENTS` (100, the Gmail
API's cap) recipients.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import html.parser
import json
import quopri
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from agentmail import errors

MAX_RECIPIENTS = 100  # Gmail API cap on To + Cc + Bcc of one message
AUTO_GENERATED = "auto-generated"  # Auto-Submitted of new requests (RFC 3834)
AUTO_REPLIED = "auto-replied"  # Auto-Submitted of replies
OUTBOX_ID_HEADER = "X-Agentmail-Outbox-Id"

_MSG_ID = re.compile(r"<[!-;=?-~]{1,900}>")  # printable ASCII without "<", ">" or spaces
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_ENCODED_GAP = re.compile(r"(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)\s+(?==\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
_ADDR_SPEC = re.compile(rf"{_LOCAL}@{_DOMAIN}")
_LOOSE_ADDR = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
_RE_PREFIX = re.compile(r"^\s*re\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
_JSON_SIGNIFICANT = re.compile(r'[\[\]{}"\\]')
_JSON_START_OBJECT = frozenset('"}')
_JSON_START_ARRAY = frozenset('"{[]-0123456789tfn')
_JSON_CONTENT_TYPES = ("application/json",)
_EMBEDDED_MESSAGE_TYPES = ("message/rfc822", "message/global")
_EMBEDDED_HEADER_TYPES = ("text/rfc822-headers", "message/global-headers")
_RESERVED_HEADERS = frozenset(h.lower() for h in (
    "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
    "Auto-Submitted", OUTBOX_ID_HEADER, "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Sender", "Reply-To", "Return-Path", "Received",
    "Authentication-Results"))


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on the work `parse` does for one message; exceeding one records a defect."""

    max_json_bytes: int = 1_000_000
    max_json_depth: int = 64
    max_references: int = 100
    max_header_line: int = 8192
    max_parts: int = 100
    max_mime_depth: int = 20


@dataclass(frozen=True)
class Message:
    """One received mail as a handler sees it. Built by `parse`; never mutated."""

    account: str
    provider_id: str
    thread_id: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    sender: str = ""
    sender_name: str = ""
    recipient: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    subject: str = ""
    date: datetime | None = None
    text: str = ""
    payload: Any = None
    payload_error: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    auto_submitted: str = "no"
    size: int = 0
    defects: tuple[str, ...] = ()
    content_type: str = "text/plain"
    attached_message_ids: tuple[str, ...] = ()  # Message-IDs of embedded messages (bounces)

    @property
    def key(self) -> str:
        """Stable idempotency key of this message: ``account:provider_id``."""
        return f"{self.account}:{self.provider_id}"

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True)
class Outgoing:
    """A composed mail, ready for the mailbox's send (`raw`), with the facts the journal keeps."""

    message_id: str
    outbox_id: str
    from_addr: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    thread_id: str | None
    auto_submitted: str
    payload: Any
    raw: bytes = field(repr=False)


# --- parsing -------------------------------------------------------------------------------------


def parse(raw: bytes, *, account: str, provider_id: str, thread_id: str | None = None,
          limits: ParseLimits = ParseLimits()) -> Message:
    """Parse the raw bytes of one mail. Never raises: problems are listed in `defects`."""
    try:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    except Exception:
        data = b""
    try:
        return _Parser(data, limits).message(account, provider_id, thread_id)
    except Exception as exc:  # a last resort: a bug here must not stop the agent's loop
        return Message(account=account, provider_id=provider_id, thread_id=thread_id,
                       size=len(data), defects=(f"parse_failed:{type(exc).__name__}",))


class _Parser:
    """The work of one `parse` call; collects defects as it goes."""

    def __init__(self, data: bytes, limits: ParseLimits) -> None:
        self.data = data
        self.limits = limits
        self.defects: list[str] = []

    def defect(self, name: str) -> None:
        if name not in self.defects:
            self.defects.append(name)

    def message(self, account: str, provider_id: str, thread_id: str | None) -> Message:
        try:
            root = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(self.data)
        except RecursionError:
            # The stdlib parser recurses once per nesting level; keep the headers at least.
            self.defect("mime_too_deep")
            self.defect("body_unparsed")
            root = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
                self.data, headersonly=True)
            root.set_payload("")
        raw_headers = [(str(k), self._raw_value(v, keep_tail=str(k).lower() == "references"))
                       for k, v in root.items()]
        headers = tuple((k, self.decode_header(v)) for k, v in raw_headers)
        first_raw = _first_values(raw_headers)
        for name in ("from", "subject", "message-id", "date", "in-reply-to", "references"):
            if sum(1 for k, _ in raw_headers if k.lower() == name) > 1:
                self.defect("duplicate_" + name.replace("-", "_"))
        sender, sender_name = self._sender(first_raw.get("from"))
        to = self._addresses(first_raw.get("to"))
        body = _Body(self, root)
        payload, payload_error = body.payload()
        self._email_defects(root)
        return Message(
            account=account, provider_id=provider_id, thread_id=thread_id,
            message_id=self._message_id(first_raw.get("message-id")),
            in_reply_to=_first_msg_id(first_raw.get("in-reply-to")),
            references=self._references(first_raw.get("references")),
            sender=sender, sender_name=sender_name, recipient=to[0] if to else "", to=to,
            cc=self._addresses(first_raw.get("cc")),
            reply_to=self._addresses(first_raw.get("reply-to")),
            subject=self.decode_header(first_raw.get("subject") or ""),
            date=self._date(first_raw.get("date")),
            text=body.text(), payload=payload, payload_error=payload_error, headers=headers,
            auto_submitted=_auto_submitted(first_raw.get("auto-submitted")),
            size=len(self.data), defects=tuple(self.defects),
            content_type=_content_type(root),
            attached_message_ids=tuple(body.attached_ids),
        )

    # --- headers ---

    def _raw_value(self, value: object, keep_tail: bool = False) -> str:
        """A header value as text: 8-bit bytes read as UTF-8, unfolded, length-limited.

        Over-long References keep their end: the parent's own Message-ID is the last one.
        """
        if not isinstance(value, str):  # compat32 may hold Header objects for odd input
            value = str(value)
        text = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
        text = re.sub(r"\r?\n|\r", "", text).strip()
        if len(text) > self.limits.max_header_line:
            self.defect("header_too_long")
            limit = self.limits.max_header_line
            text = text[-limit:] if keep_tail else text[:limit]
        return text

    def decode_header(self, value: str) -> str:
        """Decode RFC 2047 encoded-words (malformed ones are left as they are); no controls."""
        value = _ENCODED_GAP.sub(r"\1", value.replace("\t", " "))  # tabs: folding whitespace
        decoded = _ENCODED_WORD.sub(self._decode_word, value)
        if _CONTROL.search(decoded):
            self.defect("header_control_chars")
            decoded = _CONTROL.sub(" ", decoded)
        return decoded

    def _decode_word(self, match: re.Match[str]) -> str:
        charset, encoding, text = match.group(1).split("*")[0], match.group(2).upper(), match.group(3)
        try:
            if encoding == "B":
                data = base64.b64decode(text + "=" * (-len(text) % 4))
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("ascii", "replace"),
                                           header=True)
        except (binascii.Error, ValueError):
            self.defect("bad_encoded_word")
            return match.group(0)
        return self.decode_bytes(data, charset)

    def decode_bytes(self, data: bytes, charset: str | None) -> str:
        """Declared charset, then UTF-8, then Latin-1 (which always works)."""
        for candidate in (charset, "utf-8"):
            if not candidate:
                continue
            try:
                return data.decode(candidate)
            except LookupError:
                self.defect("unknown_charset")
            except Exception:  # UnicodeError, or a codec that is not a text codec
                if candidate == charset and candidate.lower().replace("-", "") != "utf8":
                    self.defect("wrong_charset")
        return data.decode("latin-1")

    def _sender(self, value: str | None) -> tuple[str, str]:
        if value is None:
            self.defect("no_from")
            return "", ""
        # Split addresses on the raw value: decoding first would let a display name such as
        # "=?utf-8?q?<boss@corp>?=" pose as the address.
        found = [(n, a) for n, a in email.utils.getaddresses([value]) if a]
        if len(found) != 1 or not _LOOSE_ADDR.fullmatch(found[0][1]):
            self.defect("multiple_from" if len(found) > 1 else "no_from")
            return "", ""
        name, addr = found[0]
        return addr.lower(), self.decode_header(name).strip()

    def _addresses(self, value: str | None) -> tuple[str, ...]:
        if not value:
            return ()
        out: list[str] = []
        for _, addr in email.utils.getaddresses([value]):
            addr = addr.lower()
            if _LOOSE_ADDR.fullmatch(addr) and addr not in out:
                out.append(addr)
        return tuple(out)

    def _message_id(self, value: str | None) -> str | None:
        if value is None:
            self.defect("no_message_id")
            return None
        found = _first_msg_id(value)
        if found is None:
            bare = value.strip()
            if _MSG_ID.fullmatch(f"<{bare}>") and "@" in bare:
                self.defect("message_id_unbracketed")
                return f"<{bare}>"
            self.defect("bad_message_id")
        return found

    def _references(self, value: str | None) -> tuple[str, ...]:
        refs = _MSG_ID.findall(value or "")
        if len(refs) > self.limits.max_references:
            self.defect("too_many_references")
            refs = refs[-self.limits.max_references:] if self.limits.max_references > 0 else []
        return tuple(refs)

    def _date(self, value: str | None) -> datetime | None:
        if not value:
            return None
        try:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=timezone.utc)
            return parsed.astimezone(timezone.utc)
        except Exception:  # ValueError, TypeError, OverflowError, IndexError on odd dates
            self.defect("bad_date")
            return None

    def _email_defects(self, root: email.message.Message) -> None:
        for part in _bounded_walk(root, self.limits):
            for found in getattr(part, "defects", ()):
                name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(found).__name__.removesuffix("Defect"))
                self.defect(name.lower())


def _first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key.lower(), value)
    return out


def _first_msg_id(value: str | None) -> str | None:
    found = _MSG_ID.search(value or "")
    return found.group(0) if found else None


def _auto_submitted(value: str | None) -> str:
    token = (value or "").split(";")[0].strip().lower()
    token = re.sub(r"\(.*?\)", "", token).strip()  # a comment, e.g. "auto-replied (vacation)"
    return token or "no"


def _content_type(part: email.message.Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _bounded_walk(root: email.message.Message, limits: ParseLimits) -> Iterable[email.message.Message]:
    """Parts in document order, at most `max_parts`, no deeper than `max_mime_depth`."""
    for part, _depth, _embedded in _walk(root, limits, None):
        yield part


def _walk(root: email.message.Message, limits: ParseLimits, parser: _Parser | None
          ) -> Iterable[tuple[email.message.Message, int, bool]]:
    stack: list[tuple[email.message.Message, int, bool]] = [(root, 0, False)]
    seen = 0
    while stack:
        part, depth, embedded = stack.pop()
        seen += 1
        if seen > limits.max_parts:
            if parser:
                parser.defect("too_many_parts")
            return
        yield part, depth, embedded
        children = part.get_payload() if part.is_multipart() else None
        if not isinstance(children, list) or not children:
            continue
        if depth + 1 > limits.max_mime_depth:
            if parser:
                parser.defect("mime_too_deep")
            continue
        inner = embedded or _content_type(part) in _EMBEDDED_MESSAGE_TYPES
        stack.extend((child, depth + 1, inner) for child in reversed(children)
                     if isinstance(child, email.message.Message))


class _Body:
    """Finds the text and the JSON payload among a message's parts."""

    def __init__(self, parser: _Parser, root: email.message.Message) -> None:
        self.parser = parser
        self.plain: str | None = None
        self.html: str | None = None
        self.json_part: str | None = None
        self.attached_ids: list[str] = []
        for part, _depth, embedded in _walk(root, parser.limits, parser):
            self._visit(part, embedded)

    def _visit(self, part: email.message.Message, embedded: bool) -> None:
        ctype = _content_type(part)
        if ctype in _EMBEDDED_MESSAGE_TYPES and part.is_multipart():
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                found = _first_msg_id(self.parser._raw_value(inner[0].get("Message-ID", "")))
                if found:
                    self.attached_ids.append(found)
            return
        if part.is_multipart() or embedded:
            return
        if ctype in _EMBEDDED_HEADER_TYPES:
            text = self._decode(part)
            header = re.search(r"^message-id:\s*(<[^>\r\n]*>)", text, re.IGNORECASE | re.MULTILINE)
            if header and _MSG_ID.fullmatch(header.group(1)):
                self.attached_ids.append(header.group(1))
            return
        filename = _filename(part)
        is_json = (ctype in _JSON_CONTENT_TYPES or ctype.endswith("+json")
                   or filename.lower().endswith(".json"))
        if is_json:
            if self.json_part is None:
                self.json_part = self._decode(part, default_charset="utf-8")
            return
        if _is_attachment(part):
            return
        if ctype == "text/plain" and self.plain is None:
            self.plain = self._decode(part)
        elif ctype == "text/html" and self.html is None:
            self.html = _html_to_text(self._decode(part))

    def _decode(self, part: email.message.Message, default_charset: str | None = None) -> str:
        try:
            data = part.get_payload(decode=True)
        except Exception:
            self.parser.defect("bad_transfer_encoding")
            data = None
        if not isinstance(data, bytes):
            data = b""
        try:
            charset = part.get_content_charset() or default_charset
        except Exception:
            charset = default_charset
        return self.parser.decode_bytes(data, charset).replace("\r\n", "\n")

    def text(self) -> str:
        if self.plain is not None:
            return self.plain
        return self.html or ""

    def payload(self) -> tuple[Any, str | None]:
        candidates = [c for c in (self.json_part, self.plain, self.html) if c is not None]
        first_error: str | None = None
        for candidate in candidates:
            value, error = _json_from_text(candidate, self.parser.limits)
            if error is None:
                return value, None
            if error == "empty":
                continue
            if error in ("too_deep", "too_large"):
                self.parser.defect("json_" + error)
                return None, error
            first_error = first_error or error
        return None, first_error


def _filename(part: email.message.Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        return ""
    return name if isinstance(name, str) else ""


def _is_attachment(part: email.message.Message) -> bool:
    try:
        disposition = str(part.get("Content-Disposition", "")).split(";")[0].strip().lower()
    except Exception:
        return False
    return disposition == "attachment"


class _TextExtractor(html.parser.HTMLParser):
    _BLOCK = frozenset(("p", "div", "br", "tr", "li", "pre", "h1", "h2", "h3", "h4", "h5", "h6",
                        "table", "blockquote", "hr"))
    _SKIP = frozenset(("script", "style", "head", "title"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def _html_to_text(markup: str) -> str:
    """Visible text of an HTML body (entities decoded, script/style dropped)."""
    extractor = _TextExtractor()
    try:
        extractor.feed(markup)
        extractor.close()
        text = "".join(extractor.chunks)
    except Exception:  # HTMLParser can still trip over hostile markup
        text = re.sub(r"<[^>]*>", " ", markup)
    text = re.sub(r"[ \t\r\f\v]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _json_depth_exceeds(text: str, limit: int) -> bool:
    """True when the first JSON value in `text` nests deeper than `limit` (no recursion)."""
    depth = 0
    in_string = False
    skip = -1  # position of a character escaped by a backslash
    for match in _JSON_SIGNIFICANT.finditer(text):
        char, at = match.group(0), match.start()
        if at == skip:
            continue
        if in_string:
            if char == "\\":
                skip = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
            if depth <= 0:
                return False
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_from_text(text: str, limits: ParseLimits) -> tuple[Any, str | None]:
    """The JSON value at the start of `text`, or None and why (see the module docstring)."""
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        return None, "empty"
    if text[0] not in "{[" and not _could_be_scalar(text[0]):
        return None, "not_json"
    if len(text.encode("utf-8", "surrogatepass")) > limits.max_json_bytes:
        return None, "too_large"
    if _json_depth_exceeds(text, limits.max_json_depth):
        return None, "too_deep"
    try:
        value, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):  # JSONDecodeError, NaN, over-long integers
        if text[0] == "{" and text[1:].lstrip()[:1] in _JSON_START_OBJECT:
            return None, "invalid_json"
        if text[0] == "[" and text[1:].lstrip()[:1] in _JSON_START_ARRAY:
            return None, "invalid_json"
        return None, "not_json"
    if not isinstance(value, (dict, list)) and text[end:].strip():
        return None, "not_json"  # "2024 was a good year" is prose, not the number 2024
    return value, None


def _could_be_scalar(char: str) -> bool:
    return char in '"-0123456789tfn'


# --- Message-IDs ---------------------------------------------------------------------------------


def make_message_id(inbound_message_id: str | None, agent_address: str, index: int, *,
                    salt: str = "") -> str:
    """The deterministic Message-ID of outgoing message `index` answering `inbound_message_id`.

    The same inputs always give the same id, so a run that crashed after journaling a reply
    re-sends it under the same Message-ID, which is how duplicates are recognised.
    """
    address = _mailbox(agent_address, "agent address")[1]
    domain = address.rsplit("@", 1)[1]
    seed = f"{inbound_message_id or ''}|{address}|{index}|{salt}"
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"<{digest}.{int(index)}@{domain}>"


def new_request_message_id(agent_address: str, index: int = 0) -> str:
    """A fresh Message-ID for a new conversation (salted with a random UUID)."""
    return make_message_id(None, agent_address, index, salt=uuid.uuid4().hex)


def outbox_id_of(message_id: str) -> str:
    """The left part of a Message-ID: ``<abc.0@host>`` -> ``abc.0``."""
    return message_id.strip().strip("<>").rsplit("@", 1)[0]


# --- composing -----------------------------------------------------------------------------------


def compose_reply(parent: Message, *, from_addr: str, payload: Any, index: int,
                  extra_headers: Mapping[str, str] | None = None,
                  max_recipients: int = MAX_RECIPIENTS, date: datetime | None = None,
                  limits: ParseLimits = ParseLimits(), salt: str = "") -> Outgoing:
    """A reply to `parent` carrying `payload`, threaded by RFC Message-IDs and the threadId.

    `salt` keeps replies of a different origin (agentmail's own error replies) from sharing
    Message-IDs with the handler's replies to the same message.
    """
    recipients = list(parent.reply_to) or ([parent.sender] if parent.sender else [])
    if not recipients:
        raise errors.OutgoingRejected(
            f"message {parent.key} has no sender or Reply-To address to reply to")
    subject = parent.subject if _RE_PREFIX.match(parent.subject) else f"Re: {parent.subject}".strip()
    references = list(parent.references) or ([parent.in_reply_to] if parent.in_reply_to else [])
    if parent.message_id:
        references.append(parent.message_id)
    references = [r for r in references if _MSG_ID.fullmatch(r)][-limits.max_references:]
    message_id = make_message_id(parent.message_id or parent.key, from_addr, index, salt=salt)
    return _compose(from_addr=from_addr, to=recipients, cc=(), subject=subject, payload=payload,
                    message_id=message_id, in_reply_to=parent.message_id,
                    references=tuple(references), thread_id=parent.thread_id,
                    auto_submitted=AUTO_REPLIED, extra_headers=extra_headers,
                    max_recipients=max_recipients, date=date, limits=limits)


def compose_request(*, from_addr: str, to: str | Sequence[str], subject: str, payload: Any,
                    message_id: str | None = None, index: int = 0, cc: str | Sequence[str] = (),
                    extra_headers: Mapping[str, str] | None = None, thread_id: str | None = None,
                    max_recipients: int = MAX_RECIPIENTS, date: datetime | None = None,
                    limits: ParseLimits = ParseLimits(), references: Sequence[str] = ()
                    ) -> Outgoing:
    """A new request carrying `payload`; a fresh Message-ID unless given.

    `references`: the Message-IDs of the conversation it belongs to, when it is asked on
    behalf of another message (a request to a third agent); empty starts a conversation.
    """
    if message_id is None:
        message_id = new_request_message_id(from_addr, index)
    elif not isinstance(message_id, str) or not _MSG_ID.fullmatch(message_id) or "@" not in message_id:
        raise errors.OutgoingRejected(f"invalid Message-ID {message_id!r}: expected <left@right>")
    return _compose(from_addr=from_addr, to=_as_list(to), cc=_as_list(cc), subject=subject,
                    payload=payload, message_id=message_id, in_reply_to=None,
                    references=tuple(r for r in references if _MSG_ID.fullmatch(r))[
                        -limits.max_references:],
                    thread_id=thread_id, auto_submitted=AUTO_GENERATED,
                    extra_headers=extra_headers, max_recipients=max_recipients, date=date,
                    limits=limits)


def _as_list(value: str | Sequence[str]) -> list[str]:
    if isinstance(value, str):
        _check_text(value, "recipient")
        return [f"{n} <{a}>" if n else a for n, a in email.utils.getaddresses([value])] or [value]
    return list(value)


def _compose(*, from_addr: str, to: Sequence[str], cc: Sequence[str], subject: str, payload: Any,
             message_id: str, in_reply_to: str | None, references: tuple[str, ...],
             thread_id: str | None, auto_submitted: str, extra_headers: Mapping[str, str] | None,
             max_recipients: int, date: datetime | None, limits: ParseLimits) -> Outgoing:
    # Everything is checked before any byte is produced.
    sender = _mailbox(from_addr, "From address")
    to_boxes = _dedupe([_mailbox(a, "recipient") for a in to])
    cc_boxes = [b for b in _dedupe([_mailbox(a, "Cc recipient") for a in cc])
                if b[1] not in {t[1] for t in to_boxes}]
    if not to_boxes:
        raise errors.OutgoingRejected("an outgoing message needs at least one recipient")
    if len(to_boxes) + len(cc_boxes) > max_recipients:
        raise errors.OutgoingRejected(
            f"{len(to_boxes) + len(cc_boxes)} recipients exceed the limit of {max_recipients} "
            "(setting max_recipients)")
    if not isinstance(subject, str):
        raise errors.OutgoingRejected(f"the subject must be text, not {type(subject).__name__}")
    _check_text(subject, "subject")
    extras = _checked_extra_headers(extra_headers)
    body = _json_body(payload, limits)
    outbox_id = outbox_id_of(message_id)
    when = date or datetime.now(timezone.utc)
    lines = [
        ("From", _format_mailbox(sender)),
        ("To", ", ".join(_format_mailbox(b) for b in to_boxes)),
    ]
    if cc_boxes:
        lines.append(("Cc", ", ".join(_format_mailbox(b) for b in cc_boxes)))
    lines += [("Subject", _encode_text(subject)),
              ("Date", email.utils.format_datetime(when if when.tzinfo else
                                                   when.replace(tzinfo=timezone.utc))),
              ("Message-ID", message_id)]
    if in_reply_to:
        lines.append(("In-Reply-To", in_reply_to))
    if references:
        lines.append(("References", "\r\n ".join(references)))
    lines += [("Auto-Submitted", auto_submitted), (OUTBOX_ID_HEADER, outbox_id),
              ("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=utf-8")]
    encoded_body, transfer_encoding = _transfer_encode(body)
    lines.append(("Content-Transfer-Encoding", transfer_encoding))
    lines += [(name, _encode_text(value)) for name, value in extras]
    head = "".join(f"{name}: {value}\r\n" for name, value in lines)
    return Outgoing(
        message_id=message_id, outbox_id=outbox_id, from_addr=sender[1],
        to=tuple(b[1] for b in to_boxes), cc=tuple(b[1] for b in cc_boxes), subject=subject,
        in_reply_to=in_reply_to, references=references, thread_id=thread_id,
        auto_submitted=auto_submitted, payload=payload,
        raw=head.encode("ascii") + b"\r\n" + encoded_body)


def _check_text(value: str, what: str) -> None:
    """Refuse control characters (CR and LF above all: header injection) and lone surrogates."""
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Zl", "Zp"):
            raise errors.OutgoingRejected(
                f"the {what} contains the control character {char!r}; refusing it "
                "(line breaks in headers would let the text inject headers)")


def _bare_address(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise errors.OutgoingRejected(f"the {what} must be text, not {type(value).__name__}")
    _check_text(value, what)
    addr = value.strip()
    if not _ADDR_SPEC.fullmatch(addr) or len(addr) > 254 or len(addr.split("@")[0]) > 64:
        raise errors.OutgoingRejected(f"invalid {what} {value!r}: expected an address like name@example.com")
    return addr


def _mailbox(value: str, what: str) -> tuple[str, str]:
    """("Display Name", "addr@domain") from "addr" or "Display Name <addr>"; addr lower-cased."""
    if not isinstance(value, str):
        raise errors.OutgoingRejected(f"the {what} must be text, not {type(value).__name__}")
    _check_text(value, what)
    found = email.utils.getaddresses([value])
    if len(found) != 1 or not found[0][1]:
        raise errors.OutgoingRejected(f"invalid {what} {value!r}: expected one address")
    name, addr = found[0]
    return name.strip(), _bare_address(addr, what).lower()


def _dedupe(boxes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for box in boxes:
        if box[1] not in seen:
            seen.add(box[1])
            out.append(box)
    return out


def _format_mailbox(box: tuple[str, str]) -> str:
    name, addr = box
    if not name:
        return addr
    if _is_simple_header_text(name) and re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]+", name):
        return f'"{name}" <{addr}>' if "." in name else f"{name} <{addr}>"
    return f"{_encode_words(name)} <{addr}>"


def _checked_extra_headers(extra: Mapping[str, str] | None) -> list[tuple[str, str]]:
    out = []
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise errors.OutgoingRejected(f"invalid header name {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise errors.OutgoingRejected(f"header {name} is set by agentmail and cannot be overridden")
        if not isinstance(value, str):
            raise errors.OutgoingRejected(f"the value of header {name} must be text")
        _check_text(value, f"header {name}")
        out.append((name, value))
    return out


def _is_simple_header_text(value: str) -> bool:
    """Printable ASCII that survives a header line unchanged (no folding, no look-alike words)."""
    return (len(value) <= 900 and all(" " <= c <= "~" for c in value) and "=?" not in value
            and value == value.strip() and "  " not in value)


def _encode_text(value: str) -> str:
    return value if _is_simple_header_text(value) else _encode_words(value)


def _encode_words(value: str) -> str:
    """RFC 2047 base64 encoded-words, folded; decoding drops the folding between words."""
    words, chunk = [], b""
    for char in value:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > 45:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk or not words:
        words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _json_body(payload: Any, limits: ParseLimits) -> bytes:
    try:
        text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)
        data = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise errors.OutgoingRejected(f"the payload is not JSON-serialisable: {exc}") from exc
    if len(data) > limits.max_json_bytes:
        raise errors.OutgoingRejected(
            f"the payload is {len(data)} bytes of JSON; the limit is {limits.max_json_bytes} "
            "(setting max_json_bytes)")
    if _json_depth_exceeds(text, limits.max_json_depth):
        raise errors.OutgoingRejected(
            f"the payload nests deeper than {limits.max_json_depth} levels")
    return data + b"\n"


def _transfer_encode(body: bytes) -> tuple[bytes, str]:
    lines = body.split(b"\n")
    if body.isascii() and all(len(line) <= 998 for line in lines):
        return b"\r\n".join(lines), "7bit"
    encoded = quopri.encodestring(body, quotetabs=False)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), "quoted-printable"
