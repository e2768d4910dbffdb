"""The ``q`` search language: parse once into a predicate over stored message rows.

Grammar (as Gmail's search box): terms separated by spaces are ANDed; ``OR``
(upper case) binds tighter than the implicit AND; ``-term`` negates; ``( )``
groups; ``{a b}`` means ``a OR b``; values may be quoted. Supported operators:
``is:`` ``in:`` ``label:`` ``category:`` ``from:`` ``to:`` ``cc:`` ``bcc:``
``deliveredto:`` ``list:`` ``subject:`` ``rfc822msgid:`` ``after:`` ``before:``
``newer_than:`` ``older_than:`` ``has:attachment`` ``filename:`` ``larger:``
``smaller:``; anything else is a word searched in the subject, addresses and body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from agentmail.emulator import errors

Row = dict[str, Any]  # keys: labels (set), from, to, cc, bcc, subject, ... (see store)
Predicate = Callable[[Row], bool]

PST = timezone(timedelta(hours=-8))  # Gmail reads dates in queries as PST midnights
_LABEL_FOLD = str.maketrans({c: "-" for c in " /&(){}|"})
_IN = {"inbox": "INBOX", "sent": "SENT", "trash": "TRASH", "spam": "SPAM", "draft": "DRAFT",
       "drafts": "DRAFT", "starred": "STARRED", "important": "IMPORTANT", "chats": "CHAT",
       "unread": "UNREAD"}
_IS = {"unread": "UNREAD", "starred": "STARRED", "important": "IMPORTANT", "sent": "SENT",
       "draft": "DRAFT", "chat": "CHAT", "inbox": "INBOX", "trash": "TRASH", "spam": "SPAM"}
_UNITS_MS = {"h": 3600_000, "d": 86400_000, "w": 7 * 86400_000, "m": 30 * 86400_000,
             "y": 365 * 86400_000}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
MAX_NESTING = 50  # groups and negations inside each other; deeper is a 400, not a RecursionError


def fold_label(name: str) -> str:
    """Gmail's label-name key: lower case, ``- / & ( ) { } |`` and space equal."""
    return name.strip().lower().translate(_LABEL_FOLD)


# -- tokens and tree ---------------------------------------------------------------

def _tokens(q: str) -> Iterator[tuple[str, str]]:
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c.isspace():
            i += 1
        elif c in "(){}":
            yield c, c
            i += 1
        elif c == "-" and i + 1 < n and not q[i + 1].isspace():
            yield "not", "-"
            i += 1
        elif c == '"':
            end = q.find('"', i + 1)
            end = n if end < 0 else end
            yield "word", q[i + 1:end]
            i = end + 1
        else:
            start = i
            while i < n and not q[i].isspace() and q[i] not in "(){}\"":
                if q[i] == ":" and i + 1 < n and q[i + 1] == '"':
                    end = q.find('"', i + 2)
                    end = n if end < 0 else end
                    yield "term", q[start:i + 1] + q[i + 2:end]
                    i = end + 1
                    break
                i += 1
            else:
                word = q[start:i]
                if word == "OR":
                    yield "or", word
                elif word != "AND":
                    yield "term", word


class _Parser:
    def __init__(self, q: str) -> None:
        self.toks = list(_tokens(q))
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.toks[self.pos][0] if self.pos < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def conjunction(self, closer: str | None) -> tuple:
        items = []
        while self.peek() is not None and self.peek() != closer:
            if self.peek() in (")", "}"):
                self.take()  # stray closer: ignore, as Gmail does
                continue
            items.append(self.disjunction(closer))
        return ("and", items)

    def disjunction(self, closer: str | None) -> tuple:
        items = [self.unary(closer)]
        while self.peek() == "or":
            self.take()
            if self.peek() in (None, closer):
                break
            items.append(self.unary(closer))
        return items[0] if len(items) == 1 else ("or", items)

    def unary(self, closer: str | None) -> tuple:
        kind, value = self.take()
        if kind in ("not", "(", "{"):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise errors.invalid("Invalid query: nested too deeply")
            try:
                return self.nested(kind, closer)
            finally:
                self.depth -= 1
        if kind == "or":
            return ("word", "or")
        if kind == "word":
            return ("word", value)
        op, sep, arg = value.partition(":")
        if sep and op and arg:
            return ("op", op.lower(), arg)
        return ("word", value)

    def nested(self, kind: str, closer: str | None) -> tuple:
        if kind == "not":
            if self.peek() in (None, closer):
                return ("word", "-")
            return ("not", self.unary(closer))
        if kind == "(":
            inner = self.conjunction(")")
            if self.peek() == ")":
                self.take()
            return inner
        inner = self.conjunction("}")
        if self.peek() == "}":
            self.take()
        return ("or", inner[1])


