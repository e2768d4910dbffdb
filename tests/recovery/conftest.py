"""Crash a real `agentmail run` process and check what the next run makes of it.

The emulator runs in the test process (only the agent subprocess is killed); the agent
subprocess is the real command, talking to it over HTTP with googleapiclient.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentmail import message as msg
from agentmail.emulator import Emulator
from agentmail.emulator.client import build_service
from agentmail.journal import events as ev
from agentmail.journal.store import Journal
from agentmail.journal.verify import verify

from .handler import LOG_VARIABLE

REPO = Path(__file__).resolve().parents[2]
REQUESTER = "alice@example.com"
AGENT = "bob@example.com"
INTERVAL = "0.05"  # seconds between polls of the agent under test


@dataclass
class Lab:
    """One emulator, one journal, one agent mailbox and the requests sent to it."""

    emulator: Emulator
    tmp: Path
    requests: list[str] = field(default_factory=list)  # RFC Message-IDs, in order
    db_url: str | None = None  # another journal than the SQLite file (PostgreSQL)

    @property
    def db(self) -> Path:
        return self.tmp / "journal.db"

    @property
    def journal_url(self) -> str:
        return self.db_url or str(self.db)

    @property
    def side_effects(self) -> Path:
        return self.tmp / "side-effects.log"

    @property
    def config(self) -> Path:
        """The agent's settings: the defaults, but no client-side quota pacing (the emulator
        here enforces none, and pacing 300 sends to Gmail's per-user rate takes minutes)."""
        path = self.tmp / "agent_config.json"
        if not path.exists():
            path.write_text(json.dumps({"quota_units_per_minute": 10_000_000}))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMAIL_")}
        return {**env, LOG_VARIABLE: str(self.side_effects), **extra}

    def command(self, *args: str, handler: str = "Recorder") -> list[str]:
        return [sys.executable, "-m", "agentmail", "--config", str(self.config),
                "--db", self.journal_url, "run", "--email", AGENT, "--emulator", self.emulator.url,
                "--handler", f"tests.recovery.handler:{handler}", "--interval", INTERVAL, *args]

    def run(self, *args: str, handler: str = "Recorder", timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
        """`agentmail run …` to its end (a clean stop, or the crash hook's SIGKILL)."""
        return subprocess.run(self.command(*args, handler=handler), cwd=REPO, env=self.env(**env),
                              capture_output=True, text=True, timeout=timeout)

    def spawn(self, *args: str, handler: str = "Recorder", **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args, handler=handler), cwd=REPO,
                                env=self.env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def send_requests(self, count: int, payload: dict | None = None) -> None:
        """Mail `count` requests from the requester (the emulator authenticates them)."""
        with closing(build_service(self.emulator.url, REQUESTER)) as svc:
            for i in range(len(self.requests), len(self.requests) + count):
                out = msg.compose_request(from_addr=REQUESTER, to=AGENT, subject=f"job {i}",
                                          payload={"job": i, **(payload or {})})
                svc.users().messages().send(userId="me", body={
                    "raw": base64.urlsafe_b64encode(out.raw).decode()}).execute()
                self.requests.append(out.message_id)

    def journal(self) -> Journal:
        return Journal.open(self.journal_url)

    def replies(self) -> Counter[tuple[str, str]]:
        """(In-Reply-To, Message-ID) of every message in the requester's inbox, counted."""
        found: Counter[tuple[str, str]] = Counter()
        with closing(build_service(self.emulator.url, REQUESTER)) as svc:
            users = svc.users()
            token = None
            while True:
                page = users.messages().list(userId="me", labelIds=["INBOX"], maxResults=500,
                                             pageToken=token).execute()
                for ref in page.get("messages", []):
                    m = users.messages().get(userId="me", id=ref["id"], format="metadata",
                                             metadataHeaders=["In-Reply-To", "Message-ID"]
                                             ).execute()
                    h = {x["name"].lower(): x["value"] for x in m["payload"]["headers"]}
                    found[(h.get("in-reply-to", ""), h.get("message-id", ""))] += 1
                token = page.get("nextPageToken")
                if not token:
                    return found

    def processing_labelled(self) -> list[str]:
        with closing(build_service(self.emulator.url, AGENT)) as svc:
            page = svc.users().messages().list(userId="me", q="label:agent-processing",
                                               maxResults=500).execute()
        return [m["id"] for m in page.get("messages", [])]

    def label(self, provider_id: str, name: str) -> None:
        with closing(build_service(self.emulator.url, AGENT)) as svc:
            labels = svc.users().labels().list(userId="me").execute()["labels"]
            label_id = next(lab["id"] for lab in labels if lab["name"] == name)
            svc.users().messages().modify(userId="me", id=provider_id,
                                          body={"addLabelIds": [label_id]}).execute()

    def check_all_done(self, *, replies_per_request: int = 1) -> None:
        """Every request acked exactly once, every reply in the requester's inbox exactly
        once, no processing label, the journal verifies, every request handled at least once."""
        with self.journal() as journal:
            inbound = [m for m in journal_messages(journal) if m.direction == "in"]
            assert sorted(m.rfc_message_id for m in inbound) == sorted(self.requests)
            states = Counter(m.state for m in inbound)
            assert states == {"acked": len(self.requests)}, states
            for m in inbound:
                kinds = [e.kind for e in journal.events_of_message(m.key)]
                assert kinds.count(ev.ACKED) == 1, (m.key, kinds)
            report = verify(journal)
            assert report.ok, [d for d in report.tables if not d.clean]
            keys = {m.key for m in inbound}
        replies = self.replies()
        assert all(n == 1 for n in replies.values()), [r for r, n in replies.items() if n > 1]
        per_request = Counter(in_reply_to for in_reply_to, _ in replies)
        assert per_request == {r: replies_per_request for r in self.requests}
        assert self.processing_labelled() == []
        handled = set(self.side_effects.read_text().split())
        assert keys <= handled, keys - handled


def journal_messages(journal: Journal) -> list:
    from sqlalchemy import select

    from agentmail.journal import tables as t

    with journal.engine.connect() as conn:
        return list(conn.execute(select(t.messages)).all())


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Emulator() as emu:
        yield Lab(emu, tmp_path)
