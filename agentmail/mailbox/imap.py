"""The IMAP + SMTP submission adapter of the Mailbox port.

Mapping of the port's Gmail-shaped words:

- message id = ``"<UIDVALIDITY>.<UID>"`` of the INBOX copy (stable while UIDVALIDITY is);
- history id = ``"<UIDVALIDITY>:<UIDNEXT>"``; a different UIDVALIDITY is a stale cursor
  (HistoryExpired), so intake does a full sync and the journal's Message-ID rule keeps
  anything from being handled twice;
- labels = IMAP keywords: ``agent-processing`` -> ``$AgentProcessing`` and so on; the system
  label ``UNREAD`` is the absence of ``\\Seen``. ``\\Seen`` alone is never an ack: the full
  sync lists inbox mail without a done/rejected keyword, whatever its ``\\Seen`` flag;
- thread id = the first Message-ID of References (else the message's own), since IMAP has
  no provider thread id; SMTP ignores it, threading is In-Reply-To/References;
- sending = SMTP submission (:mod:`agentmail.mailbox.smtp`), then APPEND of the same bytes to
  the Sent folder, where :meth:`find_sent` looks by Message-ID and outbox-id header.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from agentmail import errors
from agentmail.mailbox.base import OUTBOX_ID_HEADER, Changes, Mailbox, MessageRef, RawMessage
from agentmail.mailbox.imap_account import ImapAccount
from agentmail.mailbox.smtp import submit

log = logging.getLogger(__name__)

INBOX = "INBOX"
SEEN = b"\\Seen"
_T = TypeVar("_T")
_SPLIT = re.compile(r"[-_/ .]+")
_MSGID = re.compile(r"<[^<>\s]+>")


def keyword(label: str) -> str:
    """``agent-processing`` -> ``$AgentProcessing`` (keywords are atoms: no ``-`` in style)."""
    return "$" + "".join(p[:1].upper() + p[1:] for p in _SPLIT.split(label) if p)


def _connect_errors(address: str, host: str, port: int, exc: BaseException) -> errors.AgentmailError:
    """One clear sentence for the usual ways a connection fails (no traceback)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return errors.MailboxUnavailable(
            f"{address}: TLS certificate of {host}:{port} does not verify "
            f"({exc.verify_message}); set tls_ca_file for a private CA")
    if isinstance(exc, ssl.SSLError):
        return errors.MailboxUnavailable(f"{address}: TLS with {host}:{port} failed: {exc.reason}")
    if isinstance(exc, socket.timeout | TimeoutError):
        return errors.MailboxUnavailable(f"{address}: {host}:{port} did not answer in time")
    if isinstance(exc, OSError):
        return errors.MailboxUnavailable(f"{address}: cannot reach {host}:{port} "
                                         f"({exc.strerror or exc})")
    return errors.MailboxUnavailable(f"{address}: {host}:{port}: {exc}")


