"""The agent benchmark in miniature: every figure is reported and agrees with what was counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmail.emulator import quota
from benchmarks import agent as bench

FIELDS = ("messages", "seconds", "messages_per_s", "quota_units_per_message",
          "api_calls_per_message", "http_requests_per_message", "journal_events_per_message",
          "journal_bytes_per_message", "peak_rss_mb")


def test_the_noop_backlog_at_20_messages_reports_every_figure(tmp_path: Path, capsys):
    scale = 20 / bench.BY_NAME["noop"].size
    assert bench.main(["--scenario", "noop", "--scale", str(scale), "--json-only",
                       "--workdir", str(tmp_path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["benchmark"] == "agent" and list(document["scenarios"]) == ["noop"]
    r = document["scenarios"]["noop"]

    for name in FIELDS:
        assert isinstance(r[name], (int, float)) and r[name] > 0, name
    assert "latency_p50_s" in r and "latency_p99_s" in r  # measured by the trickle only
    assert r["messages"] == r["acked"] == 20 and not r["timed_out"]
    assert r["failed"] == r["dead_lettered"] == r["rejected"] == 0  # the seeding authenticates
    assert r["messages_per_s"] == pytest.approx(r["messages"] / r["seconds"], rel=0.01)

    # Quota and calls are the emulator's counters for the agent's account, divided by messages.
    assert r["quota_units"] == sum(quota.cost("2026-05", "gmail.users." + method) * n
                                   for method, n in r["calls"].items())
    assert r["quota_units_per_message"] == pytest.approx(r["quota_units"] / 20, abs=0.005)
    assert r["api_calls"] == sum(r["calls"].values())
    assert r["api_calls_per_message"] == pytest.approx(r["api_calls"] / 20, abs=0.0005)
    assert r["http_requests_per_message"] == pytest.approx(r["http_requests"] / 20, abs=0.0005)
    assert r["calls"]["messages.get"] >= 20
    assert 0 < r["http_requests"] <= r["api_calls"]  # batches carry several calls

    # The journal: every message fetched, claimed, processed and acked; its size on disk.
    kinds = r["journal_event_kinds"]
    assert all(kinds[k] == 20 for k in ("fetched", "claimed", "processed", "acked"))
    assert r["journal_events"] == sum(kinds.values())
    assert r["journal_events_per_message"] == pytest.approx(r["journal_events"] / 20, abs=0.005)
    db = tmp_path / "noop" / "journal.db"
    assert r["journal_bytes"] >= db.stat().st_size > 0
    assert r["journal_bytes_per_message"] == pytest.approx(r["journal_bytes"] / 20, abs=0.5)

    # The agent ran in its own process: a Python with the agent loaded, not this one's RSS.
    assert 20 < r["peak_rss_mb"] < 1000

    rows = [t for t in document["targets"] if t["scenario"] == "noop"]
    assert {t["target"].split()[0] for t in rows} == {"<=", ">="}
    assert all(t["ok"] in (True, False) for t in rows)
    assert document["passed"] + document["missed"] == len(document["targets"])


def test_percentiles_and_the_quota_bound():
    assert bench.percentile([], 50) is None
    assert bench.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert bench.percentile([float(i) for i in range(1, 101)], 99) == 99.0
    # 3,000 units in 60 s under a 6,000/min limit: half the quota-bound rate.
    q = bench.quota_fraction(units=3000, messages=150, seconds=60.0, limit=6000)
    assert q["quota_fraction"] == 0.5
    assert q["quota_bound_messages_per_min"] == 300.0 and q["messages_per_min"] == 150.0
    assert q["window_bound_seconds"] == 0  # fits in one minute's units: no wait is forced
    assert bench.quota_fraction(units=13000, messages=650, seconds=150.0,
                                limit=6000)["window_bound_seconds"] == 120
