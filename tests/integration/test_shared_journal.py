"""Several mailboxes on one machine share one SQLite journal, each in its own process."""

from __future__ import annotations

import subprocess
import sys

from agentmail.journal.store import Journal
from agentmail.journal.verify import verify
from agentmail.services.sending import send_request

from .conftest import ALICE, BOB


def test_two_runs_in_two_processes_share_one_journal(tmp_path, emulator, agents):
    db = tmp_path / "journal.db"
    with Journal.open(str(db)) as journal:
        for i in range(10):  # requests both ways, so both processes write all the time
            send_request(journal, agents.mailbox(ALICE), to=[BOB], subject=f"a{i}",
                         payload={"i": i})
            send_request(journal, agents.mailbox(BOB), to=[ALICE], subject=f"b{i}",
                         payload={"i": i})
    procs = [subprocess.Popen(
        [sys.executable, "-m", "agentmail", "--db", str(db), "-q", "run", "--email", address,
         "--emulator", emulator.url, "--interval", "0.05", "--iterations", "15"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for address in (ALICE, BOB)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with Journal.open(str(db)) as journal:
        for address in (ALICE, BOB):
            counts = journal.state_counts(address)
            # 10 requests and 10 replies received by each, all acked
            assert counts == {"acked": 20}, (address, counts)
        assert verify(journal).ok
