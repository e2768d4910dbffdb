"""GmailMailbox against the emulator: the contract, plus what only Gmail's API shows
(batching, quota units, retries, faults, error translation)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from email.utils import make_msgid

import httplib2
import pytest
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from agentmail import errors
from agentmail.mailbox import RetryPolicy, send_exactly_once
from agentmail.mailbox.gmail import GmailMailbox, emulator_credentials, translate_error
from tests.mailbox.contract import MailboxContract, compose, new_address

SEND = "gmail.users.messages.send"
IDEMPOTENT = ["gmail.users.getProfile", "gmail.users.messages.list", "gmail.users.messages.get",
              "gmail.users.messages.modify", "gmail.users.messages.batchModify",
              "gmail.users.history.list", "gmail.users.labels.list",
              "gmail.users.labels.create"]


class TestGmailOnEmulator(MailboxContract):
    @pytest.fixture
    def make_mailbox(self, make_gmail):
        return make_gmail

    @pytest.fixture
    def deliver(self, emulator) -> Callable[[bytes, str], None]:
        return lambda raw, to: emulator.deliver(raw, to=to)

    @pytest.fixture
    def expire_history(self, emulator) -> Callable[[str], None]:
        return emulator.expire_history


# -- helpers ------------------------------------------------------------------------


def account(emulator, address: str) -> dict:
    return emulator.stats()["accounts"].get(address, {"quota_units": 0, "calls": {},
                                                      "http_requests": 0})


class Counter:
    """Differences of one account's emulator counters since the last ``mark()``."""

    def __init__(self, emulator, address: str) -> None:
        self.emulator, self.address = emulator, address
        self.mark()

    def mark(self) -> None:
        self.before = account(self.emulator, self.address)

    def calls(self, method: str) -> int:
        now = account(self.emulator, self.address)["calls"].get(method, 0)
        return now - self.before["calls"].get(method, 0)

    def units(self) -> int:
        return account(self.emulator, self.address)["quota_units"] - self.before["quota_units"]

    def http_requests(self) -> int:
        return (account(self.emulator, self.address)["http_requests"]
                - self.before["http_requests"])


@pytest.fixture
def raw_service(emulator) -> Iterator[Callable[[str], object]]:
    """A plain googleapiclient service per address, to look behind the adapter's back."""
    services: list = []

    def make(address: str):
        svc = discovery.build("gmail", "v1", credentials=emulator_credentials(address),
                              static_discovery=True, cache_discovery=False,
                              client_options={"api_endpoint": emulator.url})
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.close()


def count(service, query: str) -> int:
    data = service.users().messages().list(userId="me", q=query).execute()
    return len(data.get("messages", []))


def fill(emulator, address: str, n: int) -> None:
    for i in range(n):
        emulator.deliver(compose("carol@example.com", address, f"m{i}"), to=address)


# -- batching and quota -------------------------------------------------------------


def test_get_raw_batches_fifty_calls_per_request(emulator, make_gmail) -> None:
    bob = make_gmail(new_address("bob"))
    fill(emulator, bob.address, 120)
    ids = [r.id for r in bob.list_unread(limit=500).added]
    assert len(ids) == 120
    counter = Counter(emulator, bob.address)
    raws = bob.get_raw(ids)
    assert [m.id for m in raws] == ids
    assert counter.calls("gmail.users.messages.get") == 120
    assert counter.http_requests() == 3  # 50 + 50 + 20 calls, one HTTP request each
    per_get = counter.units() / 120
    assert per_get in (5, 20)  # Gmail's old and May-2026 price of messages.get


def test_full_sync_uses_few_large_pages(emulator, make_gmail) -> None:
    bob = make_gmail(new_address("bob"))
    fill(emulator, bob.address, 30)
    counter = Counter(emulator, bob.address)
    assert len(bob.list_unread(limit=1000).added) == 30
    assert counter.calls("gmail.users.messages.list") == 1
    assert counter.calls("gmail.users.getProfile") == 1


@pytest.mark.parametrize(("n", "method", "calls", "units"), [
    (1, "gmail.users.messages.modify", 1, 5),
    (5, "gmail.users.messages.modify", 5, 25),
    (10, "gmail.users.messages.batchModify", 1, 50),
    (40, "gmail.users.messages.batchModify", 1, 50),
])
def test_modify_picks_the_cheaper_call(emulator, make_gmail, n, method, calls, units) -> None:
    bob = make_gmail(new_address("bob"))
    fill(emulator, bob.address, n)
    ids = [r.id for r in bob.list_unread(limit=100).added]
    bob.ensure_labels(["agent-processing"])
    counter = Counter(emulator, bob.address)
    bob.modify(ids, add=["agent-processing"], remove=["UNREAD"])
    assert counter.calls(method) == calls
    assert counter.units() == units
    assert counter.calls("gmail.users.labels.list") == 0  # labels come from the cache
    assert counter.http_requests() == 1  # one modify, one batch or one batchModify
    assert bob.list_unread(limit=100).added == ()


