"""The kill test: SIGKILL a real `agentmail run` at random moments while it works through a
few hundred requests on an emulator that fails a few percent of API calls, restart it each
time, then check after a final clean run that nothing was lost and no reply was repeated.

Requests keep arriving between the kills (a first backlog, then a wave before each
restart), so every run has work in every phase: full and incremental syncs, claims,
handlers, sends, acks, and the recovery of what the previous kill interrupted.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from .conftest import kill

BACKLOG = 100  # requests waiting before the first run
WAVE = 10  # more requests before each restart
KILLS = 22  # so BACKLOG + KILLS * WAVE = 320 requests in all
SEED = 20261124
# A few percent of API calls fail: errors, and connections dropped before or after the
# call was applied (a send whose answer is lost did go out).
FAULTS = {"error_rate": 0.03, "error_codes": [500, 503, 429], "drop_rate": 0.01,
          "drop_phase": "either"}


def _read(process, working: threading.Event, lines: list[str]) -> None:
    """Collect the agent's output; `working` is set once it has handled a message."""
    for line in process.stdout:
        lines.append(line)
        if " processed " in line or " sent " in line:
            working.set()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 4], ids=["one-worker", "four-workers"])
def test_random_kills_lose_nothing_and_repeat_no_reply(lab, workers):
    rng = random.Random(SEED + workers)
    parallel = ("--concurrency", str(workers))
    lab.send_requests(BACKLOG)
    lab.emulator.set_faults(**FAULTS, seed=SEED)
    began = time.monotonic()
    recoveries: list[str] = []
    for _ in range(KILLS):
        process = lab.spawn(*parallel)
        working, lines = threading.Event(), []
        reader = threading.Thread(target=_read, args=(process, working, lines), daemon=True)
        reader.start()
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.3, 1.0))  # may land in start-up and recovery itself
        else:  # somewhere in the claim/handle/send/ack stream, however slow the machine
            assert working.wait(60), "".join(lines)
            time.sleep(rng.uniform(0.0, 0.5))
        assert process.poll() is None, "".join(lines)  # still running: a real kill
        kill(process)
        reader.join(timeout=10)
        process.stdout.close()
        recoveries += [line for line in lines if line.startswith("recovery:")]
        lab.emulator.set_faults(error_rate=0.0, drop_rate=0.0)  # the requester's own sends
        lab.send_requests(WAVE)
        lab.emulator.set_faults(**FAULTS)

    lab.emulator.clear_faults()
    final = lab.run("-n", "3", *parallel, timeout=120)
    assert final.returncode == 0, final.stdout + final.stderr
    recoveries += [line for line in final.stdout.splitlines() if line.startswith("recovery:")]
    lab.check_all_done()
    elapsed = time.monotonic() - began
    repaired = [r for r in recoveries if "nothing to repair" not in r]
    print(f"\n{workers} worker(s): {len(lab.requests)} requests, {KILLS} kills, "
          f"{len(repaired)} restarts repaired something, {elapsed:.1f} s")
    assert len(repaired) >= 3  # the kills did land mid-work
