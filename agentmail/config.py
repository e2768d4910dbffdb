"""Settings: resolved once from the config file, AGENTMAIL_* variables and flags, then frozen.

Precedence, lowest to highest: defaults < `agent_config.json` < environment < command-line
flags. This module is the only reader of os.environ. Relative paths in the config file are
relative to the file's folder, so an agent folder can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentmail import errors

DEFAULT_CONFIG = "agent_config.json"
ENV_PREFIX = "AGENTMAIL_"


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know, after precedence has been applied."""

    config_path: Path = Path(DEFAULT_CONFIG)
    # The seed project's keys
    credentials_path: str = "credentials.json"  # OAuth client of a Google Cloud project
    check_interval: float = 60.0  # seconds between polls of `agentmail run`
    max_messages: int = 100  # messages fetched per poll at most
    # Where things live
    db: str = "agentmail.db"  # journal: a path (SQLite) or a SQLAlchemy URL
    tokens_dir: str = "tokens"  # one OAuth token per agent address, mode 0600
    emulator: str | None = None  # Gmail API emulator URL instead of Google
    handler: str | None = None  # "package.module:AgentClass"
    # Gmail labels mirroring the journal's states
    label_processing: str = "agent-processing"
    label_done: str = "agent-done"
    label_failed: str = "agent-failed"
    label_rejected: str = "agent-rejected"
    # Retries, leases, pacing
    max_attempts: int = 5
    backoff_base: float = 2.0  # seconds; doubled per attempt
    backoff_max: float = 600.0  # seconds
    lease_seconds: float = 300.0  # a claim's lease; a live run extends it
    concurrency: int = 1  # handlers run in parallel for different conversations
    handler_timeout: float = 0.0  # seconds one handler call may take before it fails; 0 = off
    quota_units_per_minute: int = 6000  # Gmail's per-user limit for projects since 2026-05
    # Trust
    allow_from: tuple[str, ...] = ()  # addresses, @domain, *.domain; empty = any authenticated
    deny_from: tuple[str, ...] = ()
    require_auth: bool = True  # DKIM/SPF/DMARC must pass per the provider
    authserv_id: str = "mx.google.com"
    reject_non_json: bool = False  # else handlers get non-JSON mail with payload=None
    max_replies_per_conversation: int = 20
    answer_agent_requests: bool = True  # agentmail requests (auto-generated) may be answered
    error_replies: bool = False  # structured error reply to authenticated, allowed bad JSON
    allow_to: tuple[str, ...] = ()  # outgoing recipients; empty = anyone
    # Limits on received mail (see agentmail.message.ParseLimits) and on outgoing mail
    max_message_bytes: int = 10_000_000  # raw size of one received message
    max_json_bytes: int = 1_000_000
    max_json_depth: int = 64
    max_references: int = 100  # References kept, the last N
    max_header_line: int = 8192  # characters of one header value
    max_mime_parts: int = 100
    max_mime_depth: int = 20
    max_recipients: int = 100  # To + Cc of one outgoing message (Gmail's cap is 100)
    # Days a finished message's body stays in the journal (`agentmail journal compact`)
    body_retention_days: float = 7.0
    # Testing hook, never for production: "after_processed:3" makes a run SIGKILL itself the
    # 3rd time it reaches that step boundary (the checkpoint names of agentmail.pipeline), so
    # tests can crash a real `agentmail run` at an exact point. Env: AGENTMAIL_CRASH_AT.
    crash_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _FIELDS:
            problem = check(name, getattr(self, name))
            if problem:
                raise errors.ConfigError(f"setting '{name}' {problem}")

    def path(self, value: str) -> Path:
        """Resolve a path setting relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.config_path.parent / p

    @property
    def db_url(self) -> str:
        return self.db if "://" in self.db else str(self.path(self.db))


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("config_path", "extra")}
_NAMES = {float: "a number", int: "a whole number", str: "a string", bool: "true or false",
          tuple: "a list of strings"}


# --- validation: one rule per setting, applied to every source and to Settings itself -----

_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_DB_SCHEME = re.compile(r"^([a-z][a-z0-9]*)(?:\+[a-z0-9_]+)?$")
SUPPORTED_DATABASES = ("sqlite", "postgresql")


def _at_least(low: float) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        return None if value >= low else f"must be at least {low:g}, got {value:g}"
    return rule


def _positive(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None if value > 0 else f"must be more than 0, got {value:g}"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host))


def _url(value: Any) -> str | None:
    if value is None:
        return None
    problem = f"must be an http:// or https:// URL such as http://127.0.0.1:8025, got {value!r}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError when the port is not 0..65535
    except ValueError as exc:
        return f"{problem} ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname or not _valid_host(
            parts.hostname):
        return problem
    if parts.query or parts.fragment:
        return f"{problem} (without ?query or #fragment)"
    return None


def _handler(value: Any) -> str | None:
    if value is None or _HANDLER.match(value):
        return None
    return f"must look like package.module:ClassName, got {value!r}"


def _crash_at(value: Any) -> str | None:
    if value is None:
        return None
    name, _, count = value.partition(":")
    if name and (not count or (count.isdigit() and int(count) >= 1)):
        return None
    return f"must look like after_processed:3, got {value!r}"


def _db(value: Any) -> str | None:
    if not value.strip():
        return "must name a SQLite file or a database URL"
    if "://" not in value:
        return None
    scheme = value.split("://", 1)[0]
    match = _DB_SCHEME.match(scheme)
    if match and match.group(1) in SUPPORTED_DATABASES:
        return None
    if scheme in ("postgres", "pg"):
        return f"{value!r}: write the scheme as postgresql+psycopg://"
    return (f"{value!r}: the journal runs on SQLite (a file path) or PostgreSQL "
            "(postgresql+psycopg://user@host/db, with agentmail-cli[postgres] installed)")


def _not_empty(value: Any) -> str | None:
    return None if value.strip() else "must not be empty"


_RULES: dict[str, Callable[[Any], str | None]] = {
    "credentials_path": _not_empty, "tokens_dir": _not_empty, "db": _db,
    "check_interval": _at_least(0), "max_messages": _at_least(1), "emulator": _url,
    "handler": _handler, "label_processing": _not_empty, "label_done": _not_empty,
    "label_failed": _not_empty, "label_rejected": _not_empty, "max_attempts": _at_least(1),
    "backoff_base": _at_least(0), "backoff_max": _at_least(0), "lease_seconds": _positive,
    "concurrency": _at_least(1), "handler_timeout": _at_least(0),
    "quota_units_per_minute": _at_least(0), "authserv_id": _not_empty,
    "max_replies_per_conversation": _at_least(0), "max_message_bytes": _at_least(1),
    "max_json_bytes": _at_least(1), "max_json_depth": _at_least(1), "max_references": _at_least(0),
    "max_header_line": _at_least(1), "max_mime_parts": _at_least(1),
    "max_mime_depth": _at_least(1), "max_recipients": _at_least(1), "crash_at": _crash_at,
    "body_retention_days": _at_least(0),
}


def check(name: str, value: Any) -> str | None:
    """What is wrong with `value` for the setting `name` ("must be …"), or None if it is fine."""
    rule = _RULES.get(name)
    return rule(value) if rule is not None else None


def _checked(name: str, value: Any, where: str) -> Any:
    problem = check(name, value)
    if problem:
        raise errors.ConfigError(f"{where} {problem}")
    return value


def _kind(name: str) -> type:
    default = _FIELDS[name].default
    return str if default is None else type(default)


def _coerce(name: str, value: Any, where: str, label: str | None = None) -> Any:
    """`value` as the setting's type, checked; errors start with `label` (or where + key)."""
    kind = _kind(name)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str) or (value is None and _FIELDS[name].default is None),
        tuple: isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        raise errors.ConfigError(f"{label or f'{where}: key {name!r}'} must be {_NAMES[kind]}, "
                                 f"got {json.dumps(value)}")
    if kind is float:
        value = float(value)
    elif kind is tuple:
        value = tuple(value)
    return _checked(name, value, label or f"{where}: {name}")