def test_ensure_labels_lists_once_creates_once_and_folds_names(emulator, make_gmail) -> None:
    address = new_address("bob")
    bob = make_gmail(address)
    counter = Counter(emulator, address)
    bob.ensure_labels(["agent-processing", "agent/processing", "Agent Processing",
                       "agent-done", "INBOX"])
    bob.ensure_labels(["agent-done", "AGENT DONE"])
    assert counter.calls("gmail.users.labels.list") == 1
    assert counter.calls("gmail.users.labels.create") == 2
    # another process (a fresh mailbox object) finds them under a folded spelling
    again = make_gmail(address)
    counter.mark()
    again.ensure_labels(["Agent/Processing", "agent done"])
    assert counter.calls("gmail.users.labels.create") == 0
    assert counter.calls("gmail.users.labels.list") == 1


# -- finding sent mail; exactly once ------------------------------------------------


def test_find_sent_by_outbox_id_when_gmail_rewrites_message_id(emulator, make_gmail,
                                                              raw_service) -> None:
    alice, bob = make_gmail(new_address("alice")), make_gmail(new_address("bob"))
    emulator.set_faults(rewrite_message_id=True)
    mid = make_msgid(domain="agents.example.com")
    point = alice.history_point()
    ref = alice.send(compose(alice.address, bob.address, "rewritten", message_id=mid,
                             outbox_id="outbox-7"))
    assert count(raw_service(alice.address), f"rfc822msgid:{mid.strip('<>')}") == 0
    assert alice.find_sent(mid, "outbox-7", point) == ref
    assert alice.find_sent(mid, "outbox-8", point) is None


def test_find_sent_falls_back_to_recent_sent_mail_when_history_expired(emulator,
                                                                      make_gmail) -> None:
    alice, bob = make_gmail(new_address("alice")), make_gmail(new_address("bob"))
    emulator.set_faults(rewrite_message_id=True)
    mid = make_msgid(domain="agents.example.com")
    point = alice.history_point()
    ref = alice.send(compose(alice.address, bob.address, "x", message_id=mid, outbox_id="o-1"))
    emulator.expire_history(alice.address)
    assert alice.find_sent(mid, "o-1", point) == ref
    assert alice.find_sent(mid, "o-1", None) == ref


@pytest.mark.parametrize("rewrite", [False, True])
@pytest.mark.parametrize("action", ["drop_after", "drop_before", "error"])
def test_send_exactly_once_under_a_lost_send(emulator, make_gmail, raw_service, sleeps,
                                             action, rewrite) -> None:
    alice, bob = make_gmail(new_address("alice")), make_gmail(new_address("bob"))
    emulator.set_faults(rewrite_message_id=rewrite,
                        script=[{"method": SEND, "action": action, "code": 503, "count": 1}])
    mid = make_msgid(domain="agents.example.com")
    raw = compose(alice.address, bob.address, "exactly once", message_id=mid, outbox_id="ob-1")
    ref, found = send_exactly_once(alice, raw, None, mid, "ob-1", sleep=sleeps.append)
    assert found is (action == "drop_after")  # it went out before the connection dropped
    assert len(sleeps) == 1
    assert count(raw_service(bob.address), "subject:exactly") == 1
    assert count(raw_service(alice.address), "in:sent subject:exactly") == 1
    (sent,) = raw_service(alice.address).users().messages().list(
        userId="me", q="in:sent").execute()["messages"]
    assert sent["id"] == ref.id


def test_send_is_never_retried_by_the_adapter(emulator, make_gmail, raw_service) -> None:
    alice, bob = make_gmail(new_address("alice")), make_gmail(new_address("bob"))
    emulator.set_faults(script=[{"method": SEND, "action": "drop_after", "count": 1}])
    counter = Counter(emulator, alice.address)
    with pytest.raises(errors.MailboxUnavailable) as caught:
        alice.send(compose(alice.address, bob.address, "dropped"))
    assert caught.value.reason == "connection"
    assert counter.calls(SEND) == 1  # httplib2 did not quietly send it again
    assert count(raw_service(bob.address), "subject:dropped") == 1


