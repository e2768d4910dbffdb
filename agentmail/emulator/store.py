"""The emulator's mailboxes in SQLite: accounts, labels, messages, threads, history.

One connection guarded by one lock: every public method is one transaction,
so concurrent requests never interleave inside an operation and a failing
request rolls back whole (``BEGIN IMMEDIATE`` ... ``COMMIT``). On a file the
journal mode is WAL. Messages are indexed by label and by date, history by
(account, id), so listing and history reads never scan other mailboxes.

Ids: message ids are 16 hex digits, increasing (milliseconds << 20 | counter);
the first message of a thread gives the thread its id. History ids are per
mailbox, one per record, strictly increasing.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Set
from email import utils as email_utils
from typing import Any

from agentmail.emulator import errors, mime, query

SYSTEM_LABELS = (
    "INBOX", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT", "SENT", "DRAFT", "CHAT",
    "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)
NOT_ADDABLE = frozenset({"SENT", "DRAFT", "CHAT"})
HIDDEN_BY_DEFAULT = frozenset({"SPAM", "TRASH"})
HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
PAYLOAD_CACHE_SIZE = 512
PIVOT_COUNT_CAP = 2000  # enough to tell a rare label from a common one
FIRST_HISTORY_ID = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    email TEXT PRIMARY KEY, history_id INTEGER NOT NULL, history_floor INTEGER NOT NULL,
    next_label INTEGER NOT NULL, messages_total INTEGER NOT NULL DEFAULT 0,
    threads_total INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS labels (
    account TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, folded TEXT NOT NULL,
    message_list_visibility TEXT, label_list_visibility TEXT, color TEXT,
    PRIMARY KEY (account, id));
CREATE UNIQUE INDEX IF NOT EXISTS labels_folded ON labels (account, folded);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    thread_id TEXT NOT NULL, internal_date INTEGER NOT NULL, history_id INTEGER NOT NULL,
    labels TEXT NOT NULL, size INTEGER NOT NULL, snippet TEXT NOT NULL,
    hdr_from TEXT NOT NULL, hdr_to TEXT NOT NULL, hdr_cc TEXT NOT NULL, hdr_bcc TEXT NOT NULL,
    delivered_to TEXT NOT NULL, list TEXT NOT NULL, subject TEXT NOT NULL,
    subject_key TEXT NOT NULL, rfc822_id TEXT NOT NULL, has_attachment INTEGER NOT NULL,
    filenames TEXT NOT NULL, search_text TEXT NOT NULL, raw BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS messages_account_date ON messages (account, internal_date);
CREATE INDEX IF NOT EXISTS messages_thread ON messages (account, thread_id);
CREATE INDEX IF NOT EXISTS messages_rfc822 ON messages (account, rfc822_id);
CREATE TABLE IF NOT EXISTS message_labels (
    account TEXT NOT NULL, label_id TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (account, label_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    account TEXT NOT NULL, id INTEGER NOT NULL, kind TEXT NOT NULL, message_id TEXT NOT NULL,
    thread_id TEXT NOT NULL, labels TEXT NOT NULL, changed TEXT NOT NULL,
    PRIMARY KEY (account, id)) WITHOUT ROWID;
"""

# search rows: these keys always, then what the query reads (key -> column where they differ)
_SEARCH_KEYS = ("seq", "id", "thread_id", "internal_date", "labels")
_SEARCH_COLUMNS = {"from": "hdr_from", "to": "hdr_to", "cc": "hdr_cc", "bcc": "hdr_bcc"}
_ROW_COLUMNS = ("seq, id, thread_id, internal_date, history_id, labels, size, snippet, "
                "hdr_from, hdr_to, hdr_cc, hdr_bcc, delivered_to, list, subject, subject_key, "
                "rfc822_id, has_attachment, filenames")


def _labels_text(labels: Iterable[str]) -> str:
    return " " + " ".join(labels) + " "


def _ordered(labels: Iterable[str]) -> list[str]:
    """Label ids in a stable order (system order first, then user labels)."""
    order = {name: i for i, name in enumerate(SYSTEM_LABELS)}
    return sorted(set(labels), key=lambda lbl: (order.get(lbl, len(order)), lbl))