def _from_env_text(name: str, text: str, var: str) -> Any:
    kind = _kind(name)
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return text.lower() in ("1", "true", "yes")
        if kind is tuple:
            value: Any = tuple(v.strip() for v in text.split(",") if v.strip())
        else:
            value = kind(text)
    except ValueError:
        raise errors.ConfigError(f"environment: {var} must be {_NAMES[kind]}, got {text!r}"
                                 ) from None
    return _checked(name, value, f"environment: {var}")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"{path}: cannot read it ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                                 f"{exc.msg}") from exc
    if not isinstance(data, dict):
        raise errors.ConfigError(f"{path}: must hold a JSON object of settings")
    for key in data:
        if key not in _FIELDS:
            raise errors.ConfigError(f"{path}: unknown key '{key}' "
                                     f"(known keys: {', '.join(sorted(_FIELDS))})")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def load_settings(config_path: str | Path | None = None, *,
                  overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None,
                  flags: Mapping[str, str] | None = None,
                  must_exist: bool = False, read_file: bool = True) -> Settings:
    """Resolve settings: defaults < config file < AGENTMAIL_* environment < overrides (flags).

    `flags` names the command-line option of each override, for error messages.
    `must_exist`: a config file named explicitly (argument or $AGENTMAIL_CONFIG) that does
    not exist is an error rather than "no file, defaults". `read_file=False` ignores the
    file's contents (`agentmail init --force` replacing a broken one).
    """
    env = os.environ if environ is None else environ
    named = config_path or env.get(ENV_PREFIX + "CONFIG")
    path = Path(named or DEFAULT_CONFIG).expanduser()
    if must_exist and named and not path.exists():
        how = "--config" if config_path else f"${ENV_PREFIX}CONFIG"
        raise errors.ConfigError(f"{path}: no such config file (named by {how}); "
                                 "`agentmail init` writes one")
    values: dict[str, Any] = read_config_file(path) if read_file else {}
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = _from_env_text(name, env[var], var)
    for name, value in (overrides or {}).items():
        if name not in _FIELDS:
            raise ValueError(f"unknown setting {name!r}")
        if value is not None:
            flag = (flags or {}).get(name)
            values[name] = _coerce(name, list(value) if isinstance(value, tuple) else value,
                                   "command line", label=f"command line: {flag}" if flag
                                   else None)
    return Settings(config_path=path.absolute(), **values)


def starter_config() -> dict[str, Any]:
    """The file `agentmail init` writes: the keys people change most, at their defaults."""
    defaults = Settings()
    keys = ("credentials_path", "check_interval", "max_messages", "db", "tokens_dir",
            "max_attempts", "allow_from", "require_auth")
    return {k: list(v) if isinstance(v := getattr(defaults, k), tuple) else v for k in keys}
