"""SMTP submission for the IMAP adapter: one authenticated session per message.

Never retried here: after a lost connection the message may have gone out, and only
``send_exactly_once`` (which asks ``find_sent`` first) may try again.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils as eu
import smtplib
import ssl

from agentmail import errors
from agentmail.mailbox.imap_account import ImapAccount

_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _recipients(raw: bytes) -> tuple[str, list[str]]:
    head = _PARSER.parsebytes(raw)
    rcpts = [a for _, a in eu.getaddresses(head.get_all("To", []) + head.get_all("Cc", [])
                                           + head.get_all("Bcc", [])) if a]
    sender = eu.parseaddr(str(head.get("From") or ""))[1]
    return sender, rcpts


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def submit(account: ImapAccount, raw: bytes, *, timeout: float = 30.0) -> str:
    """Submit ``raw`` (headers decide the envelope); return its Message-ID."""
    head = _PARSER.parsebytes(raw)
    message_id = str(head.get("Message-ID") or "").strip()
    sender, rcpts = _recipients(raw)
    if not rcpts:
        raise errors.MailboxRejected(f"{account.address}: message has no recipients")
    host, port = account.smtp_host, account.smtp_port_
    ctx = account.ssl_context() if account.smtp_security != "none" else None
    try:
        if account.smtp_security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
            if account.smtp_security == "starttls":
                smtp.starttls(context=ctx)
        with smtp:
            try:
                smtp.login(account.username, account.password())
            except smtplib.SMTPAuthenticationError:
                raise errors.AuthError(f"{account.address}: the SMTP server {host} refused the "
                                       f"login of {account.username}: check the password") from None
            refused = smtp.sendmail(sender or account.address, rcpts, raw)
            if refused and len(refused) == len(rcpts):
                raise errors.MailboxRejected(f"{account.address}: all recipients refused")
    except smtplib.SMTPRecipientsRefused as exc:
        raise errors.MailboxRejected(f"{account.address}: recipients refused: "
                                     f"{', '.join(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        cls = errors.MailboxRejected if 500 <= exc.smtp_code < 600 else errors.MailboxUnavailable
        raise cls(f"{account.address}: SMTP {exc.smtp_code}: "
                  f"{_text(exc.smtp_error)}") from None
    except ssl.SSLCertVerificationError as exc:
        raise errors.MailboxUnavailable(f"{account.address}: TLS certificate of {host}:{port} "
                                        f"does not verify ({exc.verify_message}); set tls_ca_file "
                                        "for a private CA") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise errors.MailboxUnavailable(f"{account.address}: SMTP {host}:{port}: {exc}") from None
    return message_id
