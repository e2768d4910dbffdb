"""Parsing hostile and odd mail, composing safe mail, and the round trip between them."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmail import errors
from agentmail import message as msg

ACCOUNT = "bot@agents.example"


def parse(raw: bytes, **kwargs) -> msg.Message:
    return msg.parse(raw, account=ACCOUNT, provider_id="p1", **kwargs)


def mail(body: str | bytes = "", *headers: str, ctype: str | None = None, cte: str | None = None) -> bytes:
    lines = ["From: Alice <alice@corp.example>", "To: bot@agents.example", "Subject: hi",
             "Message-ID: <m1@corp.example>", *headers]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    if cte:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    head = "\r\n".join(lines).encode() + b"\r\n\r\n"
    return head + (body.encode() if isinstance(body, str) else body)


# --- headers -------------------------------------------------------------------------------------


def test_basic_fields_and_key():
    m = msg.parse(mail('{"a": 1}', "Date: Tue, 1 Jul 2025 10:00:00 +0200", "Cc: C <c@x.example>",
                       "In-Reply-To: <p@x>", "References: <r1@x>\r\n <p@x>"),
                  account=ACCOUNT, provider_id="abc", thread_id="t1")
    assert m.key == f"{ACCOUNT}:abc"
    assert (m.sender, m.sender_name, m.recipient) == ("alice@corp.example", "Alice", ACCOUNT)
    assert m.to == (ACCOUNT,) and m.cc == ("c@x.example",)
    assert m.message_id == "<m1@corp.example>" and m.in_reply_to == "<p@x>"
    assert m.references == ("<r1@x>", "<p@x>")
    assert m.thread_id == "t1" and m.subject == "hi"
    assert m.date == datetime(2025, 7, 1, 8, 0, tzinfo=timezone.utc)
    assert m.payload == {"a": 1} and m.payload_error is None
    assert m.auto_submitted == "no" and m.defects == ()
    assert m.header("from") == "Alice <alice@corp.example>" and m.header("nope") is None
    assert m.size == len(mail('{"a": 1}', "Date: Tue, 1 Jul 2025 10:00:00 +0200", "Cc: C <c@x.example>",
                              "In-Reply-To: <p@x>", "References: <r1@x>\r\n <p@x>"))


def test_missing_headers():
    m = parse(b"\r\nhello")
    assert (m.sender, m.message_id, m.subject, m.date, m.recipient) == ("", None, "", None, "")
    assert "no_from" in m.defects and "no_message_id" in m.defects
    assert m.text == "hello" and m.payload is None and m.payload_error == "not_json"


def test_duplicated_headers_keep_the_first_and_all_values():
    m = parse(mail("x", "Subject: second", "X-Tag: 1", "X-Tag: 2"))
    assert m.subject == "hi" and "duplicate_subject" in m.defects
    assert m.header_all("x-tag") == ["1", "2"]


def test_encoded_words_including_malformed_ones():
    m = parse(mail("x", "X-A: =?utf-8?q?caf=C3=A9?= =?utf-8?b?w6k=?=", "X-B: =?bogus-cs?q?abc?=",
                   "X-C: =?utf-8?b?!!!?=", "X-D: =?iso-8859-1?q?na=EFve?=", "X-E: =?utf-8?b?w6k?="))
    assert m.header("x-a") == "caféé"
    assert m.header("x-b") == "abc" and "unknown_charset" in m.defects
    assert m.header("x-c") is not None  # left undecoded or decoded leniently, never raising
    assert m.header("x-d") == "naïve"
    assert m.header("x-e") == "é"  # missing base64 padding repaired


def test_encoded_display_name_cannot_pose_as_the_address():
    m = parse(b"From: =?utf-8?q?Boss_=3Cboss=40corp.example=3E?= <evil@attacker.example>\r\n\r\n")
    assert m.sender == "evil@attacker.example"
    assert m.sender_name == "Boss <boss@corp.example>"
    m = parse(b"From: =?utf-8?q?x_<boss@corp.example>?= <evil@attacker.example>\r\n\r\n")
    assert m.sender != "boss@corp.example"


def test_several_from_addresses_leave_no_sender():
    m = parse(b"From: a@x.example, b@y.example\r\n\r\n")
    assert m.sender == "" and "multiple_from" in m.defects


def test_header_control_characters_are_neutralised():
    m = parse(mail("x", "X-Evil: =?utf-8?q?a=0D=0ABcc:_x@y?="))
    assert m.header("x-evil") == "a  Bcc: x@y" and "header_control_chars" in m.defects


def test_folding_with_tabs_is_not_a_defect():
    m = parse(mail("x", "X-Folded: a;\r\n\tb;\r\n  c"))
    assert m.header("x-folded") == "a; b;  c" and m.defects == ()


def test_long_header_is_truncated():
    m = parse(mail("x", "X-Long: " + "a" * 20000), limits=msg.ParseLimits(max_header_line=100))
    assert len(m.header("x-long")) == 100 and "header_too_long" in m.defects


def test_huge_references_keep_the_last_n():
    refs = " ".join(f"<r{i}@x>" for i in range(5000))
    m = parse(mail("x", f"References: {refs}"))
    assert len(m.references) == 100 and m.references[-1] == "<r4999@x>"
    assert m.references[0] == "<r4900@x>" and "too_many_references" in m.defects


def test_unbracketed_message_id_and_garbage_message_id():
    assert parse(b"Message-ID: abc@host\r\n\r\n").message_id == "<abc@host>"
    m = parse(b"Message-ID: no id here\r\n\r\n")
    assert m.message_id is None and "bad_message_id" in m.defects


def test_auto_submitted_token():
    assert parse(mail("x", "Auto-Submitted: Auto-Replied; owner=x")).auto_submitted == "auto-replied"
    assert parse(mail("x")).auto_submitted == "no"


def test_dates_naive_and_broken():
    assert parse(mail("x", "Date: Tue, 1 Jul 2025 10:00:00 -0000")).date == datetime(
        2025, 7, 1, 10, tzinfo=timezone.utc)
    m = parse(mail("x", "Date: the day after tomorrow"))
    assert m.date is None and "bad_date" in m.defects


# --- bodies --------------------------------------------------------------------------------------


def test_bom_and_signature_after_json():
    m = parse(mail('\ufeff  {"task": "x"}\n-- \nsent by bot {not json}'))
    assert m.payload == {"task": "x"}


def test_scalar_json_only_when_alone():
    assert parse(mail("42\n")).payload == 42
    m = parse(mail("2024 was a good year"))
    assert m.payload is None and m.payload_error == "not_json"


def test_empty_body_is_no_payload_without_error():
    m = parse(mail(""))
    assert m.payload is None and m.payload_error is None


def test_truncated_json_is_invalid_but_prose_in_brackets_is_not_json():
    assert parse(mail('{"a": [1, 2')).payload_error == "invalid_json"
    assert parse(mail('{"a": NaN}')).payload_error == "invalid_json"
    assert parse(mail("[EXTERNAL] hello")).payload_error == "not_json"
    assert parse(mail("{placeholder} hello")).payload_error == "not_json"


def test_deep_json_100k_levels_does_not_recurse():
    m = parse(mail("[" * 100_000 + "]" * 100_000))
    assert m.payload is None and m.payload_error == "too_deep" and "json_too_deep" in m.defects
    ok = parse(mail("[" * 64 + "]" * 64))
    assert ok.payload is not None


def test_depth_scanner_ignores_brackets_in_strings():
    assert parse(mail('{"s": "' + "[" * 500 + '\\"[[["}')).payload == {"s": "[" * 500 + '"[[['}


def test_json_too_large():
    m = parse(mail('{"a": "' + "x" * 2000 + '"}'), limits=msg.ParseLimits(max_json_bytes=1000))
    assert m.payload_error == "too_large" and "json_too_large" in m.defects


def test_base64_and_quoted_printable_and_8bit():
    b64 = base64.b64encode('{"é": 1}'.encode()).decode()
    assert parse(mail(b64, ctype="text/plain; charset=utf-8", cte="base64")).payload == {"é": 1}
    qp = '{"k": "caf=C3=A9", =\r\n"n": 2}'
    assert parse(mail(qp, ctype="text/plain; charset=utf-8", cte="quoted-printable")).payload == {
        "k": "café", "n": 2}
    raw8 = mail('{"k": "ü"}'.encode(), ctype="text/plain; charset=utf-8", cte="8bit")
    assert parse(raw8).payload == {"k": "ü"}


def test_broken_base64_survives():
    m = parse(mail("eyJhIjog!!!MX0=\r\n===", ctype="text/plain", cte="base64"))
    assert isinstance(m.text, str)


def test_wrong_and_unknown_charsets():
    latin = '{"k": "ü"}'.encode("latin-1")
    m = parse(mail(latin, ctype="text/plain; charset=utf-8"))
    assert m.payload == {"k": "ü"}  # utf-8 fails, latin-1 works
    m = parse(mail('{"k": "ü"}'.encode(), ctype="text/plain; charset=x-nonsense"))
    assert m.payload == {"k": "ü"} and "unknown_charset" in m.defects
    m = parse(mail('{"k": "ü"}'.encode(), ctype="text/plain; charset=us-ascii"))
    assert m.payload == {"k": "ü"} and "wrong_charset" in m.defects
    assert parse(mail(b"abc", ctype="text/plain; charset=rot13")).text == "abc"


def test_html_only_mail():
    html = ("<html><head><style>p {color: red}</style></head><body><p>Hello &amp; welcome</p>"
            "<pre>{&quot;job&quot;: 7}</pre><script>alert(1)</script></body></html>")
    m = parse(mail(html, ctype="text/html; charset=utf-8"))
    assert "Hello & welcome" in m.text and "alert" not in m.text and "color" not in m.text
    assert m.payload is None  # the text starts with prose
    m = parse(mail("<div>{&quot;job&quot;: 7}</div>", ctype="text/html"))
    assert m.payload == {"job": 7}


def multipart(boundary: str, *parts: bytes, subtype: str = "mixed") -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return (f"Content-Type: multipart/{subtype}; boundary={boundary}\r\n\r\n").encode() + body + (
        b"--" + boundary.encode() + b"--\r\n")


def part(ctype: str, body: str, *headers: str) -> bytes:
    return ("\r\n".join([f"Content-Type: {ctype}", *headers]) + "\r\n\r\n" + body).encode()


def with_from(raw: bytes) -> bytes:
    return b"From: alice@corp.example\r\nMessage-ID: <m@x>\r\n" + raw


def test_application_json_attachment_wins_over_text():
    raw = with_from(multipart(
        "b1", part("text/plain", "Please see the attached request."),
        part("application/octet-stream", '{"via": "filename"}',
             'Content-Disposition: attachment; filename="req.json"')))
    m = parse(raw)
    assert m.payload == {"via": "filename"} and m.text == "Please see the attached request."
    raw = with_from(multipart("b1", part("text/plain", "hi"), part("application/json", '{"a": 1}')))
    assert parse(raw).payload == {"a": 1}


def test_nested_multipart_alternative_prefers_plain():
    inner = multipart("in", part("text/html", "<p>html</p>"), part("text/plain", '{"p": 1}'),
                      subtype="alternative")
    raw = with_from(multipart("out", inner, part("image/png", "xx", "Content-Disposition: attachment")))
    m = parse(raw)
    assert m.text == '{"p": 1}' and m.payload == {"p": 1} and m.content_type == "multipart/mixed"


def test_too_many_parts_and_too_deep_mime():
    raw = with_from(multipart("b", *[part("text/plain", str(i)) for i in range(150)]))
    assert "too_many_parts" in parse(raw).defects
    deep = part("text/plain", "leaf")
    for i in range(30):
        deep = multipart(f"d{i}", deep)
    assert "mime_too_deep" in parse(with_from(deep)).defects


def test_mime_nesting_beyond_the_stdlib_recursion_limit():
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(5000))
    m = parse(b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + body)
    assert m.sender == "a@b.example" and "mime_too_deep" in m.defects


def test_embedded_message_ids_of_a_bounce():
    original = b"From: bot@agents.example\r\nMessage-ID: <orig@agents.example>\r\n\r\n{}"
    raw = with_from(multipart(
        "r", part("text/plain", "Delivery failed"), part("message/delivery-status", "Status: 5.0.0"),
        b"Content-Type: message/rfc822\r\n\r\n" + original, subtype="report; report-type=delivery-status"))
    m = parse(raw)
    assert m.content_type == "multipart/report" and m.attached_message_ids == ("<orig@agents.example>",)
    assert m.text == "Delivery failed"
    raw = with_from(multipart("r", part("text/rfc822-headers", "Message-ID: <h@agents.example>\r\n"),
                              subtype="report"))
    assert parse(raw).attached_message_ids == ("<h@agents.example>",)


@pytest.mark.parametrize("raw", [
    b"", b"\x00\xff\xfe", b"From:\r\n\r\n", b"Content-Type: multipart/mixed\r\n\r\n--x--",
    b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--", b":\r\n:\r\n\r\n",
    b"Content-Type: text/plain; charset*=''\r\n\r\nx", b"Content-Type: message/rfc822\r\n\r\n",
    b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\n\r\n", b"From: <>\r\nTo: ,,,@,<>\r\n\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n!!!\r\nend",
])
def test_odd_inputs_never_raise(raw):
    m = parse(raw)
    assert isinstance(m, msg.Message) and m.size == len(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw):
    m = parse(raw)
    assert isinstance(m.defects, tuple) and m.size == len(raw)


_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)
_leaf = st.tuples(
    st.sampled_from(["text/plain", "text/html", "application/json", "image/png", "text/x-odd"]),
    st.sampled_from(["utf-8", "latin-1", "x-unknown", "utf-16", ""]),
    st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-bogus"]),
    st.binary(max_size=200),
)


def _render(tree, depth=0) -> bytes:
    if isinstance(tree, tuple):
        ctype, charset, cte, body = tree
        if cte == "base64" and body and body[0] % 2:
            body = base64.b64encode(body)
        head = f"Content-Type: {ctype}" + (f"; charset={charset}" if charset else "")
        return f"{head}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + body
    return multipart(f"bnd{depth}x{len(tree)}", *[_render(child, depth + 1) for child in tree])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_leaf, lambda kids: st.lists(kids, min_size=1, max_size=4), max_leaves=12),
       st.lists(st.tuples(st.sampled_from(["From", "To", "Subject", "References", "Date", "X-H"]),
                          _header_text), max_size=6))
def test_generated_mime_trees_never_raise(tree, headers):
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8")
    m = parse(head + _render(tree))
    assert isinstance(m.text, str)


# --- Message-IDs ---------------------------------------------------------------------------------


def test_message_ids_are_deterministic():
    a = msg.make_message_id("<in@x>", "Bot@Agents.example", 2)
    assert a == msg.make_message_id("<in@x>", "bot@agents.example", 2)
    assert a != msg.make_message_id("<in@x>", "bot@agents.example", 3)
    assert a != msg.make_message_id("<in@x>", "bot@agents.example", 2, salt="s")
    assert a.startswith("<") and a.endswith(".2@agents.example>") and len(a.split(".")[0]) == 33
    assert msg.new_request_message_id(ACCOUNT) != msg.new_request_message_id(ACCOUNT)
    assert msg.outbox_id_of(a) == a[1:].split("@")[0]


# --- composing -----------------------------------------------------------------------------------


def test_reply_threads_by_rfc_ids():
    parent = parse(mail('{"q": 1}', "References: <r0@x> <r1@x>", "In-Reply-To: <r1@x>",
                        "Reply-To: Desk <desk@corp.example>"))
    parent = msg.Message(**{**parent.__dict__, "thread_id": "gmail-thread"})
    out = msg.compose_reply(parent, from_addr=ACCOUNT, payload={"ok": True}, index=0)
    assert out.to == ("desk@corp.example",) and out.subject == "Re: hi"
    assert out.in_reply_to == "<m1@corp.example>"
    assert out.references == ("<r0@x>", "<r1@x>", "<m1@corp.example>")
    assert out.thread_id == "gmail-thread" and out.auto_submitted == "auto-replied"
    assert out.message_id == msg.make_message_id("<m1@corp.example>", ACCOUNT, 0)
    back = msg.parse(out.raw, account="desk@corp.example", provider_id="x")
    assert back.header("X-Agentmail-Outbox-Id") == out.outbox_id
    assert back.header("Content-Type") == "text/plain; charset=utf-8"
    assert back.auto_submitted == "auto-replied" and back.date is not None
    assert back.references == out.references and back.payload == {"ok": True}
    again = msg.compose_reply(back, from_addr="desk@corp.example", payload=1, index=0)
    assert again.subject == "Re: hi"  # no "Re: Re:"


def test_reply_without_references_uses_in_reply_to_and_without_ids_falls_back_to_key():
    p = parse(mail("x", "In-Reply-To: <only@x>"))
    assert msg.compose_reply(p, from_addr=ACCOUNT, payload=1, index=0).references == (
        "<only@x>", "<m1@corp.example>")
    bare = parse(b"From: a@b.example\r\n\r\n")
    out = msg.compose_reply(bare, from_addr=ACCOUNT, payload=1, index=1)
    assert out.in_reply_to is None and out.references == ()
    assert out.message_id == msg.make_message_id(bare.key, ACCOUNT, 1)


def test_reply_to_a_message_without_sender_is_rejected():
    with pytest.raises(errors.OutgoingRejected, match="no sender"):
        msg.compose_reply(parse(b"\r\n"), from_addr=ACCOUNT, payload=1, index=0)


def test_request_headers():
    out = msg.compose_request(from_addr=ACCOUNT, to=["a@x.example", "A@X.example", "b@y.example"],
                              cc="c@z.example", subject="Job", payload=[1], extra_headers={"X-Job": "7"})
    assert out.to == ("a@x.example", "b@y.example") and out.cc == ("c@z.example",)
    assert out.auto_submitted == "auto-generated" and out.in_reply_to is None
    back = parse(out.raw)
    assert back.header("x-job") == "7" and back.message_id == out.message_id and back.payload == [1]
    given_id = msg.compose_request(from_addr=ACCOUNT, to="a@x.example", subject="s", payload=1,
                                   message_id="<fixed.3@agents.example>")
    assert given_id.message_id == "<fixed.3@agents.example>" and given_id.outbox_id == "fixed.3"


def test_long_and_non_ascii_values_are_encoded():
    subject = "ü" * 300 + " x"
    out = msg.compose_request(from_addr=ACCOUNT, to="a@x.example", subject=subject,
                              payload={"s": "y" * 3000, "u": "ж"})
    assert all(len(line) <= 998 for line in out.raw.split(b"\r\n"))
    back = parse(out.raw)
    assert back.subject == subject and back.payload == {"s": "y" * 3000, "u": "ж"}


@pytest.mark.parametrize("kwargs", [
    {"subject": "hi\r\nBcc: victim@x.example"},
    {"subject": "hi\nX: y"},
    {"subject": "tab\there"},
    {"subject": "nul\x00"},
    {"subject": "sep\u2028"},
    {"to": "a@x.example\r\nBcc: v@x.example"},
    {"to": "not an address"},
    {"to": "a@x.example, b@"},
    {"to": []},
    {"from_addr": "bot@agents.example\nBcc: v@x"},
    {"from_addr": "nobody"},
    {"extra_headers": {"X-A": "ok\r\nBcc: v@x"}},
    {"extra_headers": {"X-A\r\nBcc": "v@x"}},
    {"extra_headers": {"Bad Name": "v"}},
    {"extra_headers": {"Message-ID": "<x@y>"}},
    {"payload": {1, 2}},
    {"payload": float("nan")},
    {"payload": "\ud800"},
    {"message_id": "no-brackets"},
])
def test_unsafe_outgoing_is_rejected(kwargs):
    base = {"from_addr": ACCOUNT, "to": "a@x.example", "subject": "s", "payload": {}}
    with pytest.raises(errors.OutgoingRejected):
        msg.compose_request(**{**base, **kwargs})


def test_payload_too_deep_or_circular_is_rejected():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(errors.OutgoingRejected, match="deeper"):
        msg.compose_request(from_addr=ACCOUNT, to="a@x.example", subject="s", payload=deep)
    loop: list = []
    loop.append(loop)
    with pytest.raises(errors.OutgoingRejected, match="JSON"):
        msg.compose_request(from_addr=ACCOUNT, to="a@x.example", subject="s", payload=loop)


def test_recipient_cap():
    many = [f"r{i}@x.example" for i in range(101)]
    with pytest.raises(errors.OutgoingRejected, match="limit of 100"):
        msg.compose_request(from_addr=ACCOUNT, to=many, subject="s", payload=1)
    with pytest.raises(errors.OutgoingRejected, match="limit of 3"):
        msg.compose_request(from_addr=ACCOUNT, to=many[:2], cc=many[2:4], subject="s", payload=1,
                            max_recipients=3)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(blacklist_categories=["Cs"])),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.text(st.characters(blacklist_categories=["Cs"]), max_size=8), kids, max_size=4),
    max_leaves=20)
_subjects = st.text(st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"]), max_size=120)


@settings(max_examples=200, deadline=None)
@given(payload=_json, subject=_subjects, index=st.integers(0, 50))
def test_compose_parse_round_trip(payload, subject, index):
    out = msg.compose_request(from_addr="Bøt <bot@agents.example>", to="peer@x.example",
                              subject=subject, payload=payload, index=index)
    back = msg.parse(out.raw, account="peer@x.example", provider_id="1")
    assert back.payload == payload or json.dumps(back.payload) == json.dumps(payload)
    assert back.payload_error is None
    assert back.subject == subject and back.message_id == out.message_id
    assert back.sender == "bot@agents.example" and back.sender_name == "Bøt"
    assert back.defects == ()
    reply = msg.compose_reply(back, from_addr="peer@x.example", payload=payload, index=index)
    again = msg.parse(reply.raw, account=ACCOUNT, provider_id="2")
    assert again.in_reply_to == out.message_id and again.references == (out.message_id,)
    assert again.payload == back.payload or json.dumps(again.payload) == json.dumps(payload)
