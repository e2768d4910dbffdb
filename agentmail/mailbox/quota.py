"""Spending Gmail's per-user quota evenly: a rolling-minute budget of quota units.

Gmail bills each call in units (`COSTS`) and refuses a user who spends more than
the per-user limit in a minute (429 rateLimitExceeded). Rather than provoke those
and back off, the adapter asks the budget before each call: the budget keeps the
units spent in the last 60 seconds and waits until the call fits. A backlog then
drains at the quota-bound rate with no 429s; a 429 that still comes (another client
of the same mailbox) is retried with backoff by the adapter as before.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Gmail's minute, plus a second: our clock starts counting a call before the server does,
# so a window of exactly 60 s lets spending expire here a moment before it expires there.
WINDOW_SECONDS = 61.0

# Units per call for projects created since 2026-05-01 (gmail-api-notes §4); methods named
# as the adapter names its calls. Unknown methods are charged DEFAULT_COST.
COSTS = {
    "getProfile": 1,
    "labels.list": 1,
    "labels.get": 1,
    "labels.create": 5,
    "messages.list": 5,
    "messages.get": 20,
    "messages.modify": 5,
    "messages.batchModify": 50,
    "messages.send": 100,
    "messages.insert": 25,
    "messages.import": 25,
    "messages.trash": 20,
    "history.list": 2,
    "threads.get": 40,
    "threads.list": 10,
}
DEFAULT_COST = 5


def cost_of(method: str, calls: int = 1) -> int:
    return COSTS.get(method, DEFAULT_COST) * calls


class QuotaBudget:
    """Units per rolling minute for one mailbox, shared by every thread that calls it.

    `units_per_minute=0` switches pacing off. `max_concurrent` caps calls in flight.
    """

    def __init__(self, units_per_minute: int, *, max_concurrent: int = 10,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = units_per_minute
        self.clock = clock
        self.sleep = sleep
        self._spent: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, max_concurrent))
        self.waited = 0.0  # seconds spent waiting for the budget, for reports

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - WINDOW_SECONDS:
            self._in_window -= self._spent.popleft()[1]

    def reserve(self, units: int) -> None:
        """Wait until `units` fit in the rolling minute, then count them as spent."""
        if self.limit <= 0:
            return
        units = min(units, self.limit)  # a call larger than the limit waits for an empty window
        while True:
            with self._lock:
                now = self.clock()
                self._expire(now)
                if self._in_window + units <= self.limit:
                    self._spent.append((now, units))
                    self._in_window += units
                    return
                # Sleep until enough of the oldest spending leaves the window.
                need = self._in_window + units - self.limit
                freed, wait_until = 0, now
                for at, spent in self._spent:
                    freed += spent
                    wait_until = at + WINDOW_SECONDS
                    if freed >= need:
                        break
            delay = max(0.001, wait_until - now)
            self.waited += delay
            self.sleep(delay)

    @contextmanager
    def call(self, method: str, calls: int = 1) -> Iterator[None]:
        """Pay for `calls` calls of `method` and hold a concurrency slot while they run."""
        self.reserve(cost_of(method, calls))
        with self._slots:
            yield