def test_send_exactly_once_gives_up_when_not_sent(emulator, make_gmail, raw_service) -> None:
    alice, bob = make_gmail(new_address("alice")), make_gmail(new_address("bob"))
    emulator.set_faults(script=[{"method": SEND, "action": "error", "code": 503, "count": 3}])
    mid = make_msgid(domain="agents.example.com")
    raw = compose(alice.address, bob.address, "never", message_id=mid, outbox_id="ob-2")
    sleeps: list[float] = []
    with pytest.raises(errors.MailboxUnavailable):
        send_exactly_once(alice, raw, None, mid, "ob-2", attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2
    assert count(raw_service(bob.address), "subject:never") == 0


# -- retries ------------------------------------------------------------------------


def test_idempotent_calls_ride_out_a_429_503_storm(emulator, make_gmail, sleeps) -> None:
    bob = make_gmail(new_address("bob"))
    fill(emulator, bob.address, 60)
    emulator.set_faults(error_rate=0.3, error_codes=[429, 503], methods=IDEMPOTENT, seed=11)
    point = bob.history_point()
    synced = bob.list_unread(limit=100)
    assert len(synced.added) == 60
    ids = [r.id for r in synced.added]
    assert len(bob.get_raw(ids)) == 60
    bob.ensure_labels(["agent-processing"])
    bob.modify(ids[:3], add=["agent-processing"])
    bob.modify(ids, remove=["UNREAD", "agent-processing"])
    assert bob.changes_since(point).added == ()
    emulator.set_faults(error_rate=0.0)
    assert bob.list_unread(limit=100).added == ()
    assert sleeps, "the storm should have caused retries"
    assert all(0 < s <= 32 for s in sleeps)


def test_a_dropped_connection_on_a_read_is_retried(emulator, make_gmail, sleeps) -> None:
    bob = make_gmail(new_address("bob"))
    emulator.set_faults(script=[{"method": "gmail.users.getProfile", "action": "drop_after",
                                 "count": 3}])
    assert bob.profile()[0] == bob.address


def test_retries_give_up_after_the_policy_attempts(emulator, make_gmail) -> None:
    sleeps: list[float] = []
    bob = make_gmail(new_address("bob"), retry=RetryPolicy(attempts=3, sleep=sleeps.append))
    emulator.set_faults(script=[{"method": "gmail.users.getProfile", "action": "error",
                                 "code": 503, "count": 5}])
    with pytest.raises(errors.MailboxUnavailable) as caught:
        bob.profile()
    assert caught.value.status == 503 and len(sleeps) == 2
    assert isinstance(caught.value.__cause__, HttpError)


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=8, random=lambda: 1.0)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 16, 32]
    assert policy.delay(7) is None
    assert policy.delay(0, retry_after=5) == 5
    assert policy.delay(0, retry_after=3600) is None  # hours: the caller reschedules
    assert RetryPolicy(random=lambda: 0.0).delay(3) == 0


# -- error translation --------------------------------------------------------------


@pytest.mark.parametrize(("code", "kind"), [
    (500, errors.MailboxUnavailable), (502, errors.MailboxUnavailable),
    (503, errors.MailboxUnavailable), (429, errors.MailboxUnavailable),
    (400, errors.MailboxRejected), (403, errors.MailboxUnavailable),  # rate-limit body
    (404, errors.MailboxRejected), (409, errors.MailboxRejected),
])
def test_http_errors_from_the_wire_map_to_our_tree(emulator, make_gmail, code, kind) -> None:
    bob = make_gmail(new_address("bob"), retry=RetryPolicy(attempts=1))
    emulator.set_faults(script=[{"method": "gmail.users.getProfile", "action": "error",
                                 "code": code, "count": 1}])
    with pytest.raises(kind) as caught:
        bob.profile()
    assert type(caught.value) is kind
    assert caught.value.status == code
    assert isinstance(caught.value.__cause__, HttpError)
    assert bob.address in str(caught.value)


@pytest.mark.parametrize("n", [1, 3, 12])
def test_a_bad_request_is_rejected_not_retried(emulator, make_gmail, sleeps, n) -> None:
    bob = make_gmail(new_address("bob"))
    fill(emulator, bob.address, n)
    ids = [r.id for r in bob.list_unread(limit=100).added]
    method = "gmail.users.messages." + ("batchModify" if n >= 10 else "modify")
    emulator.set_faults(script=[{"method": method, "action": "error", "code": 400,
                                 "count": 1}])
    counter = Counter(emulator, bob.address)
    with pytest.raises(errors.MailboxRejected) as caught:
        bob.modify(ids, remove=["UNREAD"])
    assert caught.value.status == 400
    assert sleeps == []
    assert counter.http_requests() == 1


