"""Settings precedence and every kind of bad configuration."""

from __future__ import annotations

import json

import pytest

from agentmail import errors
from agentmail.config import Settings, load_settings, starter_config


def _write(tmp_path, data) -> str:
    path = tmp_path / "agent_config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_defaults_apply_without_a_config_file(tmp_path):
    s = load_settings(tmp_path / "absent.json", environ={})
    assert s.check_interval == 60.0 and s.max_attempts == 5
    assert s.db_url == str(tmp_path / "agentmail.db")  # next to the config file


def test_the_seed_projects_keys_are_accepted(tmp_path):
    path = _write(tmp_path, {"credentials_path": "creds.json", "check_interval": 30,
                             "max_messages": 10})
    s = load_settings(path, environ={})
    assert (s.credentials_path, s.check_interval, s.max_messages) == ("creds.json", 30.0, 10)


def test_environment_beats_file_and_flags_beat_both(tmp_path):
    path = _write(tmp_path, {"check_interval": 30, "max_attempts": 3, "allow_from": ["@a.com"]})
    env = {"AGENTMAIL_CHECK_INTERVAL": "20", "AGENTMAIL_MAX_ATTEMPTS": "4",
           "AGENTMAIL_ALLOW_FROM": "@b.com, x@c.com"}
    s = load_settings(path, environ=env, overrides={"check_interval": 10, "max_attempts": None})
    assert s.check_interval == 10.0  # flag
    assert s.max_attempts == 4  # environment (the flag was not given)
    assert s.allow_from == ("@b.com", "x@c.com")


def test_the_config_path_can_come_from_the_environment(tmp_path):
    path = _write(tmp_path, {"max_messages": 7})
    assert load_settings(None, environ={"AGENTMAIL_CONFIG": path}).max_messages == 7


def test_settings_are_frozen(tmp_path):
    s = load_settings(tmp_path / "absent.json", environ={})
    with pytest.raises(AttributeError):
        s.max_attempts = 9  # type: ignore[misc]


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", r"invalid JSON at line 1 column 2"),
    ("[1, 2]", r"must hold a JSON object"),
    ({"chek_interval": 5}, r"unknown key 'chek_interval' \(known keys: .*check_interval"),
    ({"check_interval": "fast"}, r"key 'check_interval' must be a number, got \"fast\""),
    ({"max_attempts": 2.5}, r"key 'max_attempts' must be a whole number"),
    ({"require_auth": "yes"}, r"key 'require_auth' must be true or false"),
    ({"allow_from": "a@b.com"}, r"key 'allow_from' must be a list of strings"),
])
def test_bad_config_names_the_file_the_key_and_what_is_expected(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(errors.ConfigError, match=expected) as info:
        load_settings(path, environ={})
    assert path in str(info.value) and info.value.exit_code == 2


def test_an_unreadable_config_file_is_a_clear_error(tmp_path):
    path = tmp_path / "agent_config.json"
    path.mkdir()  # unreadable as a file, whoever runs the test (root ignores file modes)
    with pytest.raises(errors.ConfigError, match="cannot read it"):
        load_settings(path, environ={})


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "agent_config.json"
    path.write_bytes(b'{"db": "\xff\xfe"}')
    with pytest.raises(errors.ConfigError, match="cannot read it"):
        load_settings(path, environ={})


def test_bad_environment_values_name_the_variable(tmp_path):
    with pytest.raises(errors.ConfigError, match="AGENTMAIL_MAX_ATTEMPTS must be a whole number"):
        load_settings(tmp_path / "absent.json", environ={"AGENTMAIL_MAX_ATTEMPTS": "many"})
    with pytest.raises(errors.ConfigError, match="AGENTMAIL_REQUIRE_AUTH must be true or false"):
        load_settings(tmp_path / "absent.json", environ={"AGENTMAIL_REQUIRE_AUTH": "maybe"})


def test_the_starter_config_loads_back(tmp_path):
    path = _write(tmp_path, starter_config())
    assert load_settings(path, environ={}).max_attempts == 5


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("max_attempts", -1, "max_attempts must be at least 1, got -1"),
    ("concurrency", 0, "concurrency must be at least 1, got 0"),
    ("check_interval", -5, "check_interval must be at least 0, got -5"),
    ("handler_timeout", -1, "handler_timeout must be at least 0"),
    ("lease_seconds", 0, "lease_seconds must be more than 0"),
    ("max_messages", 0, "max_messages must be at least 1"),
    ("emulator", "not-a-url", "must be an http:// or https:// URL"),
    ("emulator", "http://127.0.0.1:99999", "must be an http:// or https:// URL"),
    ("emulator", "http://bad_host", "must be an http:// or https:// URL"),
    ("handler", "mymodule", "must look like package.module:ClassName"),
    ("db", "mysql://u@h/db", "the journal runs on SQLite"),
    ("crash_at", "after_processed:x", "must look like after_processed:3"),
])
def test_every_source_is_validated_by_the_same_rules(tmp_path, key, value, expected):
    path = _write(tmp_path, {key: value})
    with pytest.raises(errors.ConfigError, match=expected):
        load_settings(path, environ={})
    with pytest.raises(errors.ConfigError, match=f"environment: AGENTMAIL_{key.upper()}"):
        load_settings(tmp_path / "absent.json", environ={f"AGENTMAIL_{key.upper()}": str(value)})
    with pytest.raises(errors.ConfigError, match="command line: --flag"):
        load_settings(tmp_path / "absent.json", environ={}, overrides={key: value},
                      flags={key: "--flag"})
    with pytest.raises(errors.ConfigError, match=f"setting '{key}'"):
        Settings(**{key: value})


def test_good_values_pass_and_handler_timeout_defaults_to_off(tmp_path):
    s = load_settings(_write(tmp_path, {"emulator": "http://127.0.0.1:8025",
                                        "handler": "pkg.mod:Agent", "handler_timeout": 30,
                                        "db": "postgresql+psycopg://u@h/db"}), environ={})
    assert (s.emulator, s.handler, s.handler_timeout) == ("http://127.0.0.1:8025",
                                                          "pkg.mod:Agent", 30.0)
    assert Settings().handler_timeout == 0.0


def test_a_named_config_file_must_exist(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(errors.ConfigError, match="no such config file"):
        load_settings(missing, environ={}, must_exist=True)
    with pytest.raises(errors.ConfigError, match=r"\$AGENTMAIL_CONFIG"):
        load_settings(None, environ={"AGENTMAIL_CONFIG": str(missing)}, must_exist=True)
    assert load_settings(missing, environ={}).max_attempts == 5  # the library default


def test_a_broken_file_can_be_ignored_to_replace_it(tmp_path):
    path = _write(tmp_path, "{oops")
    assert load_settings(path, environ={}, read_file=False).config_path == tmp_path / \
        "agent_config.json"