def parse(q: str) -> tuple:
    return _Parser(q or "").conjunction(None)


# -- compiling to a predicate ------------------------------------------------------

class Context:
    """What a query needs to know about the mailbox: its address and label names."""

    def __init__(self, account: str, label_ids_by_fold: dict[str, str],
                 now_ms: int | None = None) -> None:
        self.account = account
        self.labels = label_ids_by_fold  # folded name (user and system) -> label id
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)


class Compiled:
    """A parsed query: the predicate plus what the store needs to pick rows cheaply."""

    def __init__(self, q: str, ctx: Context) -> None:
        tree = parse(q)
        self.predicate: Predicate = _compile(tree, ctx)
        self.required_labels = _required_labels(tree, ctx)  # every match carries these
        # SPAM/TRASH asked for by a positive term (``in:trash``; ``-in:trash`` asks for neither)
        self.unhidden = _unhidden(tree, ctx)
        self.fields = _fields(tree)  # row fields the predicate reads besides labels and dates
        self.needs_text = "search_text" in self.fields
        self.message_id = _required_message_id(tree)  # a top-level rfc822msgid: term
        # nothing but label terms: required_labels alone decides (no row fields needed)
        self.label_only = all(_is_label_term(n, ctx) for n in tree[1])


def _is_label_term(node: tuple, ctx: Context) -> bool:
    """A positive term that only asks for one known label (or ``in:anywhere``)."""
    if node[0] != "op" or node[1] not in ("is", "in", "label"):
        return False
    if node[1] == "in" and node[2].lower() == "anywhere":
        return True
    return len(_required_labels(("and", [node]), ctx)) == 1


def _required_message_id(tree: tuple) -> str | None:
    for node in tree[1]:
        if node[0] == "op" and node[1] == "rfc822msgid":
            return node[2].strip().strip("<>").lower()
    return None


_OP_FIELDS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc",
              "deliveredto": "delivered_to", "list": "list", "subject": "subject",
              "rfc822msgid": "rfc822_id", "filename": "filenames", "larger": "size",
              "smaller": "size", "size": "size"}


def _fields(node: tuple) -> set[str]:
    """The row fields (see :func:`_operator`) a query reads, besides the labels and the
    internal date every row carries: the store fetches only these columns."""
    kind = node[0]
    if kind in ("and", "or"):
        return set().union(*(_fields(n) for n in node[1]))
    if kind == "not":
        return _fields(node[1])
    if kind == "word":
        return {"search_text"}
    op = node[1]
    if op == "has":
        return {"has_attachment"} if node[2].lower() == "attachment" else set()
    if op in _OP_FIELDS:
        return {_OP_FIELDS[op]}
    return set() if op in _KNOWN_OPS else {"search_text"}


_KNOWN_OPS = frozenset({
    "is", "in", "label", "category", "from", "to", "cc", "bcc", "deliveredto", "list",
    "subject", "rfc822msgid", "has", "filename", "after", "before", "newer", "older",
    "newer_than", "older_than", "larger", "smaller", "size"})


def _compile(node: tuple, ctx: Context) -> Predicate:
    kind = node[0]
    if kind == "and":
        parts = [_compile(n, ctx) for n in node[1]]
        return lambda row: all(p(row) for p in parts)
    if kind == "or":
        parts = [_compile(n, ctx) for n in node[1]]
        return lambda row: any(p(row) for p in parts)
    if kind == "not":
        inner = _compile(node[1], ctx)
        return lambda row: not inner(row)
    if kind == "word":
        needle = node[1].lower()
        return lambda row: needle in row["search_text"]
    return _operator(node[1], node[2], ctx)


def _has_label(label_id: str | None) -> Predicate:
    if label_id is None:
        return lambda row: False
    return lambda row: label_id in row["labels"]


def _label_id(name: str, ctx: Context) -> str | None:
    return ctx.labels.get(fold_label(name))


