"""The trust and limit settings reach the policy and the parser."""

from __future__ import annotations

import json

import pytest

from agentmail import errors
from agentmail.config import load_settings
from agentmail.screening import parse_limits, trust_policy


def test_trust_and_limit_keys_reach_the_policy_and_parse_limits(tmp_path):
    path = tmp_path / "agent_config.json"
    path.write_text(json.dumps({"max_message_bytes": 5000, "max_json_bytes": 400,
                                "max_json_depth": 8, "max_references": 7,
                                "max_header_line": 300, "max_mime_parts": 9,
                                "max_mime_depth": 3, "allow_to": ["@corp.example"],
                                "error_replies": True, "answer_agent_requests": False}))
    settings = load_settings(path, environ={"AGENTMAIL_MAX_RECIPIENTS": "4"})
    policy = trust_policy(settings)
    assert (policy.max_size, policy.error_replies, policy.answer_agent_requests,
            policy.allow_to) == (5000, True, False, ("@corp.example",))
    limits = parse_limits(settings)
    assert (limits.max_json_bytes, limits.max_json_depth, limits.max_references,
            limits.max_header_line, limits.max_parts, limits.max_mime_depth) == (
        400, 8, 7, 300, 9, 3)
    assert policy.limits == limits and settings.max_recipients == 4


def test_the_defaults_are_the_documented_ones(tmp_path):
    settings = load_settings(tmp_path / "absent.json", environ={})
    policy = trust_policy(settings)
    assert policy.max_size == 10_000_000 and policy.limits == parse_limits(settings)
    assert (policy.error_replies, policy.allow_to, policy.answer_agent_requests) == (
        False, (), True)
    assert settings.max_recipients == 100


@pytest.mark.parametrize(("key", "value", "match"), [
    ("max_json_depth", 0, "max_json_depth must be at least 1"),
    ("allow_to", ["not an entry"], "invalid allow_to entry"),
])
def test_bad_trust_settings_stop_with_a_config_error(tmp_path, key, value, match):
    path = tmp_path / "agent_config.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(errors.ConfigError, match=match):
        trust_policy(load_settings(path, environ={}))