def test_a_timeout_is_unavailable(emulator, make_gmail) -> None:
    bob = make_gmail(new_address("bob"), http_timeout=0.2, retry=RetryPolicy(attempts=1))
    emulator.set_faults(latency_ms=1000)
    with pytest.raises(errors.MailboxUnavailable) as caught:
        bob.profile()
    assert caught.value.reason == "timeout"


def test_nobody_listening_is_unavailable() -> None:
    box = GmailMailbox("x@example.com", emulator_credentials("x@example.com"),
                       api_endpoint="http://127.0.0.1:9", retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(errors.MailboxUnavailable, match="connection failed"):
            box.profile()
    finally:
        box.close()


def test_refused_credentials_say_to_authorize_again(emulator) -> None:
    box = GmailMailbox("x@example.com", emulator_credentials(""), api_endpoint=emulator.url)
    try:
        with pytest.raises(errors.AuthError, match=r"agentmail auth --email x@example\.com"):
            box.profile()
    finally:
        box.close()


def _http_error(status: int, body: dict, headers: dict | None = None) -> HttpError:
    resp = httplib2.Response({"status": status, **(headers or {})})
    return HttpError(resp, json.dumps(body).encode(), uri="http://127.0.0.1/x")


def _gmail_error(status: int, reason: str, message: str = "Rate Limit Exceeded") -> dict:
    return {"error": {"code": status, "message": message, "status": "RESOURCE_EXHAUSTED",
                      "errors": [{"message": message, "domain": "usageLimits",
                                  "reason": reason}]}}


@pytest.mark.parametrize(("status", "reason", "kind"), [
    (403, "rateLimitExceeded", errors.MailboxUnavailable),
    (403, "userRateLimitExceeded", errors.MailboxUnavailable),
    (403, "dailyLimitExceeded", errors.MailboxRejected),
    (403, "insufficientPermissions", errors.MailboxRejected),
    (429, "rateLimitExceeded", errors.MailboxUnavailable),
    (401, "authError", errors.AuthError),
])
def test_gmail_error_bodies_translate_by_reason(status, reason, kind) -> None:
    mapped = translate_error(_http_error(status, _gmail_error(status, reason)),
                             what="messages.get", address="a@x", now=0)
    assert type(mapped) is kind
    if isinstance(mapped, errors.MailboxError):
        assert mapped.reason == reason


def test_retry_after_is_read_from_header_retry_info_and_message() -> None:
    def after(error: HttpError) -> float | None:
        mapped = translate_error(error, what="messages.send", address="a@x", now=1_000_000_000)
        assert isinstance(mapped, errors.MailboxUnavailable)
        return mapped.retry_after

    assert after(_http_error(429, _gmail_error(429, "rateLimitExceeded"),
                             {"retry-after": "7"})) == 7
    body = _gmail_error(429, "rateLimitExceeded")
    body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": "2.5s"}]
    del body["error"]["errors"]
    assert after(_http_error(429, body)) == 2.5
    message = "User-rate limit exceeded.  Retry after 2001-09-09T01:48:20.000Z (Mail sending)"
    assert after(_http_error(429, _gmail_error(429, "userRateLimitExceeded", message))) == 100
    assert after(_http_error(503, {"error": {"code": 503, "message": "x"}})) is None


def test_foreign_errors_that_are_not_ours_pass_through() -> None:
    assert translate_error(KeyError("x"), what="w", address="a", now=0) is None
    assert isinstance(translate_error(ConnectionResetError(), what="w", address="a", now=0),
                      errors.MailboxUnavailable)


def test_a_mailbox_is_a_context_manager(emulator) -> None:
    with GmailMailbox("x@example.com", emulator_credentials("x@example.com"),
                      api_endpoint=emulator.url) as box:
        assert box.profile()[0] == "x@example.com"


def test_a_send_is_not_resent_when_the_server_closes_without_answering() -> None:
    """A graceful close (FIN) before the answer makes stock httplib2 re-send the request,
    believing the keep-alive connection was stale; a send must go out once at most.
    (The emulator drops with a reset, which httplib2 does not retry, hence this server.)"""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)  # the request arrived; close with no answer

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    box = GmailMailbox("x@example.com", emulator_credentials("x@example.com"),
                       api_endpoint=f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(errors.MailboxUnavailable, match="connection failed"):
            box.send(compose("x@example.com", "y@example.com", "once"))
    finally:
        box.close()
        stop.set()
        thread.join(5)
        listener.close()
    assert len(received) == 1
    assert received[0].startswith(b"POST /gmail/v1/users/me/messages/send")
