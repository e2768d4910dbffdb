"""Session-scoped real Dovecot + Postfix; a fresh account per test (see servers.py)."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmail.mailbox.imap_account import ImapAccount
from tests.imap import servers

_n = itertools.count()


@pytest.fixture(scope="session")
def mail_servers() -> Iterator[servers.MailServers]:
    reason = servers.missing_binaries()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="agentmail-mail-", dir="/tmp"))
    s, stops = servers.start(d)
    try:
        yield s
    finally:
        servers.stop(stops, d)


def make_account(s: servers.MailServers, password: str = servers.PASSWORD,
                 **kw: object) -> ImapAccount:
    address = s.user(next(_n))
    fields: dict[str, object] = dict(
        address=address, imap_host="127.0.0.1", imap_port=s.imaps_port, imap_security="tls",
        smtp_host="127.0.0.1", smtp_port=s.submission_port, smtp_security="starttls",
        username=address, tls_ca_file=str(s.cert), _password=password)
    fields.update(kw)
    return ImapAccount(**fields)  # type: ignore[arg-type]


@pytest.fixture
def account(mail_servers: servers.MailServers) -> ImapAccount:
    return make_account(mail_servers)
