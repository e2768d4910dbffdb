"""The benchmark's bulk-built journal is what the projections would have built."""

from __future__ import annotations

from agentmail.journal import conversations as conv
from agentmail.journal.verify import verify
from benchmarks import conversations as bench


def test_bulk_built_journal_equals_a_rebuild_from_its_events(journal):
    written = bench.build(journal, events=150, conversations=12)
    assert written == journal.event_count() == 12 * (1 + 5 * 2 + 4)
    report = verify(journal)
    assert report.ok, [(d.table, d.only_live[:3], d.only_rebuilt[:3], d.changed[:3])
                       for d in report.tables if not d.clean]
    [summary] = conv.list_conversations(journal, limit=1)
    assert summary.message_count == 3 and not summary.pending


def test_the_benchmark_runs_at_a_small_size(capsys):
    assert bench.main(["--events", "400", "--conversations", "40", "--samples", "8"]) == 0
    out = capsys.readouterr().out
    assert "history" in out and '"benchmark": "conversations"' in out
