"""A corpus of hostile and odd mail, inserted as is: each ends acked or rejected as expected.

Every case is a message a sender could write (sender trust, limits, parsing, rejection, loops).
They all go into one mailbox; one run processes them; then each is checked against its expected
outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from agentmail.journal import events as ev

from . import mail as m

BOT = "bot@agents.example"
LIMITS = {"max_message_bytes": 200_000, "max_json_bytes": 20_000, "max_json_depth": 32,
          "max_mime_parts": 40, "max_mime_depth": 10, "deny_from": ("@spam.example",)}


@dataclass
class Case:
    name: str
    raw: bytes
    outcome: str  # "acked" or a rejection reason
    replied: bool | None = None  # None: not checked
    payload: object = ...  # ...: not checked


def _corpus() -> list[Case]:
    cases: list[Case] = []

    def add(name, raw, outcome, replied=None, payload=...):
        cases.append(Case(name, raw, outcome, replied, payload))

    s = m.address()
    add("plain_json", m.mail(s, BOT, body=b'{"task": 1}'), "acked", True, {"task": 1})
    # 1. sender trust and authentication
    add("no_authentication_results", m.mail(m.address(), BOT, auth=None), "unauthenticated", False)
    s = m.address()
    add("forged_pass_below_provider_fail",
        m.mail(s, BOT, auth=m.auth_results(s, dkim="fail", spf="softfail", dmarc="fail"),
               headers=[("Authentication-Results", m.auth_results(s))]), "unauthenticated", False)
    s = m.address()
    add("forged_pass_below_provider_none",
        m.mail(s, BOT, auth=f"{m.PROVIDER}; none",
               headers=[("Authentication-Results", m.auth_results(s))]), "unauthenticated", False)
    s = m.address()
    add("pass_from_another_authserv_id",
        m.mail(s, BOT, auth=m.auth_results(s, authserv_id="mx.evil.example")), "unauthenticated",
        False)
    s = m.address()
    add("dkim_only_aligned", m.mail(s, BOT, auth=m.auth_results(s, spf="fail", dmarc="none")),
        "acked", True)
    s = m.address()
    add("dkim_pass_for_another_domain",
        m.mail(s, BOT, auth=m.auth_results(s, spf="fail", dmarc="fail",
                                           dkim_domain="attacker.example")), "unauthenticated")
    s = m.address()
    add("spf_pass_unaligned",
        m.mail(s, BOT, auth=m.auth_results(s, dkim="none", dmarc="none",
                                           mailfrom="bounce@attacker.example")), "unauthenticated")
    s = m.address(domain="spam.example")
    add("denied_domain", m.mail(s, BOT), "sender_denied", False)
    add("own_address", m.mail(BOT, BOT), "own_message", False)
    # Display name posing as an address
    s = m.address()
    add("display_name_spoof",
        m.mail(f'"ceo@agents.example" <{s}>', BOT, auth=m.auth_results(s)), "acked")
    # 2. limits
    add("too_large", m.mail(m.address(), BOT, body=b'{"a": "' + b"x" * 250_000 + b'"}'),
        "too_large", False)
    add("json_too_large", m.mail(m.address(), BOT, body=b'{"a": "' + b"x" * 30_000 + b'"}'),
        "too_large", False)
    add("json_too_deep", m.mail(m.address(), BOT, body=b"[" * 100 + b"]" * 100),
        "json_too_deep", False)
    add("json_bomb_of_brackets", m.mail(m.address(), BOT, body=b"[" * 150_000), "too_large")
    add("json_bracket_bomb_small", m.mail(m.address(), BOT, body=b"[" * 15_000), "json_too_deep")
    refs = " ".join(m.message_id() for _ in range(500))
    add("500_references", m.mail(m.address(), BOT, headers=[("References", refs)]), "acked", True)
    add("huge_header_line", m.mail(m.address(), BOT, subject="s" * 50_000), "acked")
    ctype, body = m.multipart([("Content-Type: text/plain", b"part %d" % i) for i in range(60)])
    add("too_many_mime_parts", m.mail(m.address(), BOT, body=body, content_type=ctype), "malformed")
    ctype, body = m.nested_multipart(15)
    add("mime_too_deep", m.mail(m.address(), BOT, body=body, content_type=ctype), "malformed")
    ctype, body = m.nested_multipart(300)  # the emulator itself cannot store ~1000
    add("mime_recursion_bomb", m.mail(m.address(), BOT, body=body, content_type=ctype),
        "malformed")
    # 3. parsing that survives anything
    add("prose_not_json", m.mail(m.address(), BOT, body=b"Hello, can you help?\r\n"), "acked",
        True, None)
    add("empty_body", m.mail(m.address(), BOT, body=b""), "acked", payload=None)
    add("json_then_signature",
        m.mail(m.address(), BOT, body=b'{"task": "sig"}\r\n-- \r\nBob\r\nSent from my phone'),
        "acked", payload={"task": "sig"})
    add("utf8_bom_base64", m.mail(m.address(), BOT, body=m.b64(b'\xef\xbb\xbf{"bom": true}'),
                                  cte="base64"), "acked", payload={"bom": True})
    add("quoted_printable", m.mail(m.address(), BOT, body=b'{"q":=20"caf=C3=A9"}', cte="quoted-printable"),
        "acked", payload={"q": "café"})
    add("wrong_charset_latin1_declared_utf8",
        m.mail(m.address(), BOT, body='{"name": "Jos\u00e9"}'.encode("latin-1")), "acked",
        payload={"name": "José"})
    add("unknown_charset", m.mail(m.address(), BOT, content_type="text/plain; charset=x-klingon",
                                  body=b'{"k": 1}'), "acked", payload={"k": 1})
    add("8bit_utf8", m.mail(m.address(), BOT, cte="8bit", body='{"emoji": "\U0001f600"}'.encode()),
        "acked", payload={"emoji": "\U0001f600"})
    add("broken_base64", m.mail(m.address(), BOT, cte="base64", body=b"!!!not base64@@@"), "acked")
    add("encoded_word_subject",
        m.mail(m.address(), BOT, subject="=?utf-8?B?w6ljaG8gPT0=?= =?iso-8859-1?q?caf=E9?="),
        "acked", True)
    add("encoded_crlf_injection_in_subject",
        m.mail(m.address(), BOT, subject="=?utf-8?q?hi=0D=0ABcc:_victim@else.example?="),
        "acked", True)
    add("html_only", m.mail(m.address(), BOT, content_type="text/html; charset=utf-8",
                            body=b'<html><body><p>{"html": 1}</p></body></html>'), "acked",
        payload={"html": 1})
    ctype, body = m.multipart([("Content-Type: text/plain", b"see attachment"),
                               ('Content-Type: application/json\r\nContent-Disposition: '
                                'attachment; filename="req.json"', b'{"attached": [1, 2]}')])
    add("json_attachment", m.mail(m.address(), BOT, body=body, content_type=ctype), "acked",
        payload={"attached": [1, 2]})
    add("cut_off_json", m.mail(m.address(), BOT, body=b'{"task": "half", "items": [1, 2'),
        "invalid_json", False)
    add("nan_in_json", m.mail(m.address(), BOT, body=b'{"x": NaN}'), "invalid_json")
    add("missing_from", m.mail(None, BOT, auth=m.auth_results("x@corp.example")), "malformed")
    s = m.address()
    add("two_addresses_in_from", m.mail(f"{s}, other@corp.example", BOT, auth=m.auth_results(s)),
        "malformed")
    s = m.address()
    add("duplicate_from_headers",
        m.mail(s, BOT, headers=[("From", "ceo@agents.example")]), "acked")
    add("no_mime_headers", m.mail(m.address(), BOT, content_type=None, mime=False), "acked",
        payload={"task": "work"})
    add("nul_and_controls_in_headers",
        m.mail(m.address(), BOT, subject="a\x00b\x1bc", headers=[("X-Odd", "\x7f\x01")]), "acked")
    add("garbage_bytes", bytes(range(256)) * 4, "malformed")
    add("only_headers_no_body", m.mail(m.address(), BOT)[:-len(b'\r\n{"task": "work"}\r\n')],
        "acked")
    # 4./5. automatic mail, lists, bounces
    add("auto_replied", m.mail(m.address(), BOT, headers=[("Auto-Submitted", "auto-replied")]),
        "acked", False)
    add("auto_generated_not_an_agent",
        m.mail(m.address(), BOT, headers=[("Auto-Submitted", "auto-generated")]), "acked", False)
    add("precedence_bulk", m.mail(m.address(), BOT, headers=[("Precedence", "bulk")]), "acked",
        False)
    add("mailing_list", m.mail(m.address(), BOT, headers=[("List-Id", "<team.corp.example>")]),
        "acked", False)
    add("x_auto_response_suppress",
        m.mail(m.address(), BOT, headers=[("X-Auto-Response-Suppress", "All")]), "acked", False)
    add("dsn_bounce", m.dsn(BOT, m.message_id()), "bounce", False)
    add("empty_return_path", m.mail(m.address(), BOT, headers=[("Return-Path", "<>")]), "bounce",
        False)
    add("postmaster", m.mail("postmaster@corp.example", BOT), "bounce", False)
    return cases


CORPUS = _corpus()


def test_the_corpus_covers_every_rejection_reason():
    reasons = {c.outcome for c in CORPUS}
    assert reasons >= {"acked", "unauthenticated", "sender_denied", "own_message", "too_large",
                       "json_too_deep", "invalid_json", "malformed", "bounce"}


def test_every_hostile_or_odd_message_ends_acked_or_rejected_as_expected(trust_emulator, journal,
                                                                         start_run):
    run = start_run(BOT, **LIMITS)
    delivered = {c.name: trust_emulator.deliver(c.raw, to=BOT)["id"] for c in CORPUS}
    for _ in range(3):
        run.cycle()
    wrong = []
    for case in CORPUS:
        key = ev.message_key(BOT, delivered[case.name])
        row = journal.message(key)
        events = journal.events_of_message(key)
        kinds = [e.kind for e in events]
        outcome = None if row is None else (
            row.state if row.state != "rejected" else next(
                e.data["reason"] for e in events if e.kind == ev.REJECTED))
        replied = ev.SENT in kinds
        payload = json.loads(row.payload) if row is not None and row.payload else None
        if outcome != case.outcome:
            wrong.append(f"{case.name}: {outcome} (expected {case.outcome}) {kinds}")
        elif case.replied is not None and replied != case.replied:
            wrong.append(f"{case.name}: replied={replied} (expected {case.replied})")
        elif case.payload is not ... and payload != case.payload:
            wrong.append(f"{case.name}: payload {payload!r} (expected {case.payload!r})")
        if outcome != "acked" and (ev.CLAIMED in kinds or ev.SENT in kinds):
            wrong.append(f"{case.name}: a rejected message reached the handler: {kinds}")
    assert not wrong, "\n".join(wrong)
    counts = journal.state_counts(BOT)
    assert set(counts) <= {"acked", "rejected"}, counts  # nothing pending, claimed or failed
    assert counts["rejected"] == sum(c.outcome != "acked" for c in CORPUS)
    assert run.totals.errors == []


@pytest.mark.parametrize("name", ["too_large", "mime_recursion_bomb"])
def test_the_rejection_is_labelled_and_the_message_taken_out_of_the_queue(trust_emulator, journal,
                                                                        start_run, name):
    case = next(c for c in CORPUS if c.name == name)
    address = m.address("agent", "agents.example")
    run = start_run(address, **LIMITS)
    delivered = trust_emulator.deliver(case.raw.replace(BOT.encode(), address.encode()),
                                       to=address)
    run.cycle()
    run.cycle()
    mailbox = run.mailbox
    labels = {lab for ref in mailbox.list_labelled("agent-rejected", 10) for lab in [ref.id]}
    assert delivered["id"] in labels
    assert journal.message(ev.message_key(address, delivered["id"])).state == "rejected"
