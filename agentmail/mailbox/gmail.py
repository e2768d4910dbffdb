"""Gmail adapter for the Mailbox port, on google-api-python-client.

Runs unchanged against real Gmail and against agentmail's emulator
(``api_endpoint="http://127.0.0.1:PORT"``, credentials from
:func:`emulator_credentials`). Facts it relies on are in
``docs/gmail-api-notes.md``; the ones that shape this module:

- The batch endpoint ignores ``api_endpoint``: batches get an explicit batch URI.
- ``execute(num_retries=N)`` ignores Retry-After and re-sends ``messages.send``;
  we run our own retry loop for idempotent calls and never retry a send.
- httplib2 silently re-sends a request once when the connection drops before the
  response arrives ("stale connection"). Harmless for a get, a duplicate for a
  send: sends go through a single-shot connection (:class:`_SingleShotHttp`).
- A 401 with a static token surfaces as ``google.auth.exceptions.RefreshError``.

Every googleapiclient, httplib2, socket and google.auth error is translated here
into :mod:`agentmail.errors`, with the original chained as the cause.

Thread-safety: httplib2 is not thread-safe, and a GmailMailbox keeps one
keep-alive ``Http`` for its calls: use each GmailMailbox from one thread only
(several mailboxes in several threads are fine).
"""

from __future__ import annotations

import base64
import email.utils
import functools
import gzip
import http.client
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient import discovery
from googleapiclient import errors as gerrors
from googleapiclient import http as ghttp

from agentmail import errors
from agentmail.mailbox import base, quota

log = logging.getLogger(__name__)

RetryPolicy = base.RetryPolicy  # re-exported: GmailMailbox(..., retry=RetryPolicy(...))

GMAIL_ENDPOINT = "https://gmail.googleapis.com"
BATCH_PATH = "/batch/gmail/v1"
BATCH_LIMIT = 50  # calls per batch request; Gmail accepts 100 and advises 50
PAGE_SIZE = 500  # maxResults for messages.list and history.list
BATCH_MODIFY_LIMIT = 1000  # ids per messages.batchModify
# messages.modify costs 5 units per message, batchModify 50 per call: from 10
# messages on, one batchModify is no dearer and is a single call.
BATCH_MODIFY_FROM = 10
RECENT_SENT_QUERY = "in:sent newer_than:1d"
RECENT_SENT_LIMIT = 500  # messages scanned by the find_sent fallback

SYSTEM_LABELS = frozenset({
    "INBOX", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT", "SENT", "DRAFT", "CHAT",
    "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
})
# Characters Gmail treats as equal in label names (`agent-failed`, `agent/failed` and
# `Agent Failed` are one label); "_" is not among them.
_LABEL_FOLD = str.maketrans({c: "-" for c in " /&(){}|"})
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded",
                                 "RATE_LIMIT_EXCEEDED"})
_RETRY_AT = re.compile(r"retry after (\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)?)", re.I)

_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, httplib2.HttpLib2Error)


def emulator_credentials(address: str) -> Credentials:
    """Credentials for an account on agentmail's emulator (``Bearer <address>``)."""
    return Credentials(token=address)


def fold_label_name(name: str) -> str:
    """The key under which Gmail compares label names."""
    return name.strip().lower().translate(_LABEL_FOLD)


class _SingleShotHttp(httplib2.Http):
    """An ``httplib2.Http`` that sends each request at most once.

    Stock httplib2 re-sends a request when the connection drops before the
    response (it assumes a stale keep-alive connection); for ``messages.send``
    that is a second copy of the mail. Here a dropped connection is an error.
    """

    def _conn_request(self, conn: Any, request_uri: str, method: str, body: Any,
                      headers: dict[str, str]) -> tuple[httplib2.Response, bytes]:
        # identity: the answer to a send is small, and we need not decompress it
        headers = {**headers, "accept-encoding": "identity"}
        try:
            if conn.sock is None:
                conn.connect()
            conn.request(method, request_uri, body, headers)
            raw = conn.getresponse()
            content = raw.read()
        except Exception:
            conn.close()
            raise
        response = httplib2.Response(raw)
        if response.get("content-encoding", "").strip().lower() == "gzip":
            content = gzip.decompress(content)
            del response["content-encoding"]
        return response, content


