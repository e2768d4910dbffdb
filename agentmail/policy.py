"""Policy: which received mail reaches a handler, and which may be answered. Pure, no I/O.

`evaluate(message, policy)` returns a `Verdict`. A rejected message never reaches the handler;
the pipeline journals it `rejected` with `Verdict.reason` and `Verdict.details` and labels it.
An accepted message may still be one that must not be answered (`may_reply` False): then
`reason` says why (``auto_submitted``, ``bulk``, ``mailing_list``, ``unauthenticated``,
``loop``), and the pipeline suppresses and journals the handler's replies.

Defaults (`TrustPolicy()`), chosen to be safe for an agent on a Gmail address:

=============================  =================  =============================================
allow_from                     ``()``             anyone who passes authentication
deny_from                      ``()``             nobody is denied
authserv_id                    ``mx.google.com``  only Gmail's own Authentication-Results count
require_auth                   ``True``           unauthenticated mail is rejected
reject_non_json                ``False``          prose from an allowed sender reaches the
                                                  handler with ``payload=None``
max_size                       10_000_000         bytes of raw message
limits                         ParseLimits()      JSON 1 MB / depth 64, 100 References,
                                                  8192-character headers, 100 MIME parts,
                                                  MIME depth 20 (see `agentmail.message`)
max_replies_per_conversation   20                 this agent's replies in one conversation
self_addresses                 ``()``             besides the mailbox's own address
error_replies                  ``False``          no structured error reply to rejected mail
allow_to                       ``()``             outgoing mail may go to any address
answer_agent_requests          ``True``           an agentmail request (``auto-generated`` with
                                                  an ``X-Agentmail-Outbox-Id``) may be answered
=============================  =================  =============================================

Sender entries (`allow_from`, `deny_from`, `allow_to`): ``name@example.com`` (that address),
``@example.com`` (that domain exactly) or ``*.example.com`` (the domain and its subdomains);
case-insensitive. Deny wins over allow.

Authentication: only the topmost ``Authentication-Results`` header whose authserv-id is
`authserv_id` counts (Gmail adds its own on top; copies a sender wrote further down are
ignored). The sender is authenticated by DMARC pass, or DKIM pass, or SPF pass, the latter two
aligned with the From domain: the From domain equals the DKIM signing domain (``header.d``, or
the domain of ``header.i`` as Gmail reports it) or SPF's ``smtp.mailfrom`` domain, or is a
subdomain of it. The reverse (a signer that is a subdomain of the From domain) is not
accepted: without the Public Suffix List, ``attacker.github.io`` could vouch for
``github.io``. With ``require_auth=False`` unauthenticated mail is accepted but never
answered; with ``authserv_id=None`` authentication is not checked at all (for providers that
add no such header) and every accepted sender may be answered.

Reasons for rejection, checked in this order: ``own_message`` (From is this agent: it is never
processed as a request), ``bounce`` (``multipart/report``, a mailer-daemon or postmaster
sender, or an empty ``Return-Path: <>``; `bounce_target` names the bounced message),
``malformed`` (no usable From, too many MIME parts, MIME too deep, unparseable),
``sender_denied``, ``sender_not_allowed``, ``unauthenticated``, ``too_large`` (the message, or
its JSON beyond ``max_json_bytes``), ``json_too_deep``, ``invalid_json`` (JSON that is cut off
or broken; any non-JSON body when `reject_non_json`).

No reply (RFC 3834) to: Auto-Submitted other than ``no`` (except, with
`answer_agent_requests`, the ``auto-generated`` requests agents send one another: answering
them is the point; ``auto-replied`` is never answered), ``Precedence: bulk|list|junk|
auto_reply``, ``X-Auto-Response-Suppress`` with All/AutoReply, ``List-Id``, unauthenticated
senders, and once this agent has sent `max_replies_per_conversation` replies in the
conversation (``loop``). A handler may still answer automatic mail explicitly; the other
checks stand. A missing Return-Path does not block replies (mail created through the Gmail
API has none); an empty one does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentmail import errors
from agentmail import message as msg

BOUNCE_SENDERS = frozenset(("mailer-daemon", "postmaster"))
MALFORMING_DEFECTS = frozenset(("no_from", "multiple_from", "too_many_parts", "mime_too_deep",
                                "body_unparsed"))


_DOMAIN_ENTRY = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
_LOCAL_ENTRY = re.compile(r"[^\s@*<>()\[\],;:\"]+")


def _normalise_entries(entries: Iterable[str], what: str) -> tuple[str, ...]:
    """Lower-case entries, refusing anything that is not ``a@b.c``, ``@b.c`` or ``*.b.c``."""
    if isinstance(entries, str):
        entries = (entries,)
    out = []
    for entry in entries:
        value = str(entry).strip().lower()
        if value.startswith("*."):
            ok = bool(_DOMAIN_ENTRY.fullmatch(value[2:]))
        elif value.startswith("@"):
            ok = bool(_DOMAIN_ENTRY.fullmatch(value[1:]))
        else:
            local, _, domain = value.rpartition("@")
            ok = bool(_LOCAL_ENTRY.fullmatch(local) and _DOMAIN_ENTRY.fullmatch(domain))
        if not ok:
            raise errors.ConfigError(
                f"invalid {what} entry {entry!r}: use name@example.com, @example.com or *.example.com")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class TrustPolicy:
    """Who may talk to an agent and how much; every default is listed in the module docstring."""

    allow_from: tuple[str, ...] = ()
    deny_from: tuple[str, ...] = ()
    authserv_id: str | None = "mx.google.com"
    require_auth: bool = True
    reject_non_json: bool = False
    max_size: int = 10_000_000
    limits: msg.ParseLimits = field(default_factory=msg.ParseLimits)
    max_replies_per_conversation: int = 20
    self_addresses: tuple[str, ...] = ()
    error_replies: bool = False
    allow_to: tuple[str, ...] = ()
    answer_agent_requests: bool = True

    def __post_init__(self) -> None:
        # Normalise so that matching is a plain comparison; bad entries fail at configuration.
        object.__setattr__(self, "allow_from", _normalise_entries(self.allow_from, "allow_from"))
        object.__setattr__(self, "deny_from", _normalise_entries(self.deny_from, "deny_from"))
        object.__setattr__(self, "allow_to", _normalise_entries(self.allow_to, "allow_to"))
        selves = (self.self_addresses,) if isinstance(self.self_addresses, str) else self.self_addresses
        object.__setattr__(self, "self_addresses", tuple(a.strip().lower() for a in selves))


@dataclass(frozen=True)
class Verdict:
    """What to do with one received message."""

    accepted: bool
    reason: str | None
    details: dict[str, Any]
    may_reply: bool


@dataclass(frozen=True)
class AuthResult:
    """One ``method=result`` of an Authentication-Results header, with its properties."""

    method: str  # dkim, spf, dmarc, arc, ...
    result: str  # pass, fail, none, ...
    properties: dict[str, str]  # "header.i" -> "@example.com", "smtp.mailfrom" -> ...


@dataclass(frozen=True)
class AuthResults:
    """The trusted Authentication-Results header of a message."""

    authserv_id: str
    results: tuple[AuthResult, ...]

    def of(self, method: str) -> list[AuthResult]:
        return [r for r in self.results if r.method == method]

    def summary(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for result in self.results:
            out.setdefault(result.method, []).append(result.result)
        return out


# --- matching ------------------------------------------------------------------------------------


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[1].lower() if "@" in address else ""


def matches(address: str, entries: Iterable[str]) -> bool:
    """True when `address` matches an entry: exact address, ``@domain``, ``*.domain``."""
    address = address.strip().lower()
    domain = domain_of(address)
    if not domain:
        return False
    for entry in entries:
        if entry.startswith("*."):
            if domain == entry[2:] or domain.endswith(entry[1:]):
                return True
        elif entry.startswith("@"):
            if domain == entry[1:]:
                return True
        elif address == entry:
            return True
    return False


# --- Authentication-Results (RFC 8601) -----------------------------------------------------------

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"([A-Za-z0-9_.\-/]+)\s*=\s*({_QUOTED}|[^\s;\"]+)")


def _strip_comments(value: str) -> str:
    """Replace (nested) comments outside quoted strings with a space."""
    out, depth, quoted, escaped = [], 0, False, False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(" ")
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split_semicolons(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_one(value: str) -> AuthResults | None:
    segments = _split_semicolons(_strip_comments(value))
    head = segments[0].split()
    if not head:
        return None
    results = []
    for segment in segments[1:]:
        pairs = _PAIR.findall(segment)
        if not pairs:
            continue  # "none", or garbage
        method, result = pairs[0]
        properties = {key.lower(): _unquote(val) for key, val in pairs[1:]}
        results.append(AuthResult(method=method.split("/")[0].lower(),
                                  result=_unquote(result).lower(), properties=properties))
    return AuthResults(authserv_id=_unquote(head[0]).lower(), results=tuple(results))


def parse_authentication_results(headers: msg.Message | Iterable[tuple[str, str]],
                                 authserv_id: str = "mx.google.com") -> AuthResults | None:
    """The topmost Authentication-Results header from `authserv_id`, parsed; None if none.

    Headers further down with the same authserv-id were there before the provider received
    the message, so a sender could have written them: they are ignored.
    """
    pairs = headers.headers if isinstance(headers, msg.Message) else headers
    wanted = authserv_id.lower()
    for name, value in pairs:
        if name.lower() != "authentication-results":
            continue
        parsed = _parse_one(value)
        if parsed is not None and parsed.authserv_id == wanted:
            return parsed
    return None


def _aligned(authenticated_domain: str, from_domain: str) -> bool:
    """The From domain equals, or is a subdomain of, the authenticated domain."""
    auth = authenticated_domain.strip().strip(".").lower()
    frm = from_domain.strip().strip(".").lower()
    if not auth or not frm or "." not in auth:
        return False
    return frm == auth or frm.endswith("." + auth)


def authenticated(auth: AuthResults | None, from_domain: str) -> bool:
    """DMARC pass, or DKIM or SPF pass aligned with `from_domain` (see the module docstring)."""
    if auth is None or not from_domain:
        return False
    for result in auth.of("dmarc"):
        header_from = result.properties.get("header.from", from_domain)
        if result.result == "pass" and header_from.lower() == from_domain.lower():
            return True
    for result in auth.of("dkim"):
        signer = result.properties.get("header.d") or domain_of(result.properties.get("header.i", ""))
        if result.result == "pass" and _aligned(signer, from_domain):
            return True
    for result in auth.of("spf"):
        mailfrom = result.properties.get("smtp.mailfrom", "")
        if result.result == "pass" and _aligned(domain_of(mailfrom) or mailfrom, from_domain):
            return True
    return False


# --- bounces and automatic mail ------------------------------------------------------------------


def is_bounce(message: msg.Message) -> bool:
    """A delivery report: multipart/report, a mailer-daemon/postmaster sender, ``Return-Path: <>``."""
    if message.content_type == "multipart/report":
        return True
    if message.sender and message.sender.split("@")[0] in BOUNCE_SENDERS:
        return True
    return_path = message.header("Return-Path")
    return return_path is not None and return_path.replace(" ", "") == "<>"


def bounce_target(message: msg.Message) -> str | None:
    """The Message-ID of the message a bounce reports on, when it can be linked."""
    if message.attached_message_ids:
        return message.attached_message_ids[0]
    if message.in_reply_to:
        return message.in_reply_to
    return message.references[-1] if message.references else None


def reply_blockers(message: msg.Message, *, replies_in_conversation: int = 0,
                   policy: TrustPolicy | None = None) -> list[str]:
    """Why an automatic reply to `message` must not be sent (RFC 3834), most important first."""
    policy = policy or TrustPolicy()
    blockers = []
    suppress = (message.header("X-Auto-Response-Suppress") or "").lower()
    agent_request = (policy.answer_agent_requests and message.auto_submitted == msg.AUTO_GENERATED
                     and message.header(msg.OUTBOX_ID_HEADER) is not None)
    if ((message.auto_submitted != "no" and not agent_request) or "all" in suppress or "autoreply" in suppress
            or (message.header("Precedence") or "").strip().lower() == "auto_reply"):
        blockers.append("auto_submitted")
    if (message.header("Precedence") or "").strip().lower() in ("bulk", "list", "junk"):
        blockers.append("bulk")
    if message.header("List-Id") is not None:
        blockers.append("mailing_list")
    if replies_in_conversation >= policy.max_replies_per_conversation:
        blockers.append("loop")
    return blockers


# --- the verdict ---------------------------------------------------------------------------------


def _reject(reason: str, may_reply: bool = False, **details: Any) -> Verdict:
    return Verdict(accepted=False, reason=reason, details=details, may_reply=may_reply)


def evaluate(message: msg.Message, policy: TrustPolicy, *, replies_in_conversation: int = 0
             ) -> Verdict:
    """Accept or reject `message`, and say whether it may be answered."""
    sender = message.sender
    selves = {message.account.lower(), *policy.self_addresses}
    if sender and sender in selves:
        return _reject("own_message", sender=sender)
    if is_bounce(message):
        return _reject("bounce", sender=sender, bounce_target=bounce_target(message))
    broken = [d for d in message.defects if d in MALFORMING_DEFECTS or d.startswith("parse_failed")]
    if broken or not sender:
        return _reject("malformed", defects=broken or ["no_from"])
    if matches(sender, policy.deny_from):
        return _reject("sender_denied", sender=sender)
    if policy.allow_from and not matches(sender, policy.allow_from):
        return _reject("sender_not_allowed", sender=sender)
    auth_ok = True
    auth_details: dict[str, Any] = {"checked": False}
    if policy.authserv_id is not None:
        auth = parse_authentication_results(message.headers, policy.authserv_id)
        auth_ok = authenticated(auth, domain_of(sender))
        auth_details = {"checked": True, "authserv_id": policy.authserv_id, "passed": auth_ok,
                        "results": auth.summary() if auth else None}
        if not auth_ok and policy.require_auth:
            return _reject("unauthenticated", sender=sender, auth=auth_details)
    content = _content_problem(message, policy)
    if content is not None:
        reason, details = content
        may_error_reply = (policy.error_replies and auth_ok and reason != "too_large"
                           and not reply_blockers(message, replies_in_conversation=replies_in_conversation,
                                                  policy=policy))
        return _reject(reason, may_reply=may_error_reply, sender=sender, **details)
    blockers = ([] if auth_ok else ["unauthenticated"]) + reply_blockers(
        message, replies_in_conversation=replies_in_conversation, policy=policy)
    details = {"sender": sender, "auth": auth_details}
    if blockers:
        details["reply_blocked"] = blockers
    return Verdict(accepted=True, reason=blockers[0] if blockers else None, details=details,
                   may_reply=not blockers)


def _content_problem(message: msg.Message, policy: TrustPolicy) -> tuple[str, dict[str, Any]] | None:
    if message.size > policy.max_size:
        return "too_large", {"size": message.size, "limit": policy.max_size, "limit_name": "max_size"}
    error = message.payload_error
    if error == "too_large" or "json_too_large" in message.defects:
        return "too_large", {"limit": policy.limits.max_json_bytes, "limit_name": "max_json_bytes"}
    if error == "too_deep" or "json_too_deep" in message.defects:
        return "json_too_deep", {"limit": policy.limits.max_json_depth}
    if error == "invalid_json":
        return "invalid_json", {"payload_error": error}
    if policy.reject_non_json and message.payload is None and (
            error is not None or not _is_explicit_null(message)):
        return "invalid_json", {"payload_error": error or "empty"}
    return None


def _is_explicit_null(message: msg.Message) -> bool:
    """A body that is literally the JSON ``null`` (a valid payload), not an empty body."""
    return message.text.lstrip("\ufeff \t\r\n").startswith("null")


def check_recipients(outgoing: msg.Outgoing, policy: TrustPolicy) -> None:
    """Refuse outgoing mail to an address outside `policy.allow_to` (when that list is set)."""
    if not policy.allow_to:
        return
    refused = [a for a in (*outgoing.to, *outgoing.cc) if not matches(a, policy.allow_to)]
    if refused:
        raise errors.OutgoingRejected(
            f"recipient(s) {', '.join(refused)} are not in the allow_to list; nothing was sent")


# --- bounces ------------------------------------------------------------------------------------

DIAGNOSTIC_CHARS = 500  # of a bounce's diagnostic, kept in its delivery_failed event
_DSN_FIELD = re.compile(rb"^(Diagnostic-Code|Status|Action|Final-Recipient):[ \t]*(.*(?:\r?\n[ \t].*)*)",
                        re.IGNORECASE | re.MULTILINE)


def bounce_diagnostic(raw: bytes) -> dict[str, str]:
    """Status, Action, Final-Recipient and Diagnostic-Code of a DSN, as far as present."""
    found: dict[str, str] = {}
    for name, value in _DSN_FIELD.findall(raw[:1_000_000]):
        key = name.decode("ascii").lower().replace("-", "_")
        text = " ".join(value.decode("utf-8", "replace").split())[:DIAGNOSTIC_CHARS]
        found.setdefault(key, text)
    return found
