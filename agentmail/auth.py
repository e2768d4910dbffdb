"""OAuth for real Gmail: authorize an agent's mailbox once, load (and refresh) its token.

Who calls it: ``agentmail auth --email X`` (:func:`authorize`) and every command
that talks to real Gmail (:func:`load_credentials`). The emulator needs none of it.

Token files hold a refresh token: they are created with mode 0600 in a 0700
directory, and their contents are never logged or journaled.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import InstalledAppFlow

from agentmail import errors

#: Everything agentmail does -- read, label, send -- and nothing more (no permanent delete).
SCOPES = ["https://www.googleapis.com/auth/gmail.modify"]
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
README_SECTION = 'the README section "Using real Gmail"'
REFRESH_TIMEOUT = 30  # seconds

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def token_path(tokens_dir: Path | str, email: str) -> Path:
    """Where the token of the mailbox ``email`` is kept."""
    return Path(tokens_dir) / f"{_UNSAFE.sub('_', email.strip().lower())}.json"


class _Flow(InstalledAppFlow):
    """InstalledAppFlow that shows the authorization URL through ``echo``."""

    echo: Callable[[str], object] = print

    def authorization_url(self, **kwargs: Any) -> tuple[str, str]:
        url, state = super().authorization_url(**kwargs)
        self.echo(f"Open this URL in a browser signed in as the agent's Google account:\n{url}")
        return url, state


def authorize(email: str, credentials_path: Path | str, tokens_dir: Path | str, *,
              open_browser: bool = True, port: int = 0,
              echo: Callable[[str], object] = print) -> Path:
    """Run Google's installed-app consent flow for ``email``; save and return the token file.

    ``open_browser=False`` only prints the URL (for a machine without a browser:
    forward ``port`` to it, or run the flow elsewhere and copy the token file).
    """
    client_secrets = _client_secrets(credentials_path)
    flow = _Flow.from_client_secrets_file(str(client_secrets), scopes=SCOPES)
    flow.echo = echo
    creds = flow.run_local_server(host="localhost", port=port, open_browser=open_browser,
                                  authorization_prompt_message=None, login_hint=email)
    if not creds.refresh_token:
        raise errors.AuthError(
            f"Google returned no refresh token for {email}; remove agentmail's access at "
            "https://myaccount.google.com/permissions and run "
            f"`agentmail auth --email {email}` again")
    path = token_path(tokens_dir, email)
    _save(path, creds)
    echo(f"Saved the token for {email} to {path}")
    return path


def load_credentials(email: str, tokens_dir: Path | str,
                     credentials_path: Path | str | None = None) -> Credentials:
    """The saved credentials of ``email``, refreshed (and saved again) when expired.

    Raises :class:`~agentmail.errors.AuthError` when there is no token, the
    client secrets are missing, or Google refuses the refresh token.
    """
    path = token_path(tokens_dir, email)
    if not path.is_file():
        if credentials_path is not None:
            _client_secrets(credentials_path)
        raise errors.AuthError(f"no token for {email}: run `agentmail auth --email {email}`")
    creds = _read(path, email)
    if creds.valid:
        return creds
    if not (creds.refresh_token and creds.client_id and creds.client_secret):
        if credentials_path is not None:
            _client_secrets(credentials_path)
        raise errors.AuthError(
            f"the token for {email} in {path} cannot be refreshed: "
            f"run `agentmail auth --email {email}` again")
    _refresh(creds, email)
    _save(path, creds)
    return creds


def _client_secrets(credentials_path: Path | str) -> Path:
    path = Path(credentials_path)
    if not path.is_file():
        raise errors.AuthError(
            f"OAuth client file {path} not found: create an OAuth client of type "
            f"'Desktop app' and download its JSON there, as {README_SECTION} explains")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise errors.AuthError(
            f"OAuth client file {path} is not readable JSON ({exc}): download it again from "
            f"the Google Cloud console, as {README_SECTION} explains") from exc
    kind = next(iter(info), None) if isinstance(info, dict) and len(info) == 1 else None
    if kind == "web":
        raise errors.AuthError(
            f"OAuth client file {path} is for a 'Web application'; agentmail needs an OAuth "
            f"client of type 'Desktop app' (create one, as {README_SECTION} explains)")
    if kind != "installed" or not isinstance(info[kind], dict) or not {
            "client_id", "client_secret"} <= set(info[kind]):
        raise errors.AuthError(
            f"OAuth client file {path} is not an OAuth client of type 'Desktop app' (expected "
            f'{{"installed": {{"client_id": …, "client_secret": …}}}}), as {README_SECTION} '
            "explains")
    return path


def _read(path: Path, email: str) -> Credentials:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        expiry = info.get("expiry")
        return Credentials(
            token=info.get("token"),
            refresh_token=info.get("refresh_token"),
            # from_authorized_user_info would force Google's token URI; keep the file's.
            token_uri=info.get("token_uri") or GOOGLE_TOKEN_URI,
            client_id=info.get("client_id"),
            client_secret=info.get("client_secret"),
            scopes=info.get("scopes") or SCOPES,
            # no expiry recorded: treat the access token as expired, refresh first
            expiry=(datetime.strptime(expiry.rstrip("Z").split(".")[0], "%Y-%m-%dT%H:%M:%S")
                    if expiry else datetime(1970, 1, 1)),
            universe_domain=info.get("universe_domain") or "googleapis.com",
            account=info.get("account") or "",
        )
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise errors.AuthError(
            f"the token file {path} for {email} is unreadable ({type(exc).__name__}): "
            f"run `agentmail auth --email {email}` again") from exc


def _refresh(creds: Credentials, email: str) -> None:
    http = httplib2.Http(timeout=REFRESH_TIMEOUT)
    try:
        creds.refresh(google_auth_httplib2.Request(http))
    except google.auth.exceptions.RefreshError as exc:
        if "invalid_grant" in str(exc):
            raise errors.AuthError(
                f"the refresh token for {email} has expired or was revoked (Google expires "
                "them after 7 days for apps in 'Testing' mode): run "
                f"`agentmail auth --email {email}` again") from exc
        if exc.retryable:
            raise errors.MailboxUnavailable(
                f"refreshing the access token for {email} failed for now; retry later"
            ) from exc
        raise errors.AuthError(
            f"Google refused to refresh the token for {email} ({_oauth_error(exc)}): run "
            f"`agentmail auth --email {email}` again") from exc
    except google.auth.exceptions.TransportError as exc:
        raise errors.MailboxUnavailable(
            f"could not reach Google's token endpoint to refresh {email}'s token") from exc
    finally:
        http.close()


def _oauth_error(exc: google.auth.exceptions.RefreshError) -> str:
    # the OAuth error code only: the response body is not ours to print in full
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return type(exc).__name__


def _save(path: Path, creds: Credentials) -> None:
    """Write the token atomically, readable by its owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(creds.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT honours the umask, and an old tmp keeps its mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