def _new_http(timeout: float, cls: type[httplib2.Http] = httplib2.Http) -> httplib2.Http:
    http_ = cls(timeout=timeout)
    # as googleapiclient.http.build_http: 308 is not a redirect for Google APIs
    http_.redirect_codes = http_.redirect_codes - {308}
    return http_


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _b64decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _error_body(exc: gerrors.HttpError) -> dict[str, Any]:
    try:
        data = json.loads(exc.content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _error_reason(error: dict[str, Any]) -> str | None:
    """Gmail's machine-readable reason: ``errors[0].reason``, else ErrorInfo, else status."""
    for item in error.get("errors") or ():
        if isinstance(item, dict) and item.get("reason"):
            return str(item["reason"])
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    status = error.get("status")
    return str(status) if status else None


def _retry_after(exc: gerrors.HttpError, error: dict[str, Any], now: float) -> float | None:
    """Seconds Gmail asked us to wait: Retry-After header, RetryInfo, or "Retry after <time>"."""
    header = exc.resp.get("retry-after") if exc.resp is not None else None
    if header:
        header = str(header).strip()
        if header.replace(".", "", 1).isdigit():
            return float(header)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(header).timestamp() - now)
        except (TypeError, ValueError):
            pass
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                pass
    match = _RETRY_AT.search(str(error.get("message") or ""))
    if match:
        text = match.group(1).replace("Z", "+00:00")
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, when.timestamp() - now)
    return None


def translate_error(exc: BaseException, *, what: str, address: str,
                    now: float) -> errors.AgentmailError | None:
    """Our error for a foreign one raised by a Gmail call, or None if it is not foreign.

    ``what`` names the call (``messages.get``) for the message; ``now`` is wall time
    in seconds, to turn a "retry after <time>" into seconds.
    """
    if isinstance(exc, errors.AgentmailError):
        return exc
    where = f"Gmail {what} for {address}"
    if isinstance(exc, gerrors.HttpError):
        status = exc.status_code
        error = _error_body(exc)
        reason = _error_reason(error)
        text = f"{where}: HTTP {status} {exc.reason or ''}".rstrip()
        if status == 401:
            return errors.AuthError(
                f"{text}: Gmail refused the credentials; run `agentmail auth --email {address}`"
                " again")
        retryable = (status >= 500 or status in (408, 429)
                     or (status == 403 and reason in _RATE_LIMIT_REASONS))
        if retryable:
            return errors.MailboxUnavailable(
                text, status=status, reason=reason,
                retry_after=_retry_after(exc, error, now))
        return errors.MailboxRejected(text, status=status, reason=reason)
    if isinstance(exc, google.auth.exceptions.RefreshError):
        if exc.retryable:
            return errors.MailboxUnavailable(
                f"{where}: refreshing the access token failed for now ({exc})")
        if "invalid_grant" in str(exc):
            return errors.AuthError(
                f"{where}: the refresh token has expired or was revoked (apps in Google's "
                f"'Testing' mode get tokens that expire after 7 days); run "
                f"`agentmail auth --email {address}` again")
        return errors.AuthError(
            f"{where}: Gmail refused the credentials and they cannot be refreshed ({exc}); "
            f"run `agentmail auth --email {address}` again")
    if isinstance(exc, google.auth.exceptions.TransportError):
        return errors.MailboxUnavailable(f"{where}: could not reach the token endpoint ({exc})")
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return errors.AuthError(f"{where}: {exc}; run `agentmail auth --email {address}` again")
    if isinstance(exc, TimeoutError):
        return errors.MailboxUnavailable(f"{where}: timed out", reason="timeout")
    if isinstance(exc, _TRANSPORT_ERRORS):
        kind = type(exc).__name__
        return errors.MailboxUnavailable(f"{where}: connection failed ({kind}: {exc})",
                                         reason="connection")
    if isinstance(exc, gerrors.Error):  # BatchError, malformed responses
        return errors.MailboxUnavailable(f"{where}: unexpected response ({exc})",
                                         reason="bad-response")
    return None


