"""Quota: the cost tables, the per-user rolling-minute limiter and the concurrency cap.

Costs are Gmail's per-method quota units, keyed by discovery method id. Two
regimes: ``"2026-05"`` (projects created from May 2026; the default) and
``"legacy"`` (the older table). A batch is billed per inner call.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

WINDOW_SECONDS = 60.0

_P = "gmail.users."
LEGACY: dict[str, int] = {
    _P + "getProfile": 1, _P + "watch": 100, _P + "stop": 50,
    _P + "labels.list": 1, _P + "labels.get": 1, _P + "labels.create": 5,
    _P + "labels.update": 5, _P + "labels.patch": 5, _P + "labels.delete": 5,
    _P + "messages.list": 5, _P + "messages.get": 5, _P + "messages.attachments.get": 5,
    _P + "messages.modify": 5, _P + "messages.batchModify": 50, _P + "messages.batchDelete": 50,
    _P + "messages.send": 100, _P + "messages.insert": 25, _P + "messages.import": 25,
    _P + "messages.trash": 5, _P + "messages.untrash": 5, _P + "messages.delete": 10,
    _P + "threads.list": 10, _P + "threads.get": 10, _P + "threads.modify": 10,
    _P + "threads.trash": 10, _P + "threads.untrash": 10, _P + "threads.delete": 20,
    _P + "history.list": 2,
}
CURRENT: dict[str, int] = {
    **LEGACY,
    _P + "messages.get": 20, _P + "messages.attachments.get": 20, _P + "messages.trash": 20,
    _P + "threads.get": 40, _P + "threads.trash": 20,
}
COSTS: dict[str, dict[str, int]] = {"2026-05": CURRENT, "legacy": LEGACY}
# Gmail's per-user limit in each regime, for reference (the emulator enforces
# only what it is given as ``rate_limit``).
PER_USER_UNITS_PER_MINUTE = {"2026-05": 6000, "legacy": 15000}
DEFAULT_COST = 5


def cost(regime: str, method_id: str) -> int:
    """Units one call of ``method_id`` costs in ``regime``."""
    return COSTS[regime].get(method_id, DEFAULT_COST)


def check_regime(regime: str) -> str:
    if regime not in COSTS:
        raise ValueError(f"unknown quota regime {regime!r}; choose one of {sorted(COSTS)}")
    return regime


class RateLimiter:
    """Units per user over a rolling minute; ``limit=None`` never refuses."""

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._spent: dict[str, collections.deque[tuple[float, int]]] = {}
        self._totals: dict[str, int] = {}

    def try_spend(self, user: str, units: int) -> float | None:
        """Spend ``units`` for ``user``; None if allowed, else seconds until retry."""
        if self.limit is None:
            return None
        now = self._clock()
        with self._lock:
            spent = self._spent.setdefault(user, collections.deque())
            total = self._totals.get(user, 0)
            while spent and spent[0][0] <= now - WINDOW_SECONDS:
                total -= spent.popleft()[1]
            if total + units > self.limit:
                self._totals[user] = total
                return max(spent[0][0] + WINDOW_SECONDS - now, 0.0) if spent else WINDOW_SECONDS
            spent.append((now, units))
            self._totals[user] = total + units
            return None

    def reset(self) -> None:
        with self._lock:
            self._spent.clear()
            self._totals.clear()


def retry_at(seconds: float) -> str:
    """Gmail's ``Retry after <RFC 3339>`` timestamp, ``seconds`` from now."""
    at = datetime.fromtimestamp(time.time() + seconds, tz=timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class ConcurrencyGate:
    """Caps in-flight calls per user; a batch holds one slot per inner call."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()

    def acquire(self, user: str) -> bool:
        if self.limit is None:
            return True
        with self._lock:
            if self._in_flight[user] >= self.limit:
                return False
            self._in_flight[user] += 1
            return True

    def release(self, user: str) -> None:
        if self.limit is None:
            return
        with self._lock:
            self._in_flight[user] -= 1
            if self._in_flight[user] <= 0:
                del self._in_flight[user]