class ImapMailbox(Mailbox):
    """One account over IMAP (reading, marks, Sent copies) and SMTP (sending)."""

    def __init__(self, account: ImapAccount, *, timeout: float = 30.0,
                 label_names: Sequence[str] = ()) -> None:
        self.address = account.address
        self.account = account
        self.timeout = timeout
        self._client: IMAPClient | None = None
        self._selected: str | None = None
        self._uidvalidity = 0
        self._sent: str | None = account.sent_folder
        self._names = {keyword(n): n for n in label_names}  # keyword -> label, for label_ids
        self.keywords_supported = True

    # --- connection ----------------------------------------------------------------------

    def connect(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        a = self.account
        host, port = a.imap_host, a.imap_port_
        ctx = a.ssl_context() if a.imap_security != "none" else None
        try:
            client = IMAPClient(host, port=port, ssl=a.imap_security == "tls",
                                ssl_context=ctx, timeout=self.timeout)
            if a.imap_security == "starttls":
                client.starttls(ctx)
        except (OSError, IMAPClientError) as exc:
            raise _connect_errors(a.address, host, port, exc) from None
        try:
            client.login(a.username, a.password())
        except LoginError:
            _quietly(client.logout)
            raise errors.AuthError(f"{a.address}: the IMAP server {host} refused the login of "
                                   f"{a.username}: check the password (or token)") from None
        except (OSError, IMAPClientError) as exc:
            raise _connect_errors(a.address, host, port, exc) from None
        self._client, self._selected = client, None
        return client

    def capabilities(self) -> list[str]:
        return sorted(c.decode() for c in self._call(lambda c: c.capabilities()))

    def _drop(self) -> None:
        if self._client is not None:
            _quietly(self._client.shutdown)
        self._client, self._selected = None, None

    def _call(self, fn: Callable[[IMAPClient], _T], attempts: int = 3) -> _T:
        """Run an idempotent IMAP step; reconnect and retry on a broken connection."""
        for attempt in range(attempts):
            client = self.connect()
            try:
                return fn(client)
            except (OSError, IMAPClientError) as exc:
                if isinstance(exc, IMAPClientError) and not isinstance(exc, client.AbortError):
                    raise errors.MailboxRejected(f"{self.address}: IMAP: {exc}") from None
                self._drop()
                if attempt + 1 == attempts:
                    raise _connect_errors(self.address, self.account.imap_host,
                                          self.account.imap_port_, exc) from None
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _select(self, c: IMAPClient, folder: str = INBOX) -> dict[bytes, Any]:
        info: dict[bytes, Any] = c.select_folder(folder)
        self._selected = folder
        if folder == INBOX:
            self._uidvalidity = int(info[b"UIDVALIDITY"])
            perm = info.get(b"PERMANENTFLAGS", ())
            self.keywords_supported = b"\\*" in perm
        return info

    def _inbox(self, c: IMAPClient) -> dict[bytes, Any]:
        return self._select(c, INBOX)

    # --- reading -------------------------------------------------------------------------

    def _cursor(self, c: IMAPClient) -> str:
        st = c.folder_status(INBOX, [b"UIDVALIDITY", b"UIDNEXT"])
        return f"{int(st[b'UIDVALIDITY'])}:{int(st[b'UIDNEXT'])}"

    def profile(self) -> tuple[str, str]:
        return self.address, self.history_point()

    def history_point(self) -> str:
        return self._call(self._cursor)

    def changes_since(self, history_id: str) -> Changes:
        try:
            validity, uidnext = (int(x) for x in history_id.split(":"))
        except ValueError:
            raise errors.HistoryExpired(f"{self.address}: not an IMAP cursor: {history_id}") from None

        def step(c: IMAPClient) -> Changes:
            info = self._inbox(c)
            if int(info[b"UIDVALIDITY"]) != validity:
                raise errors.HistoryExpired(f"{self.address}: INBOX UIDVALIDITY changed")
            cursor = f"{validity}:{int(info[b'UIDNEXT'])}"
            # "n:*" also matches the highest UID when it is below n: filter.
            uids = sorted(u for u in c.search(["UID", f"{uidnext}:*"]) if u >= uidnext)
            return Changes(tuple(self._ref(u) for u in uids), cursor)
        return self._call(step)

    def list_unread(self, limit: int) -> Changes:
        def step(c: IMAPClient) -> Changes:
            info = self._inbox(c)
            cursor = f"{self._uidvalidity}:{int(info[b'UIDNEXT'])}"
            crit: list[Any] = ["NOT", "DELETED"]
            if self.keywords_supported:
                for label in ("agent-done", "agent-rejected"):
                    name = self._label_for(label)
                    crit += ["UNKEYWORD", keyword(name)]
            else:
                crit += ["UNSEEN"]
            uids = sorted(c.search(crit))[-limit:] if limit else []
            return Changes(tuple(self._ref(u) for u in uids), cursor)
        return self._call(step)

    def _label_for(self, default: str) -> str:
        """The configured label name standing for a default one (agent-done etc.)."""
        suffix = default.split("-", 1)[1]
        for name in self._names.values():
            if name.endswith(suffix):
                return name
        return default

    def list_labelled(self, name: str, limit: int) -> list[MessageRef]:
        def step(c: IMAPClient) -> list[MessageRef]:
            self._inbox(c)
            uids = sorted(c.search(["KEYWORD", keyword(name)]), reverse=True)[:limit]
            return [self._ref(u) for u in uids]
        return self._call(step)

    def sizes(self, ids: Sequence[str]) -> dict[str, int]:
        def step(c: IMAPClient) -> dict[str, int]:
            self._inbox(c)
            uids = [u for u in (self._uid(i) for i in ids) if u is not None]
            got = c.fetch(uids, ["RFC822.SIZE"]) if uids else {}
            return {self._id(uid): int(row[b"RFC822.SIZE"]) for uid, row in got.items()
                    if b"RFC822.SIZE" in row}
        return self._call(step)

    def get_raw(self, ids: Sequence[str]) -> list[RawMessage]:
        def step(c: IMAPClient) -> list[RawMessage]:
            self._inbox(c)
            uids = [u for u in (self._uid(i) for i in ids) if u is not None]
            if not uids:
                return []
            got = c.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
            point = f"{self._uidvalidity}:{max(uids) + 1}"
            out = []
            for uid in uids:
                row = got.get(uid)
                if row is None or b"BODY[]" not in row:
                    continue
                raw = bytes(row[b"BODY[]"])
                out.append(RawMessage(id=self._id(uid), thread_id=_thread_of(raw),
                                      label_ids=self._labels(row.get(b"FLAGS", ())), raw=raw,
                                      internal_date_ms=int(row[b"INTERNALDATE"].timestamp() * 1000),
                                      history_id=point))
            return out
        return self._call(step)

    def _labels(self, flags: Sequence[bytes]) -> tuple[str, ...]:
        names = [INBOX]
        if SEEN not in flags:
            names.append("UNREAD")
        for f in flags:
            kw = f.decode(errors="replace")
            if kw in self._names:
                names.append(self._names[kw])
        return tuple(names)

    # --- marks -----------------------------------------------------------------------------

    def ensure_labels(self, names: Sequence[str]) -> None:
        for n in names:
            self._names[keyword(n)] = n
        self._call(self._inbox)
        if not self.keywords_supported:
            log.warning("%s: the server keeps no custom keywords; state lives in the journal "
                        "alone", self.address)

    def modify(self, ids: Sequence[str], add: Sequence[str] = (),
               remove: Sequence[str] = ()) -> None:
        plus = [self._flag(n, adding=True) for n in add] + \
               [SEEN for n in remove if n == "UNREAD"]
        minus = [self._flag(n, adding=False) for n in remove] + \
                [SEEN for n in add if n == "UNREAD"]
        plus = [f for f in plus if f]
        minus = [f for f in minus if f]

        def step(c: IMAPClient) -> None:
            self._inbox(c)
            uids = [u for u in (self._uid(i) for i in ids) if u is not None]
            if not uids:
                return
            if plus:
                c.add_flags(uids, plus, silent=True)
            if minus:
                c.remove_flags(uids, minus, silent=True)
        self._call(step)

    def _flag(self, name: str, *, adding: bool) -> bytes | None:
        if name in ("UNREAD", INBOX):
            return None
        if not self.keywords_supported:
            return None
        self._names.setdefault(keyword(name), name)
        return keyword(name).encode()

    # --- sending ---------------------------------------------------------------------------

    def send(self, raw: bytes, thread_id: str | None = None) -> MessageRef:
        message_id = submit(self.account, raw, timeout=self.timeout)
        try:
            self._call(lambda c: self._append_sent(c, raw), attempts=2)
        except errors.AgentmailError as exc:
            # The mail went out; only our copy is missing (find_sent then cannot see it).
            log.warning("%s: sent %s but could not keep a copy in Sent: %s",
                        self.address, message_id, exc)
        return MessageRef(id=f"sent:{message_id}", thread_id=thread_id or message_id)

    def _sent_folder(self, c: IMAPClient) -> str:
        if self._sent is None:
            found = c.find_special_folder(b"\\Sent")
            if found is None:
                found = "Sent"
                if not c.folder_exists(found):
                    c.create_folder(found)
            self._sent = found
        return self._sent

    def _append_sent(self, c: IMAPClient, raw: bytes) -> None:
        c.append(self._sent_folder(c), raw, flags=[SEEN])

    def find_sent(self, message_id: str, outbox_id: str,
                  since_history_id: str | None) -> MessageRef | None:
        def step(c: IMAPClient) -> MessageRef | None:
            folder = self._sent_folder(c)
            self._select(c, folder)
            try:
                for header, value in (("Message-ID", message_id), (OUTBOX_ID_HEADER, outbox_id)):
                    if value and c.search(["HEADER", header, value]):
                        return MessageRef(id=f"sent:{message_id}", thread_id=message_id)
                return None
            finally:
                self._inbox(c)
        return self._call(step)

    # --- push ------------------------------------------------------------------------------

    def wait_for_mail(self, timeout: float) -> bool:
        """Wait in IDLE up to ``timeout`` seconds; True when the server reported a change.

        False when the server has no IDLE (the caller then polls) or nothing happened.
        """
        client = self.connect()
        if b"IDLE" not in client.capabilities():
            return False
        try:
            self._inbox(client)
            client.idle()
            try:
                events = client.idle_check(timeout=max(0.0, min(timeout, 25 * 60)))
            finally:
                client.idle_done()
            return bool(events)
        except (OSError, IMAPClientError):
            self._drop()
            return False

    def close(self) -> None:
        if self._client is not None:
            _quietly(self._client.logout)
        self._client = None

    # --- ids -------------------------------------------------------------------------------

    def _id(self, uid: int) -> str:
        return f"{self._uidvalidity}.{uid}"

    def _ref(self, uid: int) -> MessageRef:
        return MessageRef(self._id(uid), self._id(uid))

    def _uid(self, mid: str) -> int | None:
        validity, _, uid = mid.partition(".")
        if not uid.isdigit() or validity != str(self._uidvalidity):
            return None  # another UIDVALIDITY's id: that message is gone for us
        return int(uid)


_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _thread_of(raw: bytes) -> str:
    """The conversation's root Message-ID: first of References, else In-Reply-To, else own."""
    head = _PARSER.parsebytes(raw)
    for name in ("References", "In-Reply-To", "Message-ID"):
        found = _MSGID.findall(str(head.get(name) or ""))
        if found:
            return found[0]
    return ""


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # closing a broken connection: nothing to report
        pass


@contextmanager
def opened(account: ImapAccount) -> Iterator[ImapMailbox]:
    box = ImapMailbox(account)
    try:
        yield box
    finally:
        box.close()