def _to_row(cur: sqlite3.Cursor, values: tuple) -> dict[str, Any]:
    row = {col[0]: v for col, v in zip(cur.description, values, strict=False)}
    if "labels" in row:
        row["labels"] = row["labels"].split()
    for src, dst in (("hdr_from", "from"), ("hdr_to", "to"), ("hdr_cc", "cc"),
                     ("hdr_bcc", "bcc")):
        if src in row:
            row[dst] = row.pop(src)
    return row


class Store:
    """Mailboxes for any number of accounts; ``path`` a file or ``":memory:"``."""

    def __init__(self, path: str = ":memory:", *, history_retention: int | None = None) -> None:
        self.path = path
        self.history_retention = history_retention
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._payloads: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._last_id = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, tuple(args))
        return [_to_row(cur, values) for values in cur.fetchall()]

    def _new_id(self) -> str:
        value = max(self._last_id + 1, (time.time_ns() // 1_000_000) << 20)
        self._last_id = value
        return format(value, "016x")

    # -- accounts ------------------------------------------------------------------

    def _account(self, db: sqlite3.Connection, email: str) -> tuple[int, int]:
        row = db.execute("SELECT history_id, history_floor FROM accounts WHERE email = ?",
                         (email,)).fetchone()
        if row is None:
            db.execute("INSERT INTO accounts (email, history_id, history_floor, next_label) "
                       "VALUES (?, ?, ?, 1)",
                       (email, FIRST_HISTORY_ID, FIRST_HISTORY_ID - 1))
            return FIRST_HISTORY_ID, FIRST_HISTORY_ID - 1
        return row

    def ensure_account(self, email: str) -> None:
        with self._tx() as db:
            self._account(db, email)

    def accounts(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT email FROM accounts ORDER BY email")]

    def profile(self, email: str) -> dict[str, Any]:
        with self._tx() as db:
            history_id, _ = self._account(db, email)
            # kept up to date by _store and delete: no scan of the mailbox
            total, threads = db.execute(
                "SELECT messages_total, threads_total FROM accounts WHERE email = ?",
                (email,)).fetchone()
        return {"emailAddress": email, "messagesTotal": total, "threadsTotal": threads,
                "historyId": str(history_id)}

    def reset(self) -> None:
        with self._tx() as db:
            for table in ("accounts", "labels", "messages", "message_labels", "history"):
                db.execute(f"DELETE FROM {table}")
            self._payloads.clear()

    def check(self) -> list[str]:
        """What is inconsistent in the store (empty when all is well).

        Checks SQLite's own integrity, each account's counters against its
        messages, historyIds never behind the records, and the label index
        (``message_labels``) against the labels column of every message.
        """
        problems: list[str] = []
        with self._lock:
            db = self._db
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                problems.append(f"sqlite integrity: {verdict}")
            for email, total, threads, history_id in db.execute(
                    "SELECT email, messages_total, threads_total, history_id FROM accounts"
            ).fetchall():
                count, thread_count, newest = db.execute(
                    "SELECT COUNT(*), COUNT(DISTINCT thread_id), MAX(history_id) "
                    "FROM messages WHERE account = ?", (email,)).fetchone()
                if (count, thread_count) != (total, threads):
                    problems.append(f"{email}: totals {total}/{threads}, "
                                    f"stored {count}/{thread_count}")
                last_record = db.execute("SELECT MAX(id) FROM history WHERE account = ?",
                                         (email,)).fetchone()[0]
                if max(newest or 0, last_record or 0) > history_id:
                    problems.append(f"{email}: historyId {history_id} behind its records")
            known = {(a, i) for a, i in db.execute("SELECT account, id FROM labels")}
            index = set(db.execute("SELECT account, label_id, seq FROM message_labels"))
            column = set()
            for seq, account, labels in db.execute("SELECT seq, account, labels FROM messages"):
                for label in labels.split():
                    column.add((account, label, seq))
                    if label not in SYSTEM_LABELS and (account, label) not in known:
                        problems.append(f"{account}: message {seq} has unknown label {label}")
            if index != column:
                problems.append(f"label index differs from messages: "
                                f"{len(index - column)} extra, {len(column - index)} missing")
            orphans = db.execute("SELECT COUNT(*) FROM messages WHERE account NOT IN "
                                 "(SELECT email FROM accounts)").fetchone()[0]
            if orphans:
                problems.append(f"{orphans} messages without an account")
        return problems

    # -- labels --------------------------------------------------------------------

    def _user_labels(self, db: sqlite3.Connection, email: str) -> list[dict[str, Any]]:
        cur = db.execute("SELECT id, name, folded, message_list_visibility, "
                         "label_list_visibility, color FROM labels WHERE account = ? "
                         "ORDER BY rowid", (email,))
        return [_to_row(cur, v) for v in cur.fetchall()]

    def label_fold_map(self, email: str) -> dict[str, str]:
        """Folded label name -> id, system labels included (for ``label:`` in queries)."""
        with self._lock:
            out = {query.fold_label(name): name for name in SYSTEM_LABELS}
            for row in self._user_labels(self._db, email):
                out[row["folded"]] = row["id"]
            return out

    def _known_labels(self, db: sqlite3.Connection, email: str) -> set[str]:
        return set(SYSTEM_LABELS) | {r[0] for r in db.execute(
            "SELECT id FROM labels WHERE account = ?", (email,))}

    def list_labels(self, email: str) -> list[dict[str, Any]]:
        with self._tx() as db:
            self._account(db, email)
            users = self._user_labels(db, email)
        return [_system_label(name) for name in SYSTEM_LABELS] + [_user_label(r) for r in users]

    def get_label(self, email: str, label_id: str) -> dict[str, Any]:
        with self._tx() as db:
            self._account(db, email)
            if label_id in SYSTEM_LABELS:
                label = _system_label(label_id)
            else:
                rows = [r for r in self._user_labels(db, email) if r["id"] == label_id]
                if not rows:
                    raise errors.not_found()
                label = _user_label(rows[0])
            label.update(self._label_counts(db, email, label_id))
        return label

    def _label_counts(self, db: sqlite3.Connection, email: str, label_id: str) -> dict[str, int]:
        total, threads = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT m.thread_id) FROM message_labels l "
            "JOIN messages m ON m.seq = l.seq WHERE l.account = ? AND l.label_id = ?",
            (email, label_id)).fetchone()
        unread, unread_threads = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT m.thread_id) FROM message_labels l "
            "JOIN messages m ON m.seq = l.seq WHERE l.account = ? AND l.label_id = ? "
            "AND m.labels LIKE '% UNREAD %'", (email, label_id)).fetchone()
        return {"messagesTotal": total, "messagesUnread": unread, "threadsTotal": threads,
                "threadsUnread": unread_threads}

    def create_label(self, email: str, body: dict[str, Any]) -> dict[str, Any]:
        name = _label_name(body.get("name"))
        with self._tx() as db:
            self._account(db, email)
            self._check_clash(db, email, name, None)
            number = db.execute("SELECT next_label FROM accounts WHERE email = ?",
                                (email,)).fetchone()[0]
            db.execute("UPDATE accounts SET next_label = next_label + 1 WHERE email = ?",
                       (email,))
            label_id = f"Label_{number}"
            db.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)", (
                email, label_id, name, query.fold_label(name),
                _visibility(body, "messageListVisibility") or "show",
                _visibility(body, "labelListVisibility") or "labelShow",
                _color_text(body.get("color"))))
        return self.get_label(email, label_id)

    def _check_clash(self, db: sqlite3.Connection, email: str, name: str,
                     own_id: str | None) -> None:
        folded = query.fold_label(name)
        if folded in {query.fold_label(s) for s in SYSTEM_LABELS}:
            raise errors.conflict()
        row = db.execute("SELECT id FROM labels WHERE account = ? AND folded = ?",
                         (email, folded)).fetchone()
        if row and row[0] != own_id:
            raise errors.conflict()

    def update_label(self, email: str, label_id: str, body: dict[str, Any], *,
                     patch: bool) -> dict[str, Any]:
        if label_id in SYSTEM_LABELS:
            raise errors.invalid("Invalid update request")
        with self._tx() as db:
            rows = [r for r in self._user_labels(db, email) if r["id"] == label_id]
            if not rows:
                raise errors.not_found()
            row = rows[0]
            if "name" in body or not patch:
                name = _label_name(body.get("name"))
                self._check_clash(db, email, name, label_id)
            else:
                name = row["name"]
            mlv = _visibility(body, "messageListVisibility") or (
                row["message_list_visibility"] if patch else "show")
            llv = _visibility(body, "labelListVisibility") or (
                row["label_list_visibility"] if patch else "labelShow")
            color = _color_text(body["color"]) if "color" in body else (
                row["color"] if patch else None)
            db.execute("UPDATE labels SET name = ?, folded = ?, message_list_visibility = ?, "
                       "label_list_visibility = ?, color = ? WHERE account = ? AND id = ?",
                       (name, query.fold_label(name), mlv, llv, color, email, label_id))
        return self.get_label(email, label_id)

    def delete_label(self, email: str, label_id: str) -> None:
        if label_id in SYSTEM_LABELS:
            raise errors.invalid("Invalid delete request")
        with self._tx() as db:
            if not db.execute("DELETE FROM labels WHERE account = ? AND id = ?",
                              (email, label_id)).rowcount:
                raise errors.not_found()
            seqs = [r[0] for r in db.execute(
                "SELECT seq FROM message_labels WHERE account = ? AND label_id = ?",
                (email, label_id))]
            for seq in seqs:
                labels = db.execute("SELECT labels FROM messages WHERE seq = ?",
                                    (seq,)).fetchone()[0].split()
                db.execute("UPDATE messages SET labels = ? WHERE seq = ?",
                           (_labels_text(lbl for lbl in labels if lbl != label_id), seq))
            db.execute("DELETE FROM message_labels WHERE account = ? AND label_id = ?",
                       (email, label_id))

    # -- history -------------------------------------------------------------------

    def _record(self, db: sqlite3.Connection, email: str, kind: str, message_id: str,
                thread_id: str, labels: Iterable[str], changed: Iterable[str] = ()) -> int:
        """Append one history record; returns its id (the mailbox's new historyId)."""
        db.execute("UPDATE accounts SET history_id = history_id + 1 WHERE email = ?", (email,))
        history_id = db.execute("SELECT history_id FROM accounts WHERE email = ?",
                                (email,)).fetchone()[0]
        db.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (email, history_id, kind, message_id, thread_id, _labels_text(labels),
                    _labels_text(changed)))
        if self.history_retention is not None:
            floor = history_id - self.history_retention
            if floor > 0:
                db.execute("DELETE FROM history WHERE account = ? AND id <= ?", (email, floor))
                db.execute("UPDATE accounts SET history_floor = MAX(history_floor, ?) "
                           "WHERE email = ?", (floor, email))
        return history_id

    def expire_history(self, email: str | None = None) -> None:
        """Forget all history records so far (of one account, or all): old ids now 404."""
        with self._tx() as db:
            emails = [email] if email else [r[0] for r in db.execute("SELECT email FROM accounts")]
            for addr in emails:
                self._account(db, addr)
                db.execute("DELETE FROM history WHERE account = ?", (addr,))
                db.execute("UPDATE accounts SET history_floor = history_id WHERE email = ?",
                           (addr,))

    def history(self, email: str, start: int, types: list[str], label_id: str | None,
                max_results: int, after_id: int | None) -> tuple[list[dict[str, Any]], int, bool]:
        """(records, mailbox historyId, more pages). 404 when ``start`` is no longer kept."""
        with self._tx() as db:
            current, floor = self._account(db, email)
            if start < floor:
                raise errors.not_found()
            sql = ["SELECT id, kind, message_id, thread_id, labels, changed FROM history "
                   "WHERE account = ? AND id > ?"]
            args: list[Any] = [email, max(start, after_id or 0)]
            if types:
                sql.append(f"AND kind IN ({','.join('?' * len(types))})")
                args += types
            if label_id:
                sql.append("AND (labels LIKE ? OR changed LIKE ?)")
                args += [f"% {label_id} %"] * 2
            sql.append("ORDER BY id LIMIT ?")
            args.append(max_results + 1)
            cur = db.execute(" ".join(sql), args)
            rows = [_to_row(cur, v) for v in cur.fetchall()]
        return rows[:max_results], current, len(rows) > max_results

    # -- storing messages ----------------------------------------------------------

    def _store(self, db: sqlite3.Connection, email: str, raw: bytes, labels: list[str],
               thread_id: str | None, internal_date: int,
               summary: dict[str, Any] | None = None) -> dict[str, Any]:
        summary = summary or mime.summarize(raw)
        message_id = self._new_id()
        thread_id = thread_id or message_id
        labels = _ordered(labels)
        cur = db.execute(
            "INSERT INTO messages (id, account, thread_id, internal_date, history_id, labels, "
            "size, snippet, hdr_from, hdr_to, hdr_cc, hdr_bcc, delivered_to, list, subject, "
            "subject_key, rfc822_id, has_attachment, filenames, search_text, raw) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message_id, email, thread_id, internal_date, _labels_text(labels), len(raw),
             summary["snippet"], summary["from"], summary["to"], summary["cc"], summary["bcc"],
             summary["delivered_to"], summary["list"], summary["subject"],
             summary["subject_key"], summary["rfc822_id"], int(summary["has_attachment"]),
             summary["filenames"], summary["search_text"], raw))
        seq = cur.lastrowid
        db.execute("UPDATE accounts SET messages_total = messages_total + 1, "
                   "threads_total = threads_total + ? WHERE email = ?",
                   (int(thread_id == message_id), email))
        db.executemany("INSERT INTO message_labels VALUES (?, ?, ?)",
                       [(email, lbl, seq) for lbl in labels])
        history_id = self._record(db, email, "messageAdded", message_id, thread_id, labels)
        db.execute("UPDATE messages SET history_id = ? WHERE seq = ?", (history_id, seq))
        return {"id": message_id, "thread_id": thread_id, "labels": labels,
                "history_id": history_id}

    def _thread_for(self, db: sqlite3.Connection, email: str, summary: dict[str, Any],
                    thread_id: str | None) -> str | None:
        """The thread a new message joins in ``email``'s mailbox, None for a new one.

        With an explicit ``thread_id`` (send/insert/import) the message joins only
        if it references a message of that thread and the subjects match, as Gmail
        documents; otherwise, as on delivery, any thread holding a referenced
        Message-ID with the same normalised subject is joined.
        """
        refs = summary["refs"].split()
        if thread_id is not None:
            if not db.execute("SELECT 1 FROM messages WHERE account = ? AND thread_id = ?",
                              (email, thread_id)).fetchone():
                raise errors.not_found()
            if not refs:
                return None
            marks = ",".join("?" * len(refs))
            hit = db.execute(
                f"SELECT 1 FROM messages WHERE account = ? AND thread_id = ? "
                f"AND rfc822_id IN ({marks}) LIMIT 1", (email, thread_id, *refs)).fetchone()
            subject_ok = db.execute(
                "SELECT 1 FROM messages WHERE account = ? AND thread_id = ? AND subject_key = ? "
                "LIMIT 1", (email, thread_id, summary["subject_key"])).fetchone()
            return thread_id if hit and subject_ok else None
        if not refs:
            return None
        marks = ",".join("?" * len(refs))
        row = db.execute(
            f"SELECT thread_id FROM messages WHERE account = ? AND rfc822_id IN ({marks}) "
            f"AND subject_key = ? ORDER BY seq DESC LIMIT 1",
            (email, *refs, summary["subject_key"])).fetchone()
        return row[0] if row else None

    def _check_labels(self, db: sqlite3.Connection, email: str, labels: Iterable[str],
                      *, adding: bool) -> None:
        known = self._known_labels(db, email)
        for label in labels:
            if label not in known or (adding and label in NOT_ADDABLE):
                raise errors.invalid(f"Invalid label: {label}")

    def insert(self, email: str, raw: bytes, *, label_ids: Iterable[str] = (),
               thread_id: str | None = None, internal_date: int | None = None,
               date_from_header: bool = False) -> dict[str, Any]:
        """messages.insert / import (and the test helper ``deliver``): no headers added."""
        summary = mime.summarize(raw)
        labels = list(label_ids)
        now = int(time.time() * 1000)
        if internal_date is None:
            internal_date = (summary["date_ms"] or now) if date_from_header else now
        with self._tx() as db:
            self._account(db, email)
            self._check_labels(db, email, [lbl for lbl in labels if lbl != "SENT"],
                               adding=True)
            if email in mime.addresses(summary["from"]) and "SENT" not in labels:
                labels.append("SENT")
            joined = self._thread_for(db, email, summary, thread_id)
            return self._store(db, email, raw, labels, joined, internal_date, summary)

    def send(self, email: str, raw: bytes, *, thread_id: str | None,
             rewrite_message_id: bool = False) -> dict[str, Any]:
        """messages.send: the SENT copy, plus an INBOX+UNREAD copy for each recipient."""
        msg = mime.RawMessage(raw)
        from_header = msg.get("From") or ""
        sender = mime.addresses(from_header)
        if not sender or sender[0] != email:
            msg.replace("From", _formataddr(_display_name(from_header), email))
        if rewrite_message_id or not msg.has("Message-ID"):
            msg.replace("Message-ID", mime.new_message_id())
        if not msg.has("Date"):
            msg.replace("Date", _rfc2822_now())
        sent_raw = msg.to_bytes()
        summary = mime.summarize(sent_raw)
        recipients = list(dict.fromkeys(mime.addresses(
            ", ".join((summary["to"], summary["cc"], summary["bcc"])))))
        if not recipients:
            raise errors.invalid("Recipient address required")
        now = int(time.time() * 1000)
        msg.remove("Bcc")
        msg.fields.insert(0, _auth_results(email, sent_raw, msg.eol))
        delivered_raw = msg.to_bytes()
        # the delivered copy differs only by Bcc (not searchable there) and Auth-Results
        delivered_summary = {**summary, "bcc": ""}
        with self._tx() as db:
            self._account(db, email)
            labels = ["SENT"] + (["INBOX", "UNREAD"] if email in recipients else [])
            joined = self._thread_for(db, email, summary, thread_id)
            sent = self._store(db, email, sent_raw, labels, joined, now, summary)
            for rcpt in recipients:
                if rcpt == email:
                    continue
                self._account(db, rcpt)
                rthread = self._thread_for(db, rcpt, delivered_summary, None)
                self._store(db, rcpt, delivered_raw, ["INBOX", "UNREAD"], rthread, now,
                            delivered_summary)
        return sent

    # -- reading messages ----------------------------------------------------------

    def get(self, email: str, message_id: str, *, raw: bool = False) -> dict[str, Any]:
        cols = _ROW_COLUMNS + (", raw" if raw else "")
        with self._lock:
            rows = self._rows(f"SELECT {cols} FROM messages WHERE id = ? AND account = ?",
                              (message_id, email))
        if not rows:
            raise errors.not_found()
        return rows[0]

    def raw(self, email: str, message_id: str) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT raw FROM messages WHERE id = ? AND account = ?",
                                   (message_id, email)).fetchone()
        if row is None:
            raise errors.not_found()
        return bytes(row[0])

    def payload(self, email: str, message_id: str) -> dict[str, Any]:
        """The format=full MessagePart tree, cached (stored messages never change)."""
        with self._lock:
            cached = self._payloads.get(message_id)
            if cached is not None:
                self._payloads.move_to_end(message_id)
                return cached
        tree = mime.payload_full(self.raw(email, message_id), message_id)
        with self._lock:
            self._payloads[message_id] = tree
            while len(self._payloads) > PAYLOAD_CACHE_SIZE:
                self._payloads.popitem(last=False)
        return tree

    def search(self, email: str, q: str | None, label_ids: list[str],
               include_spam_trash: bool) -> list[dict[str, Any]]:
        """Matching messages, newest first (rows without raw)."""
        compiled = query.Compiled(q or "", query.Context(email, self.label_fold_map(email)))
        required = set(label_ids) | compiled.required_labels
        hide = set() if include_spam_trash else HIDDEN_BY_DEFAULT - compiled.unhidden
        hide -= set(label_ids)
        if compiled.label_only:
            return self._search_labels(email, required, hide)
        # only the columns the query reads: building a row costs per column
        keys = _SEARCH_KEYS + tuple(sorted(compiled.fields))
        cols = ", ".join(_SEARCH_COLUMNS.get(k, k) for k in keys)
        with self._lock:
            if compiled.message_id is not None:
                rows = self._db.execute(f"SELECT {cols} FROM messages WHERE account = ? AND "
                                        "rfc822_id = ?", (email, compiled.message_id)).fetchall()
            elif required:
                pivot = self._pivot(email, required)
                rows = self._db.execute(
                    f"SELECT {cols} FROM messages WHERE seq IN (SELECT seq FROM message_labels "
                    "WHERE account = ? AND label_id = ?)", (email, pivot)).fetchall()
            else:
                rows = self._db.execute(f"SELECT {cols} FROM messages WHERE account = ?",
                                        (email,)).fetchall()
        predicate = compiled.predicate
        out = []
        for values in rows:
            labels = set(values[4].split())
            if hide & labels or not required <= labels:
                continue
            row = dict(zip(keys, values, strict=True))
            row["labels"] = labels
            if predicate(row):
                row["labels"] = values[4].split()
                out.append(row)
        out.sort(key=lambda r: (r["internal_date"], r["seq"]), reverse=True)
        return out

    def _search_labels(self, email: str, required: set[str],
                       hide: Set[str]) -> list[dict[str, Any]]:
        """The fast path for queries made of label terms only: a few columns, no dicts
        until a row is known to match."""
        with self._lock:
            if required:
                pivot = self._pivot(email, required)
                rows = self._db.execute(
                    "SELECT seq, id, thread_id, internal_date, labels FROM messages WHERE seq IN "
                    "(SELECT seq FROM message_labels WHERE account = ? AND label_id = ?)",
                    (email, pivot)).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT seq, id, thread_id, internal_date, labels FROM messages "
                    "WHERE account = ?", (email,)).fetchall()
        out = []
        for seq, message_id, thread_id, date, text in rows:
            labels = set(text.split())
            if hide & labels or not required <= labels:
                continue
            out.append({"seq": seq, "id": message_id, "thread_id": thread_id,
                        "internal_date": date, "labels": text.split()})
        out.sort(key=lambda r: (r["internal_date"], r["seq"]), reverse=True)
        return out

    def _pivot(self, email: str, required: set[str]) -> str:
        """The rarest of ``required`` labels: the narrowest index range."""
        if len(required) == 1:
            return next(iter(required))
        counts = {lbl: self._db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM message_labels WHERE account = ? "
            "AND label_id = ? LIMIT ?)", (email, lbl, PIVOT_COUNT_CAP)).fetchone()[0]
            for lbl in required}
        return min(counts, key=counts.__getitem__)

    def thread(self, email: str, thread_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._rows(f"SELECT {_ROW_COLUMNS} FROM messages WHERE account = ? AND "
                              "thread_id = ? ORDER BY internal_date, seq", (email, thread_id))
        if not rows:
            raise errors.not_found()
        return rows

    def threads(self, email: str, thread_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {t: [] for t in thread_ids}
        with self._lock:
            for start in range(0, len(thread_ids), 500):
                chunk = thread_ids[start:start + 500]
                for row in self._rows(
                        f"SELECT {_ROW_COLUMNS} FROM messages WHERE account = ? AND thread_id "
                        f"IN ({','.join('?' * len(chunk))}) ORDER BY internal_date, seq",
                        (email, *chunk)):
                    out[row["thread_id"]].append(row)
        return out

    # -- changing messages ---------------------------------------------------------

    def _change_labels(self, db: sqlite3.Connection, email: str, row: tuple,
                       add: list[str], remove: list[str]) -> None:
        seq, message_id, thread_id, text = row
        labels = text.split()
        added = [lbl for lbl in _ordered(add) if lbl not in labels]
        removed = [lbl for lbl in _ordered(remove) if lbl in labels and lbl not in add]
        if not added and not removed:
            return
        new = _ordered([lbl for lbl in labels if lbl not in removed] + added)
        db.execute("UPDATE messages SET labels = ? WHERE seq = ?", (_labels_text(new), seq))
        db.executemany("INSERT INTO message_labels VALUES (?, ?, ?)",
                       [(email, lbl, seq) for lbl in added])
        db.executemany("DELETE FROM message_labels WHERE account = ? AND label_id = ? AND seq = ?",
                       [(email, lbl, seq) for lbl in removed])
        history_id = 0
        if added:
            history_id = self._record(db, email, "labelAdded", message_id, thread_id, new, added)
        if removed:
            history_id = self._record(db, email, "labelRemoved", message_id, thread_id, new,
                                      removed)
        db.execute("UPDATE messages SET history_id = ? WHERE seq = ?", (history_id, seq))

    def _message_rows(self, db: sqlite3.Connection, email: str, ids: list[str],
                      *, must_exist: bool) -> list[tuple]:
        rows = []
        for message_id in ids:
            row = db.execute("SELECT seq, id, thread_id, labels FROM messages WHERE id = ? "
                             "AND account = ?", (message_id, email)).fetchone()
            if row is None and must_exist:
                raise errors.not_found()
            if row is not None:
                rows.append(row)
        return rows

    def modify(self, email: str, ids: list[str], add: list[str], remove: list[str], *,
               must_exist: bool = True) -> None:
        with self._tx() as db:
            self._account(db, email)
            self._check_labels(db, email, add, adding=True)
            self._check_labels(db, email, remove, adding=False)
            for row in self._message_rows(db, email, ids, must_exist=must_exist):
                self._change_labels(db, email, row, add, remove)

    def modify_thread(self, email: str, thread_id: str, add: list[str],
                      remove: list[str]) -> None:
        with self._tx() as db:
            self._check_labels(db, email, add, adding=True)
            self._check_labels(db, email, remove, adding=False)
            rows = db.execute("SELECT seq, id, thread_id, labels FROM messages WHERE "
                              "account = ? AND thread_id = ?", (email, thread_id)).fetchall()
            if not rows:
                raise errors.not_found()
            for row in rows:
                self._change_labels(db, email, row, add, remove)

    def delete(self, email: str, ids: list[str], *, must_exist: bool = True,
               thread_id: str | None = None) -> None:
        with self._tx() as db:
            if thread_id is not None:
                rows = db.execute("SELECT seq, id, thread_id, labels FROM messages WHERE "
                                  "account = ? AND thread_id = ?", (email, thread_id)).fetchall()
                if not rows:
                    raise errors.not_found()
            else:
                rows = self._message_rows(db, email, ids, must_exist=must_exist)
            for seq, message_id, tid, labels in rows:
                db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                db.execute("DELETE FROM message_labels WHERE account = ? AND seq = ? AND "
                           "label_id IN (" + ",".join("?" * len(labels.split())) + ")",
                           (email, seq, *labels.split()))
                self._record(db, email, "messageDeleted", message_id, tid, labels.split())
                thread_left = db.execute("SELECT 1 FROM messages WHERE account = ? AND "
                                         "thread_id = ? LIMIT 1", (email, tid)).fetchone()
                db.execute("UPDATE accounts SET messages_total = messages_total - 1, "
                           "threads_total = threads_total - ? WHERE email = ?",
                           (int(thread_left is None), email))
                self._payloads.pop(message_id, None)


def _label_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 225:
        raise errors.invalid("Invalid label name")
    return value.strip()


_VISIBILITIES = {"messageListVisibility": ("show", "hide"),
                 "labelListVisibility": ("labelShow", "labelShowIfUnread", "labelHide")}


def _visibility(body: dict[str, Any], field: str) -> str | None:
    """A label's visibility field from a request body (None when absent); enums only."""
    value = body.get(field)
    if value is None or value == "":
        return None
    if value not in _VISIBILITIES[field]:
        raise errors.invalid(f"Invalid value for {field}: {value!r}"[:200])
    return value


def _color_text(color: Any) -> str | None:
    if color is None:
        return None
    if not isinstance(color, dict) or not all(
            isinstance(color.get(k, ""), str) for k in ("textColor", "backgroundColor")):
        raise errors.invalid("Invalid label color")
    return f"{color.get('textColor', '')} {color.get('backgroundColor', '')}"


def _system_label(name: str) -> dict[str, Any]:
    label: dict[str, Any] = {"id": name, "name": name, "type": "system"}
    if name in ("INBOX", "SENT", "DRAFT", "UNREAD", "STARRED", "IMPORTANT", "SPAM", "TRASH"):
        label["messageListVisibility"] = "hide" if name in ("SPAM", "TRASH") else "show"
        label["labelListVisibility"] = "labelShow"
    return label


def _user_label(row: dict[str, Any]) -> dict[str, Any]:
    label: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "type": "user",
        "messageListVisibility": row["message_list_visibility"],
        "labelListVisibility": row["label_list_visibility"]}
    if row.get("color"):
        text, _, background = row["color"].partition(" ")
        label["color"] = {"textColor": text, "backgroundColor": background}
    return label


def _display_name(value: str) -> str:
    pairs = email_utils.getaddresses([value])
    return pairs[0][0] if pairs and pairs[0][0] else ""


def _formataddr(name: str, address: str) -> str:
    return email_utils.formataddr((name, address)) if name else address


def _rfc2822_now() -> str:
    return email_utils.formatdate(usegmt=True)


def _auth_results(sender: str, raw: bytes, eol: bytes) -> list[bytes]:
    """Gmail's Authentication-Results for mail from ``sender``, as folded header lines."""
    domain = sender.rpartition("@")[2]
    sig = base64.b64encode(hashlib.sha256(raw).digest()).decode()[:8]
    lines = [
        "Authentication-Results: mx.google.com;",
        f"       dkim=pass header.i=@{domain} header.s=emulator header.b={sig};",
        f"       spf=pass (google.com: domain of {sender} designates 127.0.0.1 as permitted "
        f"sender) smtp.mailfrom={sender};",
        f"       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from={domain}",
    ]
    del eol  # the caller joins the lines with the message's own line ending
    return [line.encode() for line in lines]
