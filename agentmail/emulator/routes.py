"""The Gmail v1 methods: route table (paths as in the discovery document) and handlers.

A handler takes a :class:`Call` and returns ``(status, json_or_None)``; it
raises :class:`~agentmail.emulator.errors.ApiError` for Gmail's error answers.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from agentmail.emulator import errors, mime
from agentmail.emulator.store import HISTORY_TYPES, Store

MAX_SEND_BYTES = 36_700_160  # 35 MB (discovery maxSize of messages.send)
MAX_INSERT_BYTES = 157_286_400  # 150 MB (insert/import)
MAX_LABEL_IDS = 100
MAX_BATCH_MODIFY_IDS = 1000
DEFAULT_PAGE = 100
MAX_PAGE = 500

_ID = re.compile(r"^[0-9A-Fa-f]{1,24}$")
PREFIX = "gmail.users."


@dataclasses.dataclass
class Call:
    """One API call, after routing and authentication."""

    store: Store
    account: str
    params: dict[str, list[str]]
    body: bytes
    path: dict[str, str]
    rewrite_message_id: Callable[[], bool] = lambda: False
    body_served: Callable[[int], None] = lambda size: None  # counted in the stats

    def one(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else default

    def many(self, name: str) -> list[str]:
        return list(self.params.get(name, []))

    def flag(self, name: str) -> bool:
        return (self.one(name, "false") or "").lower() in ("true", "1")

    def number(self, name: str, default: int, maximum: int) -> int:
        text = self.one(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError as exc:
            raise errors.invalid(f"Invalid value for {name}: {text}") from exc
        if value < 0:
            raise errors.invalid(f"Invalid value for {name}: {text}")
        return min(value or default, maximum)

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise errors.invalid("Invalid JSON payload received.") from exc
        if not isinstance(value, dict):
            raise errors.invalid("Invalid JSON payload received. Expected an object.")
        return value

    def id(self, name: str = "id") -> str:
        return check_id(self.path[name])


Result = tuple[int, Any]
Handler = Callable[[Call], Result]


def check_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise errors.invalid("Invalid id value")
    return value.lower()


def _id_list(value: Any, name: str, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.invalid(f"Invalid value for {name}")
    if len(value) > limit:
        raise errors.invalid(f"Too many {name}: at most {limit} allowed")
    return value


def _raw(body: dict[str, Any], limit: int) -> bytes:
    value = body.get("raw")
    if not value:
        raise errors.invalid("'raw' RFC822 payload message string or uploading message via "
                             "/upload/* URL required")
    try:
        raw = mime.b64decode(value)
    except ValueError as exc:
        raise errors.invalid("Invalid value for ByteString: raw is not valid base64url") from exc
    if len(raw) > limit:
        raise errors.invalid(f"Request payload size exceeds the limit: {limit} bytes.")
    if not raw.strip():
        raise errors.invalid("Invalid raw message")
    return raw


def _thread_id(body: dict[str, Any]) -> str | None:
    value = body.get("threadId")
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise errors.invalid("Invalid thread_id value")
    return value.lower()


# -- message JSON ------------------------------------------------------------------

def message_json(call: Call, row: dict[str, Any], fmt: str,
                 headers: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row["id"], "threadId": row["thread_id"]}
    if row["labels"]:
        out["labelIds"] = list(row["labels"])
    out["snippet"] = row["snippet"]
    if fmt in ("full", "raw"):
        call.body_served(row["size"])
    if fmt == "full":
        out["payload"] = call.store.payload(call.account, row["id"])
    elif fmt == "metadata":
        out["payload"] = mime.headers_only(call.store.raw(call.account, row["id"]), headers)
    elif fmt == "raw":
        out["raw"] = mime.b64encode(call.store.raw(call.account, row["id"]), pad=True)
    out["sizeEstimate"] = row["size"]
    out["historyId"] = str(row["history_id"])
    out["internalDate"] = str(row["internal_date"])
    return out


def _minimal(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row["id"], "threadId": row["thread_id"]}
    if row["labels"]:
        out["labelIds"] = list(row["labels"])
    return out


def _format(call: Call, default: str = "full") -> str:
    fmt = call.one("format", default) or default
    if fmt not in ("minimal", "full", "raw", "metadata"):
        raise errors.invalid(f"Invalid value for format: {fmt}")
    return fmt


# -- page tokens -------------------------------------------------------------------

def _token(*parts: int) -> str:
    return base64.urlsafe_b64encode(":".join(map(str, parts)).encode()).decode().rstrip("=")


def _untoken(text: str | None, arity: int) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        parts = tuple(int(p) for p in mime.b64decode(text).decode().split(":"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.invalid("Invalid pageToken") from exc
    if len(parts) != arity:
        raise errors.invalid("Invalid pageToken")
    return parts


def _page(rows: list[dict[str, Any]], call: Call) -> tuple[list[dict[str, Any]], str | None]:
    """Keyset paging over rows sorted newest first by (internal_date, seq)."""
    after = _untoken(call.one("pageToken"), 2)
    if after is not None:
        rows = [r for r in rows if (r["internal_date"], r["seq"]) < after]
    size = call.number("maxResults", DEFAULT_PAGE, MAX_PAGE)
    page = rows[:size]
    more = len(rows) > size
    return page, (_token(page[-1]["internal_date"], page[-1]["seq"]) if more else None)


# -- users / labels ----------------------------------------------------------------

def get_profile(call: Call) -> Result:
    return 200, call.store.profile(call.account)


def labels_list(call: Call) -> Result:
    return 200, {"labels": call.store.list_labels(call.account)}


def labels_get(call: Call) -> Result:
    return 200, call.store.get_label(call.account, call.path["id"])


def labels_create(call: Call) -> Result:
    return 200, call.store.create_label(call.account, call.json())


def labels_update(call: Call) -> Result:
    return 200, call.store.update_label(call.account, call.path["id"], call.json(), patch=False)


def labels_patch(call: Call) -> Result:
    return 200, call.store.update_label(call.account, call.path["id"], call.json(), patch=True)


def labels_delete(call: Call) -> Result:
    call.store.delete_label(call.account, call.path["id"])
    return 204, None


# -- messages ----------------------------------------------------------------------

def messages_list(call: Call) -> Result:
    rows = call.store.search(call.account, call.one("q"), call.many("labelIds"),
                             call.flag("includeSpamTrash"))
    page, token = _page(rows, call)
    out: dict[str, Any] = {}
    if page:
        out["messages"] = [{"id": r["id"], "threadId": r["thread_id"]} for r in page]
    if token:
        out["nextPageToken"] = token
    out["resultSizeEstimate"] = len(rows)
    return 200, out


def messages_get(call: Call) -> Result:
    fmt = _format(call)
    row = call.store.get(call.account, call.id())
    return 200, message_json(call, row, fmt, call.many("metadataHeaders"))


def attachments_get(call: Call) -> Result:
    message_id = call.id("messageId")
    parsed = mime.parse_attachment_id(call.path["id"])
    if parsed is None:
        raise errors.invalid("Invalid attachment token")
    if parsed[0] != message_id:
        raise errors.not_found()
    data = mime.attachment_data(call.store.raw(call.account, message_id), parsed[1])
    if data is None:
        raise errors.not_found()
    return 200, {"size": len(data), "data": mime.b64encode(data, pad=False)}


def _label_change(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    return (_id_list(body.get("addLabelIds"), "addLabelIds", MAX_LABEL_IDS),
            _id_list(body.get("removeLabelIds"), "removeLabelIds", MAX_LABEL_IDS))


def messages_modify(call: Call) -> Result:
    message_id = call.id()
    add, remove = _label_change(call.json())
    call.store.modify(call.account, [message_id], add, remove)
    return 200, _minimal(call.store.get(call.account, message_id))


def messages_batch_modify(call: Call) -> Result:
    body = call.json()
    ids = [check_id(i) for i in _id_list(body.get("ids"), "ids", MAX_BATCH_MODIFY_IDS)]
    add, remove = _label_change(body)
    call.store.modify(call.account, ids, add, remove, must_exist=False)
    return 204, None


def messages_trash(call: Call) -> Result:
    message_id = call.id()
    call.store.modify(call.account, [message_id], ["TRASH"], [])
    return 200, _minimal(call.store.get(call.account, message_id))


def messages_untrash(call: Call) -> Result:
    message_id = call.id()
    call.store.modify(call.account, [message_id], [], ["TRASH"])
    return 200, _minimal(call.store.get(call.account, message_id))


def messages_delete(call: Call) -> Result:
    call.store.delete(call.account, [call.id()])
    return 204, None


def messages_batch_delete(call: Call) -> Result:
    body = call.json()
    ids = [check_id(i) for i in _id_list(body.get("ids"), "ids", MAX_BATCH_MODIFY_IDS)]
    call.store.delete(call.account, ids, must_exist=False)
    return 204, None


def messages_send(call: Call) -> Result:
    body = call.json()
    raw = _raw(body, MAX_SEND_BYTES)
    sent = call.store.send(call.account, raw, thread_id=_thread_id(body),
                           rewrite_message_id=call.rewrite_message_id())
    return 200, _minimal(sent)


def _insert(call: Call, *, date_from_header_default: bool) -> Result:
    body = call.json()
    raw = _raw(body, MAX_INSERT_BYTES)
    source = call.one("internalDateSource")
    if source not in (None, "receivedTime", "dateHeader"):
        raise errors.invalid(f"Invalid value for internalDateSource: {source}")
    from_header = date_from_header_default if source is None else source == "dateHeader"
    labels = _id_list(body.get("labelIds"), "labelIds", MAX_LABEL_IDS)
    row = call.store.insert(call.account, raw, label_ids=labels, thread_id=_thread_id(body),
                            date_from_header=from_header)
    return 200, _minimal(row)  # no labelIds key when inserted without labels


def messages_insert(call: Call) -> Result:
    return _insert(call, date_from_header_default=False)


def messages_import(call: Call) -> Result:
    return _insert(call, date_from_header_default=True)


# -- threads -----------------------------------------------------------------------

def threads_list(call: Call) -> Result:
    rows = call.store.search(call.account, call.one("q"), call.many("labelIds"),
                             call.flag("includeSpamTrash"))
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first, so the first row seen per thread is its newest match
        newest.setdefault(row["thread_id"], row)
    heads = list(newest.values())
    page, token = _page(heads, call)
    details = call.store.threads(call.account, [r["thread_id"] for r in page])
    out: dict[str, Any] = {}
    if page:
        out["threads"] = [_thread_summary(r["thread_id"], details[r["thread_id"]])
                          for r in page]
    if token:
        out["nextPageToken"] = token
    out["resultSizeEstimate"] = len(heads)
    return 200, out


def _thread_summary(thread_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    last = messages[-1] if messages else {"snippet": "", "history_id": 0}
    return {"id": thread_id, "snippet": last["snippet"],
            "historyId": str(max((m["history_id"] for m in messages), default=0))}


def _thread_json(call: Call, thread_id: str, fmt: str) -> dict[str, Any]:
    rows = call.store.thread(call.account, thread_id)
    headers = call.many("metadataHeaders")
    messages = [message_json(call, r, fmt, headers) if fmt != "minimal-short" else _minimal(r)
                for r in rows]
    return {"id": thread_id, "historyId": str(max(r["history_id"] for r in rows)),
            "messages": messages}


def threads_get(call: Call) -> Result:
    fmt = _format(call)
    if fmt == "raw":
        raise errors.invalid("Invalid value for format: raw")
    return 200, _thread_json(call, call.id(), fmt)


def threads_modify(call: Call) -> Result:
    thread_id = call.id()
    add, remove = _label_change(call.json())
    call.store.modify_thread(call.account, thread_id, add, remove)
    return 200, _thread_json(call, thread_id, "minimal-short")


def threads_trash(call: Call) -> Result:
    thread_id = call.id()
    call.store.modify_thread(call.account, thread_id, ["TRASH"], [])
    return 200, _thread_json(call, thread_id, "minimal-short")


def threads_untrash(call: Call) -> Result:
    thread_id = call.id()
    call.store.modify_thread(call.account, thread_id, [], ["TRASH"])
    return 200, _thread_json(call, thread_id, "minimal-short")


def threads_delete(call: Call) -> Result:
    call.store.delete(call.account, [], thread_id=call.id())
    return 204, None


# -- history -----------------------------------------------------------------------

def history_list(call: Call) -> Result:
    text = call.one("startHistoryId")
    if not text:
        raise errors.invalid("Missing required parameter: startHistoryId")
    if not text.isdigit():
        raise errors.invalid(f"Invalid startHistoryId: {text}")
    types = call.many("historyTypes")
    for kind in types:
        if kind not in HISTORY_TYPES:
            raise errors.invalid(f"Invalid value for historyTypes: {kind}")
    after = _untoken(call.one("pageToken"), 1)
    size = call.number("maxResults", DEFAULT_PAGE, MAX_PAGE)
    records, current, more = call.store.history(
        call.account, int(text), types, call.one("labelId"), size,
        after[0] if after else None)
    out: dict[str, Any] = {}
    if records:
        out["history"] = [_history_json(r) for r in records]
    if more:
        out["nextPageToken"] = _token(records[-1]["id"])
    out["historyId"] = str(current)
    return 200, out


def _history_json(rec: dict[str, Any]) -> dict[str, Any]:
    ref = {"id": rec["message_id"], "threadId": rec["thread_id"]}
    message = {**ref, "labelIds": rec["labels"]} if rec["labels"] else dict(ref)
    out: dict[str, Any] = {"id": str(rec["id"]), "messages": [ref]}
    kind = rec["kind"]
    if kind == "messageAdded":
        out["messagesAdded"] = [{"message": message}]
    elif kind == "messageDeleted":
        out["messagesDeleted"] = [{"message": message}]
    elif kind == "labelAdded":
        out["labelsAdded"] = [{"message": message, "labelIds": rec["changed"].split()}]
    else:
        out["labelsRemoved"] = [{"message": message, "labelIds": rec["changed"].split()}]
    return out


# -- route table -------------------------------------------------------------------

_U = r"^/gmail/v1/users/(?P<userId>[^/]+)"
_ROUTES: list[tuple[str, str, str, Handler, int]] = [
    # (HTTP method, path regex, discovery id, handler, max request body bytes)
    ("GET", r"/profile", "getProfile", get_profile, 0),
    ("GET", r"/labels", "labels.list", labels_list, 0),
    ("POST", r"/labels", "labels.create", labels_create, 1 << 20),
    ("GET", r"/labels/(?P<id>[^/]+)", "labels.get", labels_get, 0),
    ("PUT", r"/labels/(?P<id>[^/]+)", "labels.update", labels_update, 1 << 20),
    ("PATCH", r"/labels/(?P<id>[^/]+)", "labels.patch", labels_patch, 1 << 20),
    ("DELETE", r"/labels/(?P<id>[^/]+)", "labels.delete", labels_delete, 0),
    ("GET", r"/messages", "messages.list", messages_list, 0),
    ("POST", r"/messages", "messages.insert", messages_insert, MAX_INSERT_BYTES * 4 // 3 + 65536),
    ("POST", r"/messages/send", "messages.send", messages_send, MAX_SEND_BYTES * 4 // 3 + 65536),
    ("POST", r"/messages/import", "messages.import", messages_import,
     MAX_INSERT_BYTES * 4 // 3 + 65536),
    ("POST", r"/messages/batchModify", "messages.batchModify", messages_batch_modify, 1 << 22),
    ("POST", r"/messages/batchDelete", "messages.batchDelete", messages_batch_delete, 1 << 22),
    ("GET", r"/messages/(?P<messageId>[^/]+)/attachments/(?P<id>[^/]+)",
     "messages.attachments.get", attachments_get, 0),
    ("GET", r"/messages/(?P<id>[^/]+)", "messages.get", messages_get, 0),
    ("DELETE", r"/messages/(?P<id>[^/]+)", "messages.delete", messages_delete, 0),
    ("POST", r"/messages/(?P<id>[^/]+)/modify", "messages.modify", messages_modify, 1 << 20),
    ("POST", r"/messages/(?P<id>[^/]+)/trash", "messages.trash", messages_trash, 1 << 16),
    ("POST", r"/messages/(?P<id>[^/]+)/untrash", "messages.untrash", messages_untrash, 1 << 16),
    ("GET", r"/threads", "threads.list", threads_list, 0),
    ("GET", r"/threads/(?P<id>[^/]+)", "threads.get", threads_get, 0),
    ("DELETE", r"/threads/(?P<id>[^/]+)", "threads.delete", threads_delete, 0),
    ("POST", r"/threads/(?P<id>[^/]+)/modify", "threads.modify", threads_modify, 1 << 20),
    ("POST", r"/threads/(?P<id>[^/]+)/trash", "threads.trash", threads_trash, 1 << 16),
    ("POST", r"/threads/(?P<id>[^/]+)/untrash", "threads.untrash", threads_untrash, 1 << 16),
    ("GET", r"/history", "history.list", history_list, 0),
]
ROUTES = [(verb, re.compile(_U + path + "$"), PREFIX + name, handler, limit)
          for verb, path, name, handler, limit in _ROUTES]
# Real Gmail methods this emulator does not implement: answered 501, never 404.
UNIMPLEMENTED = re.compile(_U + r"/(drafts|settings|watch|stop)(/.*)?$")
GET_BODY_LIMIT = 1 << 16  # a GET turned into POST carries its query string as the body


@dataclasses.dataclass
class Match:
    method_id: str
    handler: Handler
    path: dict[str, str]
    body_limit: int


def match(verb: str, path: str) -> Match:
    """The route for ``verb path``; 404 for unknown paths, 405 for a wrong verb."""
    allowed = []
    for route_verb, pattern, method_id, handler, limit in ROUTES:
        found = pattern.match(path)
        if found is None:
            continue
        if route_verb == verb:
            return Match(method_id, handler, found.groupdict(), limit or GET_BODY_LIMIT)
        allowed.append(route_verb)
    if allowed:
        raise errors.ApiError(405, f"Method {verb} not allowed for this path", "badRequest",
                              headers={"Allow": ", ".join(sorted(set(allowed)))})
    if UNIMPLEMENTED.match(path):
        raise errors.ApiError(501, "This Gmail method is not implemented by the emulator",
                              "notImplemented")
    raise errors.ApiError(404, f"The requested URL {path} was not found on this server.",
                          "notFound")
