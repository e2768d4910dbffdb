"""Trust, limits and loop decisions on parsed messages."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmail import errors
from agentmail import message as msg
from agentmail import policy as pol

ACCOUNT = "bot@agents.example"
GMAIL_AR = ("Authentication-Results: mx.google.com;\r\n"
            "       dkim=pass header.i=@corp.example header.s=sel2023 header.b=AbCdEf12;\r\n"
            "       spf=pass (google.com: domain of bounce@corp.example designates 192.0.2.1 as "
            "permitted sender) smtp.mailfrom=bounce@corp.example;\r\n"
            "       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=corp.example")
FAIL_AR = ("Authentication-Results: mx.google.com; dkim=none; spf=softfail smtp.mailfrom=x@evil.example; "
           "dmarc=fail")


def make(*headers: str, body: str = '{"task": 1}', sender: str = "alice@corp.example",
         auth: str | None = GMAIL_AR) -> msg.Message:
    lines = [*([auth] if auth else []), f"From: {sender}", f"To: {ACCOUNT}", "Subject: s",
             "Message-ID: <m1@corp.example>", *headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
    return msg.parse(raw, account=ACCOUNT, provider_id="p")


def ar(value: str) -> pol.AuthResults | None:
    return pol.parse_authentication_results([("Authentication-Results", value)])


DEFAULT = pol.TrustPolicy()


# --- Authentication-Results ----------------------------------------------------------------------


def test_parse_gmail_header_with_folding_and_comments():
    parsed = pol.parse_authentication_results(make())
    assert parsed is not None and parsed.authserv_id == "mx.google.com"
    assert parsed.summary() == {"dkim": ["pass"], "spf": ["pass"], "dmarc": ["pass"]}
    assert parsed.of("dkim")[0].properties == {"header.i": "@corp.example", "header.s": "sel2023",
                                               "header.b": "AbCdEf12"}
    assert parsed.of("spf")[0].properties["smtp.mailfrom"] == "bounce@corp.example"
    assert parsed.of("dmarc")[0].properties["header.from"] == "corp.example"


def test_parse_quoted_values_nested_comments_and_version():
    parsed = ar('mx.google.com 1; spf = pass (a (nested; b) c) smtp.mailfrom="we ird@x.example"; '
                'dkim=pass reason="good; fine" header.d=x.example; none')
    assert parsed is not None
    assert parsed.of("spf")[0].properties["smtp.mailfrom"] == "we ird@x.example"
    assert parsed.of("dkim")[0].properties == {"reason": "good; fine", "header.d": "x.example"}


def test_only_the_topmost_header_of_the_provider_counts():
    forged = ("Authentication-Results: mx.google.com; dkim=pass header.i=@corp.example; "
              "dmarc=pass header.from=corp.example")
    # Real (failing) result on top, forged pass below: the forgery is ignored.
    m = make(forged, auth=FAIL_AR)
    assert pol.parse_authentication_results(m).summary()["dmarc"] == ["fail"]
    assert pol.evaluate(m, DEFAULT).reason == "unauthenticated"
    # Other authserv-ids don't count, even on top.
    other = "Authentication-Results: evil.example; dmarc=pass header.from=corp.example"
    m = make(other, auth=None)
    assert pol.parse_authentication_results(m) is None
    assert pol.evaluate(m, DEFAULT).reason == "unauthenticated"
    assert pol.parse_authentication_results(m, "evil.example") is not None


def test_garbage_headers_parse_to_nothing_useful():
    assert ar("") is None
    assert ar("mx.google.com").results == ()
    assert ar('mx.google.com; (((; "unterminated; dkim=') is not None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_header_text_parses_without_raising(value):
    result = ar(value)
    pol.authenticated(result, "corp.example")


@pytest.mark.parametrize(("header", "from_domain", "expected"), [
    ("mx.google.com; dmarc=pass header.from=corp.example", "corp.example", True),
    ("mx.google.com; dmarc=pass header.from=other.example", "corp.example", False),
    ("mx.google.com; dmarc=fail; dkim=pass header.i=@corp.example", "corp.example", True),
    ("mx.google.com; dmarc=fail; dkim=pass header.d=corp.example", "mail.corp.example", True),
    ("mx.google.com; dkim=pass header.i=@corp.example", "corp.example", True),
    ("mx.google.com; dkim=pass header.i=@attacker.example", "corp.example", False),
    ("mx.google.com; dkim=pass header.i=@evil.corp.example", "corp.example", False),
    ("mx.google.com; dkim=pass header.i=@example", "corp.example", False),
    ("mx.google.com; dkim=fail header.i=@corp.example", "corp.example", False),
    ("mx.google.com; spf=pass smtp.mailfrom=bounce@corp.example", "corp.example", True),
    ("mx.google.com; spf=pass smtp.mailfrom=corp.example", "sub.corp.example", True),
    ("mx.google.com; spf=pass smtp.mailfrom=bounce@esp.example", "corp.example", False),
    ("mx.google.com; spf=softfail smtp.mailfrom=bounce@corp.example", "corp.example", False),
    ("mx.google.com; none", "corp.example", False),
])
def test_authenticated(header, from_domain, expected):
    assert pol.authenticated(ar(header), from_domain) is expected


def test_no_header_is_not_authenticated():
    assert pol.authenticated(None, "corp.example") is False


# --- sender trust --------------------------------------------------------------------------------


def test_default_accepts_authenticated_json():
    verdict = pol.evaluate(make(), DEFAULT)
    assert verdict.accepted and verdict.reason is None and verdict.may_reply
    assert verdict.details["auth"]["passed"] is True


@pytest.mark.parametrize(("allow", "sender", "accepted"), [
    (("alice@corp.example",), "Alice@Corp.example", True),
    (("bob@corp.example",), "alice@corp.example", False),
    (("@corp.example",), "alice@corp.example", True),
    (("@corp.example",), "alice@eu.corp.example", False),
    (("*.corp.example",), "alice@eu.corp.example", True),
    (("*.corp.example",), "alice@corp.example", True),
    (("*.corp.example",), "alice@notcorp.example", False),
])
def test_allow_list_entries(allow, sender, accepted):
    m = make(sender=sender, auth=f"Authentication-Results: mx.google.com; dmarc=pass header.from="
                                 f"{sender.split('@')[1].lower()}")
    verdict = pol.evaluate(m, pol.TrustPolicy(allow_from=allow))
    assert verdict.accepted is accepted
    if not accepted:
        assert verdict.reason == "sender_not_allowed"


def test_deny_wins():
    policy = pol.TrustPolicy(allow_from=("@corp.example",), deny_from=("alice@corp.example",))
    assert pol.evaluate(make(), policy).reason == "sender_denied"


@pytest.mark.parametrize("entry", ["corp.example", "*@corp.example", "@", "*.", "a@b@", "a@", "*.a..b"])
def test_bad_entries_are_configuration_errors(entry):
    with pytest.raises(errors.ConfigError):
        pol.TrustPolicy(allow_from=(entry,))


def test_unauthenticated_is_rejected_unless_configured():
    m = make(auth=FAIL_AR)
    verdict = pol.evaluate(m, DEFAULT)
    assert not verdict.accepted and verdict.reason == "unauthenticated" and not verdict.may_reply
    assert verdict.details["auth"]["results"]["dmarc"] == ["fail"]
    lenient = pol.evaluate(m, pol.TrustPolicy(require_auth=False))
    assert lenient.accepted and not lenient.may_reply and lenient.reason == "unauthenticated"
    unchecked = pol.evaluate(make(auth=None), pol.TrustPolicy(authserv_id=None))
    assert unchecked.accepted and unchecked.may_reply


def test_own_message_is_never_a_request():
    assert pol.evaluate(make(sender=ACCOUNT), DEFAULT).reason == "own_message"
    policy = pol.TrustPolicy(self_addresses=("alias@agents.example",))
    assert pol.evaluate(make(sender="Alias@agents.example"), policy).reason == "own_message"


# --- malformed and limits ------------------------------------------------------------------------


def test_no_from_is_malformed():
    raw = (GMAIL_AR + "\r\nSubject: x\r\n\r\n{}").encode()
    verdict = pol.evaluate(msg.parse(raw, account=ACCOUNT, provider_id="p"), DEFAULT)
    assert verdict.reason == "malformed" and "no_from" in verdict.details["defects"]


def test_too_many_parts_is_malformed():
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\n{i}\r\n" for i in range(200))
    m = make("Content-Type: multipart/mixed; boundary=b", body=parts + "--b--\r\n")
    verdict = pol.evaluate(m, DEFAULT)
    assert verdict.reason == "malformed" and verdict.details["defects"] == ["too_many_parts"]


def test_size_limits():
    assert pol.evaluate(make(body='{"a": "' + "x" * 5000 + '"}'),
                        pol.TrustPolicy(max_size=1000)).reason == "too_large"
    big = make(body='{"a": "' + "x" * 2_000_000 + '"}')
    verdict = pol.evaluate(big, DEFAULT)
    assert verdict.reason == "too_large" and verdict.details["limit_name"] == "max_json_bytes"


def test_deep_json():
    verdict = pol.evaluate(make(body="[" * 100_000 + "]" * 100_000), DEFAULT)
    assert verdict.reason == "json_too_deep" and verdict.details["limit"] == 64


def test_non_json_goes_to_the_handler_by_default_and_truncated_json_is_rejected():
    prose = pol.evaluate(make(body="Hello, could you look at this?"), DEFAULT)
    assert prose.accepted and prose.may_reply
    assert pol.evaluate(make(body='{"task": [1, 2'), DEFAULT).reason == "invalid_json"
    strict = pol.TrustPolicy(reject_non_json=True)
    verdict = pol.evaluate(make(body="Hello"), strict)
    assert verdict.reason == "invalid_json" and verdict.details["payload_error"] == "not_json"
    assert pol.evaluate(make(body=""), strict).details["payload_error"] == "empty"
    assert pol.evaluate(make(body="null"), strict).accepted


def test_error_replies_only_when_enabled_and_authenticated():
    broken = make(body='{"task": [1, 2')
    assert not pol.evaluate(broken, DEFAULT).may_reply
    verdict = pol.evaluate(broken, pol.TrustPolicy(error_replies=True))
    assert not verdict.accepted and verdict.may_reply


# --- bounces and loops ---------------------------------------------------------------------------


def test_bounces():
    report = ("--r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
              "--r\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <orig.0@agents.example>\r\n\r\n{}\r\n"
              "--r--\r\n")
    m = make("Content-Type: multipart/report; report-type=delivery-status; boundary=r", body=report,
             sender="mailer-daemon@googlemail.com", auth=None)
    verdict = pol.evaluate(m, DEFAULT)
    assert verdict.reason == "bounce" and not verdict.may_reply
    assert verdict.details["bounce_target"] == "<orig.0@agents.example>"
    assert pol.bounce_target(m) == "<orig.0@agents.example>"
    assert pol.evaluate(make(sender="postmaster@corp.example"), DEFAULT).reason == "bounce"
    empty_path = make("Return-Path: <>", "In-Reply-To: <orig.1@agents.example>")
    assert pol.evaluate(empty_path, DEFAULT).reason == "bounce"
    assert pol.bounce_target(empty_path) == "<orig.1@agents.example>"
    assert pol.bounce_target(make("References: <a@x> <b@x>")) == "<b@x>"
    assert pol.bounce_target(make()) is None
    assert pol.evaluate(make("Return-Path: <bounce@corp.example>"), DEFAULT).accepted


@pytest.mark.parametrize(("header", "blocker"), [
    ("Auto-Submitted: auto-replied", "auto_submitted"),
    ("Auto-Submitted: auto-generated", "auto_submitted"),
    ("X-Auto-Response-Suppress: All", "auto_submitted"),
    ("Precedence: bulk", "bulk"),
    ("Precedence: list", "bulk"),
    ("List-Id: <team.corp.example>", "mailing_list"),
])
def test_no_reply_to_automatic_or_bulk_mail(header, blocker):
    verdict = pol.evaluate(make(header), DEFAULT)
    assert verdict.accepted and not verdict.may_reply and verdict.reason == blocker
    assert verdict.details["reply_blocked"] == [blocker]


def test_auto_submitted_no_may_be_answered():
    assert pol.evaluate(make("Auto-Submitted: no"), DEFAULT).may_reply


def test_loop_cap():
    assert pol.evaluate(make(), DEFAULT, replies_in_conversation=19).may_reply
    verdict = pol.evaluate(make(), DEFAULT, replies_in_conversation=20)
    assert verdict.accepted and not verdict.may_reply and verdict.reason == "loop"
    assert pol.evaluate(make(), pol.TrustPolicy(max_replies_per_conversation=2),
                        replies_in_conversation=2).reason == "loop"


def test_recipient_allow_list():
    out = msg.compose_request(from_addr=ACCOUNT, to="a@corp.example", cc="b@other.example",
                              subject="s", payload={})
    pol.check_recipients(out, DEFAULT)
    with pytest.raises(errors.OutgoingRejected, match=r"b@other\.example"):
        pol.check_recipients(out, pol.TrustPolicy(allow_to=("*.corp.example",)))


# --- a composed request passes the defaults once Gmail has authenticated it ------------------------


def test_agent_to_agent_round_trip_policy():
    out = msg.compose_request(from_addr="alice@corp.example", to=ACCOUNT, subject="job", payload={"n": 1})
    delivered = GMAIL_AR.encode() + b"\r\n" + out.raw
    m = msg.parse(delivered, account=ACCOUNT, provider_id="p")
    verdict = pol.evaluate(m, DEFAULT)
    assert verdict.accepted and verdict.may_reply  # agents answer each other's requests
    strict = pol.TrustPolicy(answer_agent_requests=False)
    assert pol.evaluate(m, strict).reason == "auto_submitted"
    reply = msg.compose_reply(m, from_addr=ACCOUNT, payload={"ok": 1}, index=0)
    bot_ar = b"Authentication-Results: mx.google.com; dmarc=pass header.from=agents.example\r\n"
    back = msg.parse(bot_ar + reply.raw, account="alice@corp.example",
                     provider_id="q")
    answer = pol.evaluate(back, DEFAULT)
    assert answer.accepted and not answer.may_reply and answer.reason == "auto_submitted"


def test_pure_modules_import_no_io_libraries():
    root = pathlib.Path(pol.__file__).parent
    forbidden = {"sqlalchemy", "googleapiclient", "socket", "urllib", "http", "requests", "httpx",
                 "sqlite3", "os", "subprocess", "alembic"}
    for name in ("message.py", "policy.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                assert module.split(".")[0] not in forbidden, (name, module)
