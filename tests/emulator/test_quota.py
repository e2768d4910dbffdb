"""Quota units per method and regime, the per-user rate limit, the concurrency cap."""

from __future__ import annotations

import threading

import pytest
from googleapiclient.errors import HttpError

from agentmail.emulator import quota
from agentmail.emulator.testing import raw_message

COSTS = {  # method: (legacy, 2026-05)
    "gmail.users.messages.get": (5, 20),
    "gmail.users.messages.trash": (5, 20),
    "gmail.users.threads.get": (10, 40),
    "gmail.users.messages.list": (5, 5),
    "gmail.users.messages.send": (100, 100),
    "gmail.users.getProfile": (1, 1),
}


@pytest.mark.parametrize("regime", ["legacy", "2026-05"])
def test_units_per_method_in_each_regime(private_emulator, account_on, regime):
    emu = private_emulator(regime=regime)
    alice, bob = account_on(emu, "alice"), account_on(emu, "bob")
    sent = alice.send(bob.address, "quota")
    alice.get(sent["id"])
    alice.users.threads().get(userId="me", id=sent["threadId"]).execute()
    alice.list()
    alice.profile()
    alice.users.messages().trash(userId="me", id=sent["id"]).execute()
    stats = emu.stats()["accounts"][alice.address]
    column = 0 if regime == "legacy" else 1
    assert stats["calls"] == dict.fromkeys(COSTS, 1)
    assert stats["quota_units"] == sum(cost[column] for cost in COSTS.values())
    assert stats["http_requests"] == 6
    assert "bob@" not in str(stats)  # delivery is not billed to the recipient
    assert emu.stats()["accounts"].get(bob.address, {"quota_units": 0})["quota_units"] == 0


def test_cost_table_has_every_implemented_method():
    from agentmail.emulator import routes

    for _, _, method_id, _, _ in routes.ROUTES:
        assert method_id in quota.CURRENT and method_id in quota.LEGACY, method_id


def test_rate_limit_429_with_gmail_body(private_emulator, account_on):
    emu = private_emulator(rate_limit=30)
    alice = account_on(emu, "alice")
    mid = emu.deliver(raw_message("x@example.com", alice.address, "hi"), alice.address)["id"]
    alice.get(mid)  # 20 units
    with pytest.raises(HttpError) as info:
        alice.get(mid)  # 40 > 30
    error = info.value
    assert error.status_code == 429
    assert error.error_details[0]["reason"] == "userRateLimitExceeded"
    assert error.error_details[0]["domain"] == "usageLimits"
    assert "Retry after" in error.reason
    assert error.resp["retry-after"].isdigit()
    alice.profile()  # 21 units: still within the minute's budget
    stats = emu.stats()
    assert stats["rate_limited"] == 1
    assert stats["accounts"][alice.address]["quota_units"] == 21
    other = account_on(emu, "other")
    other.profile()  # limits are per user


def test_rate_limiter_rolls_over_the_minute():
    now = [1000.0]
    limiter = quota.RateLimiter(10, clock=lambda: now[0])
    assert limiter.try_spend("u", 6) is None
    assert limiter.try_spend("u", 6) == pytest.approx(60.0)
    now[0] += 30
    assert limiter.try_spend("u", 4) is None
    now[0] += 31  # the first 6 units left the window
    assert limiter.try_spend("u", 6) is None


def test_concurrency_cap_on_batches(private_emulator, account_on):
    emu = private_emulator(concurrency_limit=3)
    alice = account_on(emu, "alice")
    results = {}
    batch = alice.new_batch(lambda rid, resp, exc: results.__setitem__(rid, exc))
    for _ in range(5):
        batch.add(alice.users.labels().list(userId="me"))
    batch.execute()
    errors = [e for e in results.values() if e is not None]
    assert len(errors) == 2
    assert all(e.status_code == 429 and e.reason == "Too many concurrent requests for user"
               and e.error_details[0]["reason"] == "rateLimitExceeded" for e in errors)


def test_concurrency_cap_on_parallel_requests(private_emulator, account_on):
    emu = private_emulator(concurrency_limit=1, faults={"latency_ms": 300})
    accounts = [account_on(emu, address="busy@example.com") for _ in range(2)]
    outcomes = []

    def call(account):
        try:
            account.profile()
            outcomes.append(200)
        except HttpError as exc:
            outcomes.append(exc.status_code)

    threads = [threading.Thread(target=call, args=(a,)) for a in accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200, 429]
