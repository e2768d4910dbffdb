"""Running handlers: in worker threads the loop can walk away from.

A handler is user code: it may be slow, hang, or ignore Ctrl-C. So every handler runs in
a daemon thread and the loop waits for outcomes in short slices, which lets it

- give up on an attempt that ran longer than `handler_timeout` (its outcome is a
  `HandlerTimeout`; the thread is left behind and whatever it queues later is ignored),
- abandon everything at once when asked (a second Ctrl-C): the outcomes of handlers still
  running, and of messages not started, say so, and the caller journals them,
- tell the heartbeat whether a handler is inside its time limit (that counts as progress).

With concurrency N, conversations run in parallel, each conversation's messages one after
another in arrival order. Pure threading: no journal, no mailbox.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agentmail import errors

POLL_SECONDS = 0.1  # how often the loop looks at timeouts and the abandon flag

T = TypeVar("T")  # what identifies one work item for the caller (a claim)


class HandlerTimeout(errors.AgentmailError):
    """The handler ran longer than handler_timeout; the attempt failed."""


class NotStarted(errors.AgentmailError):
    """The handler of this message never started (its conversation's earlier message hung,
    or the run was abandoned); nothing of it ran."""


class Abandoned(errors.AgentmailError):
    """The run was abandoned while this handler ran; its outcome is discarded."""


@dataclass
class _Item(Generic[T]):
    ident: T
    work: Callable[[], Any]
    group: str
    started: float | None = None
    done: bool = False


class HandlerRunner(Generic[T]):
    """Runs batches of handler calls and yields `(ident, outcome)` as they finish.

    `outcome` is what the call returned, or the exception it raised (or one of
    `HandlerTimeout`, `NotStarted`, `Abandoned`).
    """

    def __init__(self, *, concurrency: int, timeout: float,
                 abandon: threading.Event | None = None) -> None:
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.abandon = abandon or threading.Event()
        self._lock = threading.Lock()
        self._running: list[_Item[T]] = []

    def within_limits(self) -> bool:
        """A handler is running and has not exceeded its time limit (progress for heartbeats)."""
        now = time.monotonic()
        with self._lock:
            return any(i.started is not None and not i.done and
                       (not self.timeout or now - i.started < self.timeout)
                       for i in self._running)

    def busy(self) -> bool:
        with self._lock:
            return any(i.started is not None and not i.done for i in self._running)

    def run(self, batch: Sequence[tuple[T, str, Callable[[], Any]]]) -> Iterator[tuple[T, Any]]:
        """Run `(ident, group, call)` items: groups in parallel, each group in order."""
        groups: dict[str, list[_Item[T]]] = {}
        for ident, group, work in batch:
            groups.setdefault(group, []).append(_Item(ident, work, group))
        finished: queue.Queue[tuple[_Item[T], Any]] = queue.Queue()
        given_up: set[int] = set()  # ids of items whose outcome was already yielded
        pending = list(groups.values())
        workers: list[tuple[threading.Thread, list[_Item[T]]]] = []

        def worker(items: list[_Item[T]]) -> None:
            for item in items:
                if self.abandon.is_set() or id(item) in given_up:
                    return
                with self._lock:
                    item.started = time.monotonic()
                try:
                    outcome: Any = item.work()
                except BaseException as exc:  # a handler's failure is data
                    outcome = exc
                with self._lock:
                    item.done = True
                finished.put((item, outcome))
                if id(item) in given_up:  # it timed out: the rest of its group was released
                    return

        def active() -> int:
            """Workers still working: not finished, and not stuck in a timed-out handler."""
            return sum(thread.is_alive() and not any(
                id(i) in given_up and i.started is not None and not i.done for i in items)
                for thread, items in workers)

        def start_next() -> None:
            while pending and active() < self.concurrency:
                items = pending.pop(0)
                with self._lock:
                    self._running.extend(items)
                thread = threading.Thread(target=worker, args=(items,), daemon=True,
                                          name=f"handler:{items[0].group[:12]}")
                workers.append((thread, items))
                thread.start()

        remaining = sum(len(g) for g in groups.values())
        try:
            start_next()
            while remaining:
                try:
                    item, outcome = finished.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    for ident, outcome in self._expired(groups, given_up):
                        remaining -= 1
                        yield ident, outcome
                    if self.abandon.is_set():
                        for items in groups.values():
                            for i in items:
                                if id(i) not in given_up and not i.done:
                                    given_up.add(id(i))
                                    remaining -= 1
                                    yield i.ident, (Abandoned() if i.started is not None
                                                    else NotStarted())
                        return
                    start_next()
                    continue
                if id(item) in given_up:
                    continue  # a late result of a handler that timed out: ignored
                given_up.add(id(item))
                remaining -= 1
                yield item.ident, outcome
                start_next()
        finally:
            with self._lock:
                self._running = [i for i in self._running if not i.done and
                                 id(i) not in given_up]

    def _expired(self, groups: dict[str, list[_Item[T]]],
                 given_up: set[int]) -> Iterator[tuple[T, Any]]:
        """Handlers past their time limit, and the messages queued behind them."""
        if not self.timeout:
            return
        now = time.monotonic()
        for items in groups.values():
            for n, item in enumerate(items):
                if (item.started is None or item.done or id(item) in given_up
                        or now - item.started < self.timeout):
                    continue
                given_up.add(id(item))
                yield item.ident, HandlerTimeout(
                    f"the handler ran longer than handler_timeout ({self.timeout:g} s)")
                for later in items[n + 1:]:
                    if id(later) not in given_up and later.started is None:
                        given_up.add(id(later))
                        yield later.ident, NotStarted()
