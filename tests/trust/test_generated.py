"""Generated mail (hypothesis): arbitrary bytes and random mixes of hostile ingredients.

One run per test serves every example (fresh message each), so the suite stays fast; the
properties are the ones users rely on: the run never crashes, each message ends acked or rejected, an
unauthenticated sender is never answered and never reaches the handler.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmail.agent import Agent
from agentmail.journal import events as ev

from . import mail as m

EXAMPLES = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
REASONS = {"own_message", "bounce", "malformed", "sender_denied", "sender_not_allowed",
           "unauthenticated", "too_large", "json_too_deep", "invalid_json"}


class Recorder(Agent):
    """Answers everything it is handed, and remembers who that was."""

    def __init__(self, email: str) -> None:
        super().__init__(email)
        self.seen: list[str] = []

    def process_message(self, message):
        self.seen.append(message.key)
        self.reply_to_message(message, {"ok": True, "payload": message.payload})


def _outcome(journal, address, provider_id):
    key = ev.message_key(address, provider_id)
    row = journal.message(key)
    assert row is not None, "the message was never fetched"
    kinds = [e.kind for e in journal.events_of_message(key)]
    return key, row.state, kinds


BYTES_AGENT = "bytes@agents.example"
MIXES_AGENT = "mixes@agents.example"


@pytest.fixture
def bytes_run(start_run):
    """One run for every example of a test (hypothesis reuses function-scoped fixtures)."""
    return start_run(BYTES_AGENT)


@pytest.fixture
def recorder():
    return Recorder(MIXES_AGENT)


@pytest.fixture
def mixes_run(start_run, recorder):
    return start_run(MIXES_AGENT, recorder, error_replies=True)


@EXAMPLES
@given(raw=st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash_the_run(trust_emulator, journal, bytes_run, raw):
    address, run = BYTES_AGENT, bytes_run
    delivered = trust_emulator.deliver(raw, to=address)
    run.cycle()
    _, state, kinds = _outcome(journal, address, delivered["id"])
    assert state in ("acked", "rejected"), kinds
    assert not run.totals.errors


HEADER_VALUES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
BODIES = st.one_of(
    st.just(b'{"task": "x"}'), st.just(b'{"task": "cut'), st.just(b"plain words"),
    st.just(b"[" * 80 + b"]" * 80), st.just(b"\xef\xbb\xbf[1, 2]"), st.just(b""),
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=10).map(lambda v: __import__("json").dumps(v).encode()),
)


@st.composite
def hostile_mail(draw, to):
    sender = m.address()
    domain = sender.rpartition("@")[2]
    auth_kind = draw(st.sampled_from(["pass", "fail", "none", "forged_below", "other_server",
                                      "dkim_other_domain"]))
    auth: object
    headers: list[tuple[str, str]] = []
    if auth_kind == "pass":
        auth = True
    elif auth_kind == "fail":
        auth = m.auth_results(sender, dkim="fail", spf="fail", dmarc="fail")
    elif auth_kind == "none":
        auth = None
    elif auth_kind == "forged_below":
        auth = m.auth_results(sender, dkim="neutral", spf="softfail", dmarc="none")
        headers.append(("Authentication-Results", m.auth_results(sender)))
    elif auth_kind == "other_server":
        auth = m.auth_results(sender, authserv_id=f"mx.{domain}")
    else:
        auth = m.auth_results(sender, spf="none", dmarc="none", dkim_domain="evil.example")
    for name in draw(st.lists(st.sampled_from(
            ["Auto-Submitted", "Precedence", "List-Id", "Return-Path", "In-Reply-To",
             "References", "X-Auto-Response-Suppress", "Reply-To", "Subject", "From", "Cc"]),
            max_size=4)):
        headers.append((name, draw(HEADER_VALUES)))
    ctype = draw(st.sampled_from([
        "text/plain; charset=utf-8", "text/plain; charset=x-unknown", "text/html",
        "application/json", "multipart/mixed; boundary=zz", "text/plain; charset=utf-16", None]))
    cte = draw(st.sampled_from([None, "base64", "quoted-printable", "8bit", "x-uuencode"]))
    body = draw(BODIES)
    if cte == "base64" and draw(st.booleans()):
        body = m.b64(body)
    raw = m.mail(sender, to, subject=draw(HEADER_VALUES), body=body, content_type=ctype,
                 cte=cte, headers=headers, auth=auth)
    return raw, auth_kind == "pass"


@EXAMPLES
@given(data=st.data())
def test_generated_hostile_mail_is_rejected_or_handled_and_never_answers_strangers(
        trust_emulator, journal, mixes_run, recorder, data):
    address, run, agent = MIXES_AGENT, mixes_run, recorder
    raw, authenticated = data.draw(hostile_mail(address))
    delivered = trust_emulator.deliver(raw, to=address)
    run.cycle()
    key, state, kinds = _outcome(journal, address, delivered["id"])
    assert state in ("acked", "rejected"), kinds
    if state == "rejected":
        [rejected] = [e for e in journal.events_of_message(key) if e.kind == ev.REJECTED]
        assert rejected.data["reason"] in REASONS
        assert key not in agent.seen
    if not authenticated:
        assert state == "rejected" and ev.SENT not in kinds and key not in agent.seen
    assert not run.totals.errors