def _operator(op: str, arg: str, ctx: Context) -> Predicate:
    low = arg.lower()
    if op == "is":
        if low == "read":
            return lambda row: "UNREAD" not in row["labels"]
        return _has_label(_IS.get(low) or _label_id(low, ctx))
    if op == "in":
        if low == "anywhere":
            return lambda row: True
        return _has_label(_IN.get(low) or _label_id(low, ctx))
    if op == "label":
        return _has_label(_label_id(arg, ctx))
    if op == "category":
        return _has_label("CATEGORY_" + ("PERSONAL" if low == "primary" else low.upper()))
    if op in ("from", "to", "cc", "bcc", "deliveredto", "list"):
        field = {"deliveredto": "delivered_to"}.get(op, op)
        needle = ctx.account if low == "me" else low
        return lambda row: needle in row[field].lower()
    if op == "subject":
        return lambda row: low in row["subject"].lower()
    if op == "rfc822msgid":
        wanted = low.strip().strip("<>")
        return lambda row: row["rfc822_id"] == wanted
    if op == "has":
        if low == "attachment":
            return lambda row: bool(row["has_attachment"])
        if low == "userlabels":
            return lambda row: any(lbl.startswith("Label_") for lbl in row["labels"])
        if low == "nouserlabels":
            return lambda row: not any(lbl.startswith("Label_") for lbl in row["labels"])
        return lambda row: False
    if op == "filename":
        return lambda row: low in row["filenames"]
    if op in ("after", "before", "newer", "older"):
        bound = _date_ms(arg)
        if op in ("after", "newer"):
            return lambda row: row["internal_date"] >= bound
        return lambda row: row["internal_date"] < bound
    if op in ("newer_than", "older_than"):
        match = re.fullmatch(r"(\d+)([hdwmy])", low)
        if not match:
            raise errors.invalid(f"Invalid query: {op}:{arg}")
        bound = ctx.now_ms - int(match[1]) * _UNITS_MS[match[2]]
        if op == "newer_than":
            return lambda row: row["internal_date"] >= bound
        return lambda row: row["internal_date"] < bound
    if op in ("larger", "smaller", "size"):
        match = re.fullmatch(r"(\d+)([km]?)b?", low)
        if not match:
            raise errors.invalid(f"Invalid query: {op}:{arg}")
        size = int(match[1]) * _SIZE_UNITS[match[2]]
        if op == "smaller":
            return lambda row: row["size"] < size
        return lambda row: row["size"] >= size
    needle = f"{op}:{low}"
    return lambda row: needle in row["search_text"]


def _date_ms(arg: str) -> int:
    if arg.isdigit():
        return int(arg) * 1000
    match = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", arg)
    if not match:
        raise errors.invalid(f"Invalid query: date {arg}")
    try:
        day = datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=PST)
    except ValueError as exc:
        raise errors.invalid(f"Invalid query: date {arg}") from exc
    return int(day.timestamp() * 1000)


def _required_labels(tree: tuple, ctx: Context) -> set[str]:
    """Labels implied by top-level positive terms (used to pick an index)."""
    out: set[str] = set()
    for node in tree[1]:
        if node[0] != "op":
            continue
        op, low = node[1], node[2].lower()
        if op == "is" and low in _IS:
            out.add(_IS[low])
        elif op == "in" and low in _IN:
            out.add(_IN[low])
        elif op == "label":
            label = _label_id(node[2], ctx)
            if label:
                out.add(label)
    return out


def _unhidden(node: tuple, ctx: Context, negated: bool = False) -> set[str]:
    """The hidden-by-default labels (SPAM, TRASH) a query asks for by name.

    Only positive mentions count: ``in:trash`` or ``label:spam`` show what is
    otherwise left out without ``includeSpamTrash``, ``in:anywhere`` shows both,
    while ``-in:trash`` leaves SPAM hidden, as in Gmail's search box.
    """
    kind = node[0]
    if kind in ("and", "or"):
        return set().union(*(_unhidden(n, ctx, negated) for n in node[1]))
    if kind == "not":
        return _unhidden(node[1], ctx, not negated)
    if negated or kind != "op" or node[1] not in ("in", "label", "is"):
        return set()
    low = node[2].lower()
    if node[1] == "in" and low == "anywhere":
        return {"SPAM", "TRASH"}
    label = (_IN if node[1] == "in" else _IS).get(low) if node[1] != "label" else None
    label = label or _label_id(node[2], ctx)
    return {label} & {"SPAM", "TRASH"} if label is not None else set()
