"""`agentmail mcp` as a subprocess over stdio, talked to with the SDK's stdio client."""

from __future__ import annotations

import os
import signal
import time

import anyio

from agentmail.journal import events as ev
from agentmail.services.sending import send_request
from benchmarks import mcp as bench

from .conftest import ALICE, BOB, call, drive, server
from .test_exchange import _mail


def _over_stdio(settings, tmp_path, scenario, *, verbose=False, options=()):
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    command = bench.server_command(settings.db, settings.emulator, ALICE, verbose=verbose,
                                   options=options)
    params = StdioServerParameters(command=command[0], args=command[1:],
                                   env=bench.server_environment())

    async def main():
        with open(tmp_path / "server.log", "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                return await scenario(client)

    return anyio.run(main)


def test_the_server_answers_over_stdio_and_logs_only_to_stderr(agents, settings, journal,
                                                               emulator, tmp_path):
    bob = agents.run(BOB)
    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="over stdio",
                         payload={"q": 1})

    async def scenario(client):
        tools = {t.name for t in (await client.list_tools()).tools}
        [claim] = (await call(client, "inbox"))["claims"]
        replied = await call(client, "reply", claim_id=claim["claim_id"], payload={"a": 1})
        sent = await call(client, "send", to=BOB, subject="and back", payload={"n": 2})
        bob.cycle()
        waited = await call(client, "wait_for_reply", conversation=sent["conversation_id"],
                            timeout_s=20)
        took = []
        for _ in range(20):
            start = time.perf_counter()
            await call(client, "status")
            took.append(time.perf_counter() - start)
        return tools, claim, replied, waited, took

    tools, claim, replied, waited, took = _over_stdio(settings, tmp_path, scenario, verbose=True)
    assert len(tools) == 9
    assert claim["message_id"] == asked.message_id and replied["sent"]
    assert [m["sender"] for m in waited["messages"]] == [BOB]
    bob.cycle()
    received = [h for h, _ in _mail(emulator, BOB, "in:inbox")]
    assert sorted(h.get("in-reply-to", h["subject"]) for h in received) == sorted(
        [asked.message_id, "and back"])
    # The protocol owned stdout (every call above parsed); the logs went to stderr.
    assert "agentmail mcp: alice@example.com over stdio" in (tmp_path / "server.log").read_text()
    assert bench.figures(took)["p50_ms"] < 1000
    # A clean exit gives its run back: the journal shows it stopped.
    assert journal.last_run(ALICE).status == "stopped"


def test_a_killed_server_leaves_its_claim_to_the_next_one_which_answers_once(
        agents, settings, journal, emulator, tmp_path, make_inbox):
    asked = send_request(journal, agents.mailbox(BOB), to=[ALICE], subject="q", payload={})

    async def claim_then_die(client):
        [claim] = (await call(client, "inbox"))["claims"]
        os.kill(journal.live_run(ALICE).pid, signal.SIGKILL)  # no clean-up at all
        return claim

    held = _over_stdio(settings, tmp_path, claim_then_die)
    key = journal.received_matching(asked.message_id, account=ALICE)[0].key
    assert journal.message(key).state == "claimed"

    async def answer(client):
        [claim] = (await call(client, "inbox"))["claims"]
        return claim, await call(client, "reply", claim_id=claim["claim_id"], payload={"a": 1})

    claim, replied = drive(server(make_inbox(ALICE)), answer)
    assert held["attempt"] == 1 and held["claim_id"] != claim["claim_id"]
    assert claim["attempt"] == 2 and replied["sent"]
    kinds = [e.kind for e in journal.events_of_message(key)]
    assert kinds == ["fetched", "claimed", "reconciled", "failed", "released", "claimed",
                     "processed", "sent", "acked"]
    failed = next(e for e in journal.events_of_message(key) if e.kind == ev.FAILED)
    assert failed.data["reason"] == "crashed"
    agents.run(BOB).cycle()
    assert len(_mail(emulator, BOB, "in:inbox")) == 1


def test_the_server_sends_what_a_person_approves_while_it_runs(settings, journal, emulator,
                                                               tmp_path):
    from tests.cli.helpers import run_cli

    async def scenario(client):
        held = await call(client, "send", to=BOB, subject="needs a yes", payload={"n": 1})
        assert held["status"] == "awaiting_approval"
        assert _mail(emulator, BOB, "in:inbox") == []
        done = run_cli("--db", settings.db, "approve", held["approval_id"])
        assert done.exit_code == 0, done.output
        deadline = time.monotonic() + 20
        while not _mail(emulator, BOB, "in:inbox") and time.monotonic() < deadline:
            await anyio.sleep(0.1)  # the server's watcher carries it out
        return held

    held = _over_stdio(settings, tmp_path, scenario, options=("--require-approval",))
    [(headers, _)] = _mail(emulator, BOB, "in:inbox")
    assert headers["message-id"] == held["message_id"]
