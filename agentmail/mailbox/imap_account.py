"""One IMAP/SMTP account's connection settings and how its secret is obtained.

The secret is read when a connection is made, never stored in the journal and
never part of ``repr`` (so it cannot end up in a log line by accident).
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmail import errors

SECURITY = ("tls", "starttls", "none")


@dataclass(frozen=True)
class ImapAccount:
    """Where and how to log in; ports default from the security mode."""

    address: str
    imap_host: str
    smtp_host: str
    username: str
    imap_security: str = "tls"
    smtp_security: str = "tls"
    imap_port: int | None = None
    smtp_port: int | None = None
    password_env: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    tls_ca_file: str | None = None
    sent_folder: str | None = None  # else the SPECIAL-USE \Sent folder, else "Sent"
    _password: str | None = field(default=None, repr=False, compare=False)  # tests only

    def __post_init__(self) -> None:
        for name in ("imap_security", "smtp_security"):
            if getattr(self, name) not in SECURITY:
                raise errors.ConfigError(f"setting '{name}' must be one of {', '.join(SECURITY)}")
        sources = [s for s in ("password_env", "password_file", "password_command")
                   if getattr(self, s)]
        if len(sources) > 1:
            raise errors.ConfigError(f"account {self.address}: set only one of {', '.join(sources)}")

    @property
    def imap_port_(self) -> int:
        return self.imap_port or (993 if self.imap_security == "tls" else 143)

    @property
    def smtp_port_(self) -> int:
        return self.smtp_port or (465 if self.smtp_security == "tls" else 587)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying context: the system CAs, or only ``tls_ca_file`` for a private CA."""
        try:
            return ssl.create_default_context(cafile=self.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise errors.ConfigError(f"tls_ca_file {self.tls_ca_file}: {exc}") from None

    def password(self) -> str:
        """The password or OAuth2 token, from the one configured source."""
        if self._password is not None:
            return self._password
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise errors.AuthError(f"{self.address}: environment variable "
                                       f"{self.password_env} is not set")
            return value
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise errors.ConfigError(f"{path}: readable by others; chmod 600 it")
                return path.read_text().strip()
            except OSError as exc:
                raise errors.AuthError(f"{self.address}: cannot read password_file: "
                                       f"{exc.strerror}") from None
        if self.password_command:
            try:
                out = subprocess.run(self.password_command, shell=True, capture_output=True,
                                     text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise errors.AuthError(f"{self.address}: password_command failed: {exc}") from None
            if out.returncode != 0 or not out.stdout.strip():
                raise errors.AuthError(f"{self.address}: password_command exited "
                                       f"{out.returncode} without a password")
            return out.stdout.strip()
        raise errors.ConfigError(f"account {self.address}: set password_env, password_file "
                                 "or password_command")

    @classmethod
    def from_block(cls, address: str, block: dict[str, Any]) -> ImapAccount:
        """From an ``accounts`` block of agent_config.json (other keys are ignored here)."""
        names = {f for f in cls.__dataclass_fields__ if not f.startswith("_") and f != "address"}
        kwargs = {k: v for k, v in block.items() if k in names}
        for need in ("imap_host", "smtp_host"):
            if not kwargs.get(need):
                raise errors.ConfigError(f"account {address}: '{need}' is required for imap")
        kwargs.setdefault("username", address)
        try:
            return cls(address=address, **kwargs)
        except TypeError as exc:
            raise errors.ConfigError(f"account {address}: {exc}") from None
