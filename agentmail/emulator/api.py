"""The request pipeline shared by plain HTTP requests and batch parts.

For an API call: route -> authenticate -> concurrency slot -> latency -> fault
decision -> per-user rate limit -> bill quota -> handler -> (maybe drop). Admin
endpoints (``/emulator/v1/...``) skip quota and faults. Every handler runs
inside a catch-all, so no request can take the server down: an unexpected
exception becomes Gmail's 500 body and the store transaction rolls back.
"""

from __future__ import annotations

import collections
import dataclasses
import http
import json
import logging
import re
import threading
import time
import urllib.parse
from typing import Any

from agentmail.emulator import errors, faults, quota, routes
from agentmail.emulator.store import Store

log = logging.getLogger(__name__)

BATCH_PATHS = ("/batch", "/batch/gmail/v1")
BATCH_METHOD_ID = "batch"  # pseudo method id of the batch envelope (for faults)
ADMIN_PREFIX = "/emulator/v1/"
MAX_BATCH_BODY = 100 * (routes.MAX_SEND_BYTES * 4 // 3 + 65536)
_BEARER = re.compile(r"^\s*Bearer\s+(\S+@\S+)\s*$", re.I)
JSON_TYPE = "application/json; charset=UTF-8"


class Drop(Exception):
    """Close the connection without an answer (the request was applied if ``after``)."""

    def __init__(self, after: bool) -> None:
        super().__init__("drop after" if after else "drop before")
        self.after = after


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def reason(self) -> str:
        try:
            return http.HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"


def json_response(status: int, value: Any) -> Response:
    if value is None:
        return Response(status)
    return Response(status, json.dumps(value).encode(), {"Content-Type": JSON_TYPE})


def error_response(exc: errors.ApiError) -> Response:
    return Response(exc.code, exc.encode(), {"Content-Type": JSON_TYPE, **exc.headers})


class Stats:
    """Counters behind ``GET /emulator/v1/stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.http_requests = 0
        self.rate_limited = 0
        self.accounts: dict[str, dict[str, Any]] = {}

    def _account(self, email: str) -> dict[str, Any]:
        acct = self.accounts.get(email)
        if acct is None:
            acct = self.accounts[email] = {"quota_units": 0,
                                           "calls": collections.Counter(), "http_requests": 0,
                                           "bodies_served": 0, "body_bytes_served": 0}
        return acct

    def http_request(self, email: str | None) -> None:
        with self._lock:
            self.http_requests += 1
            if email:
                self._account(email)["http_requests"] += 1

    def bill(self, email: str, method_id: str, units: int) -> None:
        with self._lock:
            acct = self._account(email)
            acct["quota_units"] += units
            acct["calls"][method_id] += 1

    def body_served(self, email: str, size: int) -> None:
        """A message's body left the emulator (format raw or full)."""
        with self._lock:
            acct = self._account(email)
            acct["bodies_served"] += 1
            acct["body_bytes_served"] += size

    def limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def snapshot(self, injected: dict[str, int]) -> dict[str, Any]:
        with self._lock:
            return {
                "accounts": {email: {"quota_units": a["quota_units"], "calls": dict(a["calls"]),
                                     "http_requests": a["http_requests"],
                                     "bodies_served": a["bodies_served"],
                                     "body_bytes_served": a["body_bytes_served"]}
                             for email, a in self.accounts.items()},
                "http_requests": self.http_requests,
                "rate_limited": self.rate_limited,
                "faults_injected": dict(injected),
            }


def bearer_account(headers: Any) -> str | None:
    """The account an ``Authorization: Bearer <email>`` header names, or None."""
    value = headers.get("Authorization") or headers.get("authorization") or ""
    found = _BEARER.match(value)
    return found[1].lower() if found else None


class Api:
    """Everything behind the HTTP server: store, quota, faults, stats."""

    def __init__(self, store: Store, *, regime: str = "2026-05",
                 rate_limit: int | None = None, concurrency_limit: int | None = None,
                 fault_settings: faults.Faults | None = None) -> None:
        self.store = store
        self.regime = quota.check_regime(regime)
        self.limiter = quota.RateLimiter(rate_limit)
        self.gate = quota.ConcurrencyGate(concurrency_limit)
        self.faults = fault_settings or faults.Faults()
        self.stats = Stats()

    # -- entry points --------------------------------------------------------------

    def body_limit(self, verb: str, path: str) -> int:
        """Largest request body accepted for ``verb path`` (bigger ones get 413)."""
        if path in BATCH_PATHS:
            return MAX_BATCH_BODY
        if path.startswith(ADMIN_PREFIX):
            return 1 << 20
        try:
            return routes.match(verb, path).body_limit
        except errors.ApiError:
            return routes.GET_BODY_LIMIT

    def handle(self, verb: str, path: str, query: str, headers: Any, body: bytes) -> Response:
        """One HTTP request (not a batch part). May raise :class:`Drop`."""
        self.stats.http_request(bearer_account(headers))
        try:
            if path.startswith(ADMIN_PREFIX):
                return self._admin(verb, path, query, body)
            if path in BATCH_PATHS:
                return self._batch(verb, headers, body)
            return self.call(verb, path, query, headers, body)
        except Drop:
            raise
        except errors.ApiError as exc:
            return error_response(exc)
        except Exception:
            log.exception("emulator: unexpected error on %s %s", verb, path)
            return error_response(errors.internal())

    def call(self, verb: str, path: str, query: str, headers: Any, body: bytes, *,
             in_batch: bool = False, slot_held: bool = False) -> Response:
        """One API call (a plain request or a batch part)."""
        try:
            match = routes.match(verb, path)
            account = bearer_account(headers)
            if account is None:
                raise errors.unauthenticated(missing=not (
                    headers.get("Authorization") or headers.get("authorization")))
            user = _user(match.path.pop("userId", "me"), account)
            if not slot_held and not self.gate.acquire(user):
                raise errors.rate_limited("Too many concurrent requests for user")
            try:
                return self._run(match, user, query, body, in_batch)
            finally:
                if not slot_held:
                    self.gate.release(user)
        except (Drop, errors.ApiError):
            raise
        except Exception:
            log.exception("emulator: unexpected error on %s %s", verb, path)
            raise errors.internal() from None

    def _run(self, match: routes.Match, user: str, query: str, body: bytes,
             in_batch: bool) -> Response:
        method_id = match.method_id
        if not in_batch:
            delay = self.faults.latency(method_id)
            if delay:
                time.sleep(delay)
        decision = self.faults.decide(method_id, can_drop=not in_batch)
        if decision.action == "error":
            raise errors.error_for_code(decision.code)
        if decision.action == "drop_before":
            raise Drop(after=False)
        units = quota.cost(self.regime, method_id)
        wait = self.limiter.try_spend(user, units)
        if wait is not None:
            self.stats.limited()
            raise errors.rate_limited(
                f"User-rate limit exceeded.  Retry after {quota.retry_at(wait)}",
                "userRateLimitExceeded", retry_after=max(1, round(wait)))
        self.stats.bill(user, method_id, units)
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        path = {k: urllib.parse.unquote(v) for k, v in match.path.items()}
        call = routes.Call(self.store, user, params, body, path,
                           rewrite_message_id=self.faults.should_rewrite_message_id,
                           body_served=lambda size: self.stats.body_served(user, size))
        try:
            status, value = match.handler(call)
            response = json_response(status, value)
        except errors.ApiError as exc:
            response = error_response(exc)
        if decision.action == "drop_after":
            raise Drop(after=True)
        return response

    def call_response(self, verb: str, path: str, query: str, headers: Any, body: bytes,
                      **kw: Any) -> Response:
        try:
            return self.call(verb, path, query, headers, body, **kw)
        except errors.ApiError as exc:
            return error_response(exc)

    def _batch(self, verb: str, headers: Any, body: bytes) -> Response:
        from agentmail.emulator import batch

        if verb != "POST":
            raise errors.ApiError(405, "Batch requests must be POST", "badRequest",
                                  headers={"Allow": "POST"})
        delay = self.faults.latency(BATCH_METHOD_ID)
        if delay:
            time.sleep(delay)
        decision = self.faults.decide(BATCH_METHOD_ID)
        if decision.action == "error":
            raise errors.error_for_code(decision.code)
        if decision.action == "drop_before":
            raise Drop(after=False)
        response = batch.handle(self, headers, body)
        if decision.action == "drop_after":
            raise Drop(after=True)
        return response

    # -- admin ---------------------------------------------------------------------

    def _admin(self, verb: str, path: str, query: str, body: bytes) -> Response:
        name = path[len(ADMIN_PREFIX):].strip("/")
        params = urllib.parse.parse_qs(query)
        if (verb, name) == ("GET", "stats"):
            return json_response(200, self.stats.snapshot(self.faults.injected_counts()))
        if (verb, name) == ("POST", "reset"):
            self.reset()
            return json_response(200, {})
        if name == "faults" and verb == "GET":
            return json_response(200, self.faults.settings())
        if name == "faults" and verb in ("PUT", "POST", "PATCH"):
            try:
                settings = json.loads(body or b"{}")
                if not isinstance(settings, dict):
                    raise ValueError("expected a JSON object")
                return json_response(200, self.faults.update(**settings))
            except (ValueError, TypeError, RecursionError) as exc:
                raise errors.invalid(f"Invalid fault settings: {exc}") from None
        if (verb, name) == ("POST", "history/expire"):
            given = params.get("email")
            email: str | None = given[0] if given else None
            if body.strip():
                try:
                    email = json.loads(body).get("email", email)
                except (ValueError, AttributeError, RecursionError):
                    raise errors.invalid("Invalid JSON payload received.") from None
            self.store.expire_history(email.lower() if email else None)
            return json_response(200, {})
        if name in ("stats", "reset", "faults", "history/expire"):
            raise errors.ApiError(405, f"Method {verb} not allowed for this path", "badRequest")
        raise errors.ApiError(404, f"The requested URL {path} was not found on this server.",
                              "notFound")

    def reset(self) -> None:
        self.store.reset()
        self.stats.reset()
        self.limiter.reset()
        self.faults.reset_counts()


def _user(user_id: str, account: str) -> str:
    user_id = urllib.parse.unquote(user_id)
    if user_id == "me" or user_id.lower() == account:
        return account
    raise errors.forbidden(f"Delegation denied for {user_id}")
