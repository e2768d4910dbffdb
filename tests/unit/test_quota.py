"""The quota budget: units per rolling minute, waited for rather than refused."""

from __future__ import annotations

import threading

from agentmail.mailbox.quota import WINDOW_SECONDS, QuotaBudget, cost_of


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_calls_within_the_limit_do_not_wait():
    t = FakeTime()
    budget = QuotaBudget(6000, clock=t.clock, sleep=t.sleep)
    for _ in range(300):
        budget.reserve(cost_of("messages.get"))  # 300 x 20 = 6000 units
    assert t.slept == [] and t.now == 0.0


def test_a_call_over_the_limit_waits_until_the_oldest_units_leave_the_minute():
    t = FakeTime()
    budget = QuotaBudget(6000, clock=t.clock, sleep=t.sleep)
    budget.reserve(5000)
    t.now = 10.0
    budget.reserve(1000)
    budget.reserve(100)  # the 5000 from t=0 must leave the window first
    assert t.now == WINDOW_SECONDS
    assert budget.waited == WINDOW_SECONDS - 10


def test_spending_over_any_rolling_minute_never_exceeds_the_limit():
    t = FakeTime()
    budget = QuotaBudget(1000, clock=t.clock, sleep=t.sleep)
    spent: list[tuple[float, int]] = []
    for i in range(500):
        units = (7, 20, 50, 100)[i % 4]
        budget.reserve(units)
        spent.append((t.now, units))
        t.now += 0.01
    for start, _ in spent:
        window = sum(u for at, u in spent if start <= at < start + 60)  # any minute, as Gmail
        assert window <= 1000
    # and the budget is used: the run lasts about as long as the quota forces, not longer
    total = sum(u for _, u in spent)
    assert t.now < (total / 1000 + 1) * WINDOW_SECONDS


def test_a_single_call_larger_than_the_limit_still_goes_through():
    t = FakeTime()
    budget = QuotaBudget(100, clock=t.clock, sleep=t.sleep)
    budget.reserve(1000)  # a batch of 50 gets under a tiny limit
    budget.reserve(10)
    assert t.now >= 60.0


def test_zero_switches_pacing_off():
    t = FakeTime()
    budget = QuotaBudget(0, clock=t.clock, sleep=t.sleep)
    for _ in range(1000):
        budget.reserve(100)
    assert t.slept == []


def test_the_concurrency_cap_holds_across_threads():
    budget = QuotaBudget(0, max_concurrent=3)
    inside = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def call() -> None:
        nonlocal inside, peak
        with budget.call("messages.get"):
            with lock:
                inside += 1
                peak = max(peak, inside)
            release.wait(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=call) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak == 3
