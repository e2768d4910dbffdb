"""Fault injection: errors, latency, dropped connections, rewritten Message-IDs.

Settings (the body of ``PUT /emulator/v1/faults`` and the keywords of
``Emulator.set_faults``)::

    error_rate          0..1, chance that a call answers an injected error
    error_codes         statuses to pick from (default [500, 503, 429])
    latency_ms          added before each call
    drop_rate           0..1, chance that the connection is closed with no answer
    drop_phase          "before" (call not applied) | "after" (applied, answer lost) | "either"
    rewrite_message_id  on send, replace the client's Message-ID with a Gmail-style one
    methods             discovery ids the faults apply to (None: every API method)
    script              [{"method": id|None, "action": "error"|"drop_before"|"drop_after",
                          "code": 503, "count": 1}], consumed in order before random faults

Admin endpoints are never subject to faults. The batch envelope has the pseudo
method id ``"batch"`` (errors, latency and drops of the whole batch); its parts
get error faults under their own ids but are never dropped one by one.
``seed`` makes random draws reproducible. Counts of injected faults, by kind
(``error``, ``drop_before``, ``drop_after``, ``latency``, ``rewrite_message_id``),
are in the stats as ``faults_injected``.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

ACTIONS = ("error", "drop_before", "drop_after")
PHASES = ("before", "after", "either")
DEFAULT_ERROR_CODES = (500, 503, 429)


@dataclasses.dataclass
class Decision:
    """What to do to one call: ``action`` None means run it normally."""

    action: str | None = None  # "error" | "drop_before" | "drop_after"
    code: int = 0


NONE = Decision()


class Faults:
    """Thread-safe fault settings plus the random source and the script."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.injected: dict[str, int] = {}
        self._set_defaults()

    def _set_defaults(self) -> None:
        self.error_rate = 0.0
        self.error_codes: list[int] = list(DEFAULT_ERROR_CODES)
        self.latency_ms = 0
        self.drop_rate = 0.0
        self.drop_phase = "either"
        self.rewrite_message_id = False
        self.methods: list[str] | None = None
        self.script: list[dict[str, Any]] = []

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {
                "error_rate": self.error_rate, "error_codes": list(self.error_codes),
                "latency_ms": self.latency_ms, "drop_rate": self.drop_rate,
                "drop_phase": self.drop_phase, "rewrite_message_id": self.rewrite_message_id,
                "methods": None if self.methods is None else list(self.methods),
                "script": [dict(step) for step in self.script],
            }

    def update(self, **kw: Any) -> dict[str, Any]:
        """Change some settings (validated all together first); returns the new settings."""
        clean = _validate(kw)
        with self._lock:
            if "seed" in clean:
                self._rng.seed(clean.pop("seed"))
            for name, value in clean.items():
                setattr(self, name, value)
        return self.settings()

    def clear(self) -> None:
        with self._lock:
            self._set_defaults()
            self.injected = {}

    def reset_counts(self) -> None:
        with self._lock:
            self.injected = {}

    def injected_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.injected)

    def count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1

    def applies(self, method_id: str) -> bool:
        return self.methods is None or method_id in self.methods

    def latency(self, method_id: str) -> float:
        """Seconds to sleep before ``method_id``."""
        if self.latency_ms and self.applies(method_id):
            self.count("latency")
            return self.latency_ms / 1000.0
        return 0.0

    def decide(self, method_id: str, *, can_drop: bool = True) -> Decision:
        """The fault for one call: the script first, then the random rates."""
        with self._lock:
            decision = self._from_script(method_id, can_drop)
            if decision is None and self.applies(method_id):
                decision = self._random(can_drop)
        if decision is None or decision.action is None:
            return NONE
        self.count(decision.action)
        return decision

    def _from_script(self, method_id: str, can_drop: bool) -> Decision | None:
        for step in self.script:
            if step.get("method") not in (None, method_id):
                continue
            if step["action"] != "error" and not can_drop:
                continue
            step["count"] -= 1
            if step["count"] <= 0:
                self.script.remove(step)
            return Decision(step["action"], int(step.get("code", 503)))
        return None

    def _random(self, can_drop: bool) -> Decision | None:
        if can_drop and self.drop_rate and self._rng.random() < self.drop_rate:
            phase = self.drop_phase
            if phase == "either":
                phase = self._rng.choice(("before", "after"))
            return Decision("drop_" + phase)
        if self.error_rate and self._rng.random() < self.error_rate:
            return Decision("error", self._rng.choice(self.error_codes))
        return None

    def should_rewrite_message_id(self) -> bool:
        if self.rewrite_message_id:
            self.count("rewrite_message_id")
            return True
        return False


def _validate(kw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in kw.items():
        if name in ("error_rate", "drop_rate"):
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        elif name == "error_codes":
            value = [int(c) for c in value]
            if not value or any(not 400 <= c <= 599 for c in value):
                raise ValueError("error_codes must be a non-empty list of 4xx/5xx statuses")
        elif name == "latency_ms":
            value = int(value)
            if value < 0:
                raise ValueError("latency_ms must be >= 0")
        elif name == "drop_phase":
            if value not in PHASES:
                raise ValueError(f"drop_phase must be one of {PHASES}")
        elif name == "rewrite_message_id":
            value = bool(value)
        elif name == "methods":
            value = None if value is None else [str(m) for m in value]
        elif name == "script":
            value = [_step(s) for s in value or []]
        elif name == "seed":
            value = None if value is None else int(value)
        else:
            raise ValueError(f"unknown fault setting {name!r}")
        out[name] = value
    return out


def _step(step: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(step, dict) or step.get("action") not in ACTIONS:
        raise ValueError(f"script steps need an action in {ACTIONS}: {step!r}")
    count = int(step.get("count", 1))
    if count < 1:
        raise ValueError("script step count must be >= 1")
    return {"method": step.get("method"), "action": step["action"],
            "code": int(step.get("code", 503)), "count": count}