class GmailMailbox(base.Mailbox):
    """A Gmail account through the Gmail REST API (``userId="me"``).

    ``credentials`` are google-auth credentials (:mod:`agentmail.auth` loads them;
    :func:`emulator_credentials` for the emulator). ``api_endpoint`` is the host
    root of a Gmail-compatible server (``http://127.0.0.1:PORT``); None is real
    Gmail. ``http_timeout`` is the socket timeout in seconds. ``retry`` governs the
    retries of idempotent calls (not of sends).
    """

    def __init__(self, address: str, credentials: Any, *, api_endpoint: str | None = None,
                 http_timeout: float = 30, retry: base.RetryPolicy | None = None,
                 budget: quota.QuotaBudget | None = None) -> None:
        self.address = address
        self._credentials = credentials
        self._retry = retry or base.RetryPolicy()
        # Unpaced unless given: share one budget between every Mailbox of the same user.
        self._budget = budget or quota.QuotaBudget(0)
        self._batch_uri = (api_endpoint or GMAIL_ENDPOINT).rstrip("/") + BATCH_PATH
        # One keep-alive connection pool for every call but sends; sends get a
        # single-shot one (see _SingleShotHttp).
        self._http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=_new_http(http_timeout))
        self._send_http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=_new_http(http_timeout, _SingleShotHttp))
        try:
            # http= instead of credentials=, to set the timeout; same AuthorizedHttp
            # that build(credentials=...) would make.
            self._service = discovery.build(
                "gmail", "v1", http=self._http, static_discovery=True, cache_discovery=False,
                client_options={"api_endpoint": api_endpoint} if api_endpoint else None)
        except Exception:
            self._http.close()
            self._send_http.close()
            raise
        self._users = self._service.users()
        # Each users().messages() call builds a new Resource from discovery: build it once.
        self._messages = self._users.messages()
        self._labels: dict[str, str] | None = None  # folded name -> label id
        self._closed = False

    # -- the port -----------------------------------------------------------------

    def profile(self) -> tuple[str, str]:
        data = self._call("getProfile", lambda: self._users.getProfile(userId="me"))
        return str(data["emailAddress"]), str(data["historyId"])

    def history_point(self) -> str:
        return self.profile()[1]

    def changes_since(self, history_id: str) -> base.Changes:
        added: dict[str, base.MessageRef] = {}
        current = history_id
        for page in self._history_pages(history_id, "INBOX"):
            current = str(page.get("historyId", current))
            for ref, labels in _messages_added(page):
                # Defence in depth: our own sent copies must never look like new mail.
                if labels is not None and "INBOX" not in labels and (
                        {"SENT", "DRAFT"} & set(labels)):
                    continue
                added.setdefault(ref.id, ref)
        return base.Changes(tuple(added.values()), current)

    def list_unread(self, limit: int) -> base.Changes:
        _, history_id = self.profile()  # before listing: nothing slips between the two
        newest_first = self._list(["INBOX", "UNREAD"], limit)
        return base.Changes(tuple(reversed(newest_first)), history_id)

    def list_labelled(self, name: str, limit: int) -> list[base.MessageRef]:
        return self._list(self._label_ids([name]), limit)

    def _list(self, label_ids: list[str], limit: int) -> list[base.MessageRef]:
        """Message refs carrying all `label_ids`, newest first, in the largest pages."""
        refs: dict[str, base.MessageRef] = {}
        token: str | None = None
        while len(refs) < limit:
            page_size = min(PAGE_SIZE, limit - len(refs))
            data = self._call("messages.list", functools.partial(
                self._messages.list, userId="me", labelIds=label_ids,
                maxResults=page_size, pageToken=token))
            for item in data.get("messages", ()):
                refs.setdefault(item["id"], base.MessageRef(item["id"], item["threadId"]))
            token = data.get("nextPageToken")
            if not token:
                break
        return list(refs.values())[:limit]

    def sizes(self, ids: Sequence[str]) -> dict[str, int]:
        # format=minimal carries sizeEstimate and no body: the size check costs a
        # messages.get (5 units) per message, and an oversized message is never downloaded.
        unique = list(dict.fromkeys(ids))
        found = self._batch("messages.get", {
            mid: functools.partial(self._messages.get, userId="me", id=mid, format="minimal")
            for mid in unique}, missing_ok=True)
        return {mid: int(found[mid].get("sizeEstimate") or 0) for mid in unique if mid in found}

    def get_raw(self, ids: Sequence[str]) -> list[base.RawMessage]:
        unique = list(dict.fromkeys(ids))
        found = self._batch("messages.get", {
            mid: functools.partial(self._messages.get, userId="me", id=mid, format="raw")
            for mid in unique}, missing_ok=True)
        return [_raw_message(found[mid]) for mid in unique if mid in found]

    def ensure_labels(self, names: Sequence[str]) -> None:
        wanted = [name for name in names if name not in SYSTEM_LABELS]
        if not wanted:
            return
        labels = self._known_labels()
        for name in wanted:
            if fold_label_name(name) not in labels and name not in labels.values():
                self._create_label(name)

    def modify(self, ids: Sequence[str], add: Sequence[str] = (),
               remove: Sequence[str] = ()) -> None:
        unique = list(dict.fromkeys(ids))
        if not unique or not (add or remove):
            return
        body = {"addLabelIds": self._label_ids(add), "removeLabelIds": self._label_ids(remove)}
        if len(unique) >= BATCH_MODIFY_FROM:
            for chunk in _chunks(unique, BATCH_MODIFY_LIMIT):
                self._call("messages.batchModify", functools.partial(
                    self._messages.batchModify, userId="me", body={"ids": list(chunk), **body}))
        elif len(unique) == 1:
            try:
                self._call("messages.modify", lambda: self._messages.modify(
                    userId="me", id=unique[0], body=body))
            except errors.MailboxRejected as exc:
                if exc.status != 404:  # a message deleted meanwhile has nothing to label
                    raise
        else:
            self._batch("messages.modify", {
                mid: functools.partial(self._messages.modify, userId="me", id=mid, body=body)
                for mid in unique}, missing_ok=True)

    def send(self, raw: bytes, thread_id: str | None = None) -> base.MessageRef:
        body = {"raw": base64.urlsafe_b64encode(raw).decode("ascii")}
        if thread_id:
            body["threadId"] = thread_id
        # A fresh connection: a pooled one the server has closed would fail this
        # single-shot send for nothing (and cost a find_sent).
        _drop_connections(self._send_http.http)
        request = self._messages.send(userId="me", body=body)
        try:
            with self._budget.call("messages.send"):
                data = request.execute(http=self._send_http, num_retries=0)
        except Exception as exc:
            raise self._translate(exc, "messages.send") from exc
        return base.MessageRef(str(data["id"]), str(data["threadId"]))

    def find_sent(self, message_id: str, outbox_id: str,
                  since_history_id: str | None) -> base.MessageRef | None:
        bare = message_id.strip().strip("<>")
        data = self._call("messages.list", lambda: self._messages.list(
            userId="me", q=f"rfc822msgid:{bare} in:sent", maxResults=10))
        for item in data.get("messages", ()):
            return base.MessageRef(item["id"], item["threadId"])
        candidates: list[str]
        if since_history_id is not None:
            try:
                candidates = self._sent_since(since_history_id)
            except errors.HistoryExpired:
                candidates = self._recently_sent()
        else:
            candidates = self._recently_sent()
        return self._match_sent(candidates, bare, outbox_id.strip())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._service.close()  # closes self._http
        self._send_http.close()

    # -- helpers ------------------------------------------------------------------

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        mapped = translate_error(exc, what=what, address=self.address, now=self._retry.clock())
        return exc if mapped is None else mapped

    def _say_retry(self, failure: errors.MailboxUnavailable, wait: float) -> None:
        # A warning, once per backoff step: an unreachable server must not look like a hang.
        if failure.reason in ("connection", "timeout"):
            log.warning("cannot reach %s (%s); retrying in %.1f s",
                        self._batch_uri.removesuffix(BATCH_PATH), failure, wait)
        else:
            log.warning("%s; retrying in %.1f s", failure, wait)

    def _call(self, what: str, make: Callable[[], Any]) -> Any:
        """Execute an idempotent request, retrying MailboxUnavailable per the policy."""
        attempt = 0
        while True:
            try:
                with self._budget.call(what):
                    return make().execute(num_retries=0)
            except Exception as exc:
                mapped = self._translate(exc, what)
                if mapped is exc:
                    raise
                failure = mapped
                cause = exc
            if not isinstance(failure, errors.MailboxUnavailable):
                raise failure from cause
            wait = self._retry.delay(attempt, failure.retry_after)
            if wait is None:
                raise failure from cause
            self._say_retry(failure, wait)
            self._retry.sleep(wait)
            attempt += 1

    def _batch(self, what: str, requests: dict[str, Callable[[], Any]], *,
               missing_ok: bool) -> dict[str, Any]:
        """Run idempotent requests through the batch endpoint, ``BATCH_LIMIT`` per batch.

        Returns responses by key. Parts that fail retryably are retried (only
        those) per the policy; with ``missing_ok`` 404 parts are left out, any
        other refusal is raised.
        """
        results: dict[str, Any] = {}
        pending = list(requests)
        attempt = 0
        while pending:
            failed: dict[str, tuple[errors.MailboxUnavailable, BaseException]] = {}
            for chunk in _chunks(pending, BATCH_LIMIT):
                self._batch_once(what, chunk, requests, results, failed, missing_ok)
            if not failed:
                break
            pending = [key for key in pending if key in failed]
            failure, cause = next(iter(failed.values()))
            longest = max((f.retry_after for f, _ in failed.values() if f.retry_after),
                          default=None)
            wait = self._retry.delay(attempt, longest)
            if wait is None:
                raise failure from cause
            log.warning("%s (%d of %d parts); retrying them in %.1f s",
                        failure, len(failed), len(requests), wait)
            self._retry.sleep(wait)
            attempt += 1
        return results

    def _batch_once(self, what: str, keys: Sequence[str],
                    requests: dict[str, Callable[[], Any]], results: dict[str, Any],
                    failed: dict[str, tuple[errors.MailboxUnavailable, BaseException]],
                    missing_ok: bool) -> None:
        refused: list[tuple[errors.AgentmailError, BaseException]] = []

        def collect(request_id: str, response: Any, exception: BaseException | None) -> None:
            key = keys[int(request_id)]
            if exception is None:
                results[key] = response
                return
            mapped = self._translate(exception, what)
            if isinstance(mapped, errors.MailboxUnavailable):
                failed[key] = (mapped, exception)
            elif (missing_ok and isinstance(mapped, errors.MailboxRejected)
                  and mapped.status == 404):
                log.debug("%s: %s is gone", what, key)
            elif isinstance(mapped, errors.AgentmailError):
                refused.append((mapped, exception))
            else:
                refused.append((errors.MailboxUnavailable(str(mapped)), exception))

        batch = ghttp.BatchHttpRequest(callback=collect, batch_uri=self._batch_uri)
        for index, key in enumerate(keys):
            batch.add(requests[key](), request_id=str(index))
        try:
            self._refresh_if_needed()
            with self._budget.call(what, len(keys)):
                batch.execute(http=self._http)
        except Exception as exc:
            mapped = self._translate(exc, f"{what} (batch)")
            if mapped is exc:
                raise
            if not isinstance(mapped, errors.MailboxUnavailable):
                raise mapped from exc
            for key in keys:
                if key not in results:
                    failed[key] = (mapped, exc)
            return
        if refused:
            failure, cause = refused[0]
            raise failure from cause

    def _refresh_if_needed(self) -> None:
        # BatchHttpRequest would refresh with a new, never-closed Http of its own.
        if not getattr(self._credentials, "valid", True):
            self._credentials.refresh(google_auth_httplib2.Request(self._http.http))

    def _history_pages(self, start: str, label_id: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            try:
                page = self._call("history.list", functools.partial(
                    self._users.history().list, userId="me", startHistoryId=start,
                    historyTypes=["messageAdded"], labelId=label_id, maxResults=PAGE_SIZE,
                    pageToken=token))
            except errors.MailboxRejected as exc:
                if exc.status == 404:
                    raise errors.HistoryExpired(
                        f"history id {start} of {self.address} is too old or unknown to Gmail;"
                        " a full sync is needed", status=404, reason=exc.reason) from exc
                raise
            yield page
            token = page.get("nextPageToken")
            if not token:
                return

    def _sent_since(self, history_id: str) -> list[str]:
        ids: dict[str, None] = {}
        for page in self._history_pages(history_id, "SENT"):
            for ref, _ in _messages_added(page):
                ids.setdefault(ref.id)
        return list(ids)

    def _recently_sent(self) -> list[str]:
        ids: dict[str, None] = {}
        token: str | None = None
        while len(ids) < RECENT_SENT_LIMIT:
            data = self._call("messages.list", functools.partial(
                self._messages.list, userId="me", q=RECENT_SENT_QUERY, maxResults=PAGE_SIZE,
                pageToken=token))
            for item in data.get("messages", ()):
                ids.setdefault(item["id"])
            token = data.get("nextPageToken")
            if not token:
                break
        return list(ids)[:RECENT_SENT_LIMIT]

    def _match_sent(self, candidates: Sequence[str], message_id: str,
                    outbox_id: str) -> base.MessageRef | None:
        if not candidates:
            return None
        headers = [base.OUTBOX_ID_HEADER, "Message-ID"]
        found = self._batch("messages.get", {
            mid: functools.partial(self._messages.get, userId="me", id=mid, format="metadata",
                                   metadataHeaders=headers)
            for mid in candidates}, missing_ok=True)
        for mid in candidates:
            data = found.get(mid)
            if data is None:
                continue
            values = _headers(data)
            if (values.get(base.OUTBOX_ID_HEADER.lower()) == outbox_id
                    or values.get("message-id", "").strip("<>") == message_id):
                return base.MessageRef(str(data["id"]), str(data["threadId"]))
        return None

    def _known_labels(self) -> dict[str, str]:
        if self._labels is None:
            data = self._call("labels.list", lambda: self._users.labels().list(userId="me"))
            self._labels = {fold_label_name(label["name"]): label["id"]
                            for label in data.get("labels", ())}
        return self._labels

    def _create_label(self, name: str) -> None:
        try:
            label = self._call("labels.create", lambda: self._users.labels().create(
                userId="me", body={"name": name, "labelListVisibility": "labelShow",
                                   "messageListVisibility": "show"}))
        except errors.MailboxRejected as exc:
            # 409: created meanwhile by another process, or by a try of ours whose
            # answer was lost. Look again.
            if exc.status != 409:
                raise
            self._labels = None
            if fold_label_name(name) not in self._known_labels():
                raise
            return
        assert self._labels is not None
        self._labels[fold_label_name(label["name"])] = label["id"]

    def _label_ids(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        self.ensure_labels(names)
        labels = self._labels or {}
        ids = []
        for name in names:
            if name in SYSTEM_LABELS or name in labels.values():
                ids.append(name)
            else:
                ids.append(labels[fold_label_name(name)])
        return ids


def _messages_added(page: dict[str, Any]) -> Iterator[tuple[base.MessageRef, list[str] | None]]:
    for record in page.get("history", ()):
        for item in record.get("messagesAdded", ()):
            message = item["message"]
            yield (base.MessageRef(str(message["id"]), str(message["threadId"])),
                   message.get("labelIds"))


def _headers(message: dict[str, Any]) -> dict[str, str]:
    payload = message.get("payload") or {}
    return {h["name"].lower(): h["value"].strip() for h in payload.get("headers", ())}


def _raw_message(data: dict[str, Any]) -> base.RawMessage:
    return base.RawMessage(
        id=str(data["id"]), thread_id=str(data["threadId"]),
        label_ids=tuple(data.get("labelIds", ())), raw=_b64decode(data["raw"]),
        internal_date_ms=int(data.get("internalDate", 0)),
        history_id=str(data.get("historyId", "")))


def _drop_connections(http_: httplib2.Http) -> None:
    for conn in http_.connections.values():
        conn.close()
    http_.connections.clear()
