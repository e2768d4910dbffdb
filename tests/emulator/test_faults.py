"""Fault injection: error mix, latency, drops before/after, Message-ID rewrite, scripts, admin."""

from __future__ import annotations

import collections
import time
import urllib.error

import pytest
from googleapiclient.errors import HttpError

from agentmail.emulator.testing import admin, raw_message

SEND = "gmail.users.messages.send"


def test_error_mix_with_gmail_bodies(new_account, emulator):
    alice = new_account("alice")
    emulator.set_faults(error_rate=1.0, error_codes=[500, 503, 429, 403], seed=7,
                        methods=["gmail.users.getProfile"])
    seen = collections.Counter()
    reasons = {}
    for _ in range(40):
        with pytest.raises(HttpError) as info:
            alice.profile()
        seen[info.value.status_code] += 1
        reasons[info.value.status_code] = info.value.error_details[0]["reason"]
    assert set(seen) == {500, 503, 429, 403}
    assert reasons == {500: "backendError", 503: "backendError", 429: "rateLimitExceeded",
                       403: "userRateLimitExceeded"}
    alice.users.labels().list(userId="me").execute()  # other methods untouched
    assert emulator.stats()["faults_injected"]["error"] >= 40


def test_seed_makes_random_faults_reproducible(new_account, emulator):
    alice = new_account("alice")

    def outcomes():
        emulator.set_faults(error_rate=0.5, seed=42, methods=["gmail.users.getProfile"])
        out = []
        for _ in range(12):
            try:
                alice.profile()
                out.append(200)
            except HttpError as exc:
                out.append(exc.status_code)
        return out

    first = outcomes()
    assert first == outcomes()
    assert 200 in first and len(set(first)) > 1


def test_latency(new_account, emulator):
    alice = new_account("alice")
    alice.profile()
    emulator.set_faults(latency_ms=150)
    started = time.monotonic()
    alice.profile()
    assert time.monotonic() - started >= 0.15
    emulator.set_faults(latency_ms=0)


def test_drop_before_send_is_not_applied(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    emulator.set_faults(script=[{"method": SEND, "action": "drop_before"}])
    with pytest.raises(OSError):
        alice.send(bob.address, "lost")
    assert bob.list() == [] and alice.list("in:sent") == []
    alice.send(bob.address, "second try")  # the script step is used up
    assert len(bob.list()) == 1


def test_drop_after_send_is_applied_but_answer_lost(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    emulator.set_faults(script=[{"method": SEND, "action": "drop_after"}])
    with pytest.raises(OSError):
        alice.send(bob.address, "applied", message_id="<exactly-once@example.com>")
    assert len(bob.list("rfc822msgid:exactly-once@example.com")) == 1
    assert len(alice.list("in:sent rfc822msgid:exactly-once@example.com")) == 1
    injected = emulator.stats()["faults_injected"]
    assert injected["drop_after"] >= 1


def test_random_drop_rate_with_phase(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    emulator.set_faults(drop_rate=1.0, drop_phase="after", methods=[SEND])
    for i in range(3):
        with pytest.raises(OSError):
            alice.send(bob.address, f"drop {i}")
    emulator.set_faults(drop_rate=0.0)
    assert len(bob.list()) == 3
    alice.profile()  # the client reconnects fine


def test_rewrite_message_id_on_send(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    emulator.set_faults(rewrite_message_id=True)
    sent = alice.send(bob.address, "rewritten", message_id="<mine@example.com>")
    [sent_id] = [v for n, v in alice.headers(sent["id"]) if n == "Message-ID"]
    assert sent_id != "<mine@example.com>" and sent_id.endswith("@mail.gmail.com>")
    [got] = bob.list()
    assert [v for n, v in bob.headers(got["id"]) if n == "Message-ID"] == [sent_id]
    assert bob.list("rfc822msgid:mine@example.com") == []
    assert emulator.stats()["faults_injected"]["rewrite_message_id"] >= 1


def test_script_is_consumed_in_order(new_account, emulator):
    alice = new_account("alice")
    emulator.set_faults(script=[
        {"method": "gmail.users.getProfile", "action": "error", "code": 503, "count": 2},
        {"method": "gmail.users.getProfile", "action": "error", "code": 500},
    ])
    codes = []
    for _ in range(4):
        try:
            alice.profile()
            codes.append(200)
        except HttpError as exc:
            codes.append(exc.status_code)
    assert codes == [503, 503, 500, 200]
    assert emulator.faults()["script"] == []


def test_script_errors_apply_to_batch_parts(new_account, emulator):
    alice = new_account("alice")
    emulator.set_faults(script=[{"method": "gmail.users.labels.list", "action": "error",
                                 "code": 429}])
    results = {}
    batch = alice.new_batch(lambda rid, resp, exc: results.__setitem__(rid, exc))
    for _ in range(3):
        batch.add(alice.users.labels().list(userId="me"))
    batch.execute()
    assert [results[k] and results[k].status_code for k in ("1", "2", "3")] == [429, None, None]


def test_faults_admin_endpoints(emulator, new_account):
    assert admin(emulator.url, "faults")["error_rate"] == 0.0
    new = admin(emulator.url, "faults", {"error_rate": 1.0, "methods": ["gmail.users.getProfile"]})
    assert new["error_rate"] == 1.0 and emulator.faults()["methods"] == ["gmail.users.getProfile"]
    alice = new_account("alice")
    with pytest.raises(HttpError):
        alice.profile()
    emulator.set_faults(methods=None)  # every API method, but never the admin endpoints
    assert "accounts" in admin(emulator.url, "stats")
    with pytest.raises(urllib.error.HTTPError) as info:
        admin(emulator.url, "faults", {"error_rate": 2})
    assert info.value.code == 400
    info.value.close()
    with pytest.raises(urllib.error.HTTPError) as info:
        admin(emulator.url, "faults", {"no_such_knob": 1})
    assert info.value.code == 400
    info.value.close()


def test_faults_at_start(private_emulator, account_on):
    emu = private_emulator(faults={"error_rate": 1.0, "error_codes": [503]}, seed=1)
    alice = account_on(emu, "alice")
    with pytest.raises(HttpError) as info:
        alice.profile()
    assert info.value.status_code == 503


def test_reset_drops_everything(private_emulator, account_on):
    emu = private_emulator()
    alice = account_on(emu, "alice")
    emu.deliver(raw_message("x@example.com", alice.address, "hi"), alice.address)
    alice.profile()
    assert admin(emu.url, "reset", {}, method="POST") == {}
    assert emu.stats()["accounts"] == {}
    assert alice.profile()["messagesTotal"] == 0


def test_dropped_batch_envelope_after_applying_its_parts(new_account, emulator):
    alice, bob = new_account("alice"), new_account("bob")
    mid = alice.send(bob.address, "batch drop")["id"]
    emulator.set_faults(script=[{"method": "batch", "action": "drop_after"}])
    batch = alice.new_batch()
    batch.add(alice.users.messages().modify(userId="me", id=mid,
                                            body={"addLabelIds": ["STARRED"]}))
    with pytest.raises(OSError):
        batch.execute()
    assert "STARRED" in alice.get(mid, "minimal")["labelIds"]
