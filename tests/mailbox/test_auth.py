"""OAuth token handling, offline: a tiny local HTTP server plays Google's token endpoint."""

from __future__ import annotations

import json
import stat
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentmail import auth, errors

EMAIL = "agent@example.com"


class TokenEndpoint:
    """Answers every POST with ``status`` and ``body``; records the form fields it got."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict = {"access_token": "fresh-access", "expires_in": 3600,
                           "token_type": "Bearer"}
        self.requests: list[dict[str, list[str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                endpoint.requests.append(urllib.parse.parse_qs(self.rfile.read(length).decode()))
                data = json.dumps(endpoint.body).encode()
                self.send_response(endpoint.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> TokenEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as endpoint:
        yield endpoint


def write_token(tokens_dir: Path, token_uri: str, *, expiry: datetime | None) -> Path:
    info = {"token": "old-access", "refresh_token": "refresh-123", "token_uri": token_uri,
            "client_id": "client-id", "client_secret": "client-secret", "scopes": auth.SCOPES}
    if expiry is not None:
        info["expiry"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = auth.token_path(tokens_dir, EMAIL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    return path


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_path_is_one_file_per_address(tmp_path: Path) -> None:
    assert auth.token_path(tmp_path, "Agent@Example.com") == tmp_path / "agent@example.com.json"
    assert auth.token_path(tmp_path, "../evil/x@y").parent == tmp_path


def test_missing_token_says_to_run_auth(tmp_path: Path) -> None:
    with pytest.raises(errors.AuthError, match=f"no token for {EMAIL}: run `agentmail auth "
                                               f"--email {EMAIL}`"):
        auth.load_credentials(EMAIL, tmp_path / "tokens")


def test_missing_client_secrets_points_to_readme(tmp_path: Path) -> None:
    with pytest.raises(errors.AuthError, match='README section "Using real Gmail"'):
        auth.load_credentials(EMAIL, tmp_path / "tokens", tmp_path / "credentials.json")
    with pytest.raises(errors.AuthError, match='README section "Using real Gmail"'):
        auth.authorize(EMAIL, tmp_path / "credentials.json", tmp_path / "tokens",
                       open_browser=False)


def test_valid_token_loads_without_network(tmp_path: Path) -> None:
    write_token(tmp_path, "http://127.0.0.1:9/unreachable", expiry=utcnow() + timedelta(hours=1))
    creds = auth.load_credentials(EMAIL, tmp_path)
    assert creds.valid and creds.token == "old-access"
    assert creds.refresh_token == "refresh-123"


def test_expired_token_is_refreshed_and_saved_0600(tmp_path: Path,
                                                   token_endpoint: TokenEndpoint) -> None:
    tokens = tmp_path / "tokens"
    path = write_token(tokens, token_endpoint.url, expiry=utcnow() - timedelta(minutes=5))
    path.chmod(0o644)
    creds = auth.load_credentials(EMAIL, tokens)
    assert creds.token == "fresh-access" and creds.valid
    assert token_endpoint.requests[0]["grant_type"] == ["refresh_token"]
    assert token_endpoint.requests[0]["refresh_token"] == ["refresh-123"]
    saved = json.loads(path.read_text())
    assert saved["token"] == "fresh-access" and saved["refresh_token"] == "refresh-123"
    assert saved["token_uri"] == token_endpoint.url
    assert mode(path) == 0o600 and mode(tokens) == 0o700
    # round trip: the saved token loads again, valid, with no second refresh
    again = auth.load_credentials(EMAIL, tokens)
    assert again.token == "fresh-access" and len(token_endpoint.requests) == 1


def test_token_without_expiry_is_refreshed_first(tmp_path: Path,
                                                 token_endpoint: TokenEndpoint) -> None:
    write_token(tmp_path, token_endpoint.url, expiry=None)
    assert auth.load_credentials(EMAIL, tmp_path).token == "fresh-access"


def test_invalid_grant_says_to_authorize_again(tmp_path: Path,
                                               token_endpoint: TokenEndpoint) -> None:
    token_endpoint.status = 400
    token_endpoint.body = {"error": "invalid_grant",
                           "error_description": "Token has been expired or revoked."}
    path = write_token(tmp_path, token_endpoint.url, expiry=utcnow() - timedelta(minutes=5))
    before = path.read_text()
    with pytest.raises(errors.AuthError) as caught:
        auth.load_credentials(EMAIL, tmp_path)
    message = str(caught.value)
    assert "expired or was revoked" in message and "7 days" in message
    assert f"run `agentmail auth --email {EMAIL}` again" in message
    assert "refresh-123" not in message
    assert caught.value.__cause__ is not None
    assert path.read_text() == before


def test_token_endpoint_outage_is_retryable(tmp_path: Path,
                                            token_endpoint: TokenEndpoint) -> None:
    token_endpoint.status = 400
    token_endpoint.body = {"error": "temporarily_unavailable"}
    write_token(tmp_path, token_endpoint.url, expiry=utcnow() - timedelta(minutes=5))
    with pytest.raises(errors.MailboxUnavailable):
        auth.load_credentials(EMAIL, tmp_path)


def test_unreadable_token_file(tmp_path: Path) -> None:
    auth.token_path(tmp_path, EMAIL).write_text("{not json")
    with pytest.raises(errors.AuthError, match="unreadable"):
        auth.load_credentials(EMAIL, tmp_path)


def test_authorize_runs_the_installed_app_flow(tmp_path: Path, token_endpoint: TokenEndpoint,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole consent flow offline: our 'browser' follows the redirect to the local server."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the token endpoint is plain http
    token_endpoint.body = {"access_token": "first-access", "refresh_token": "first-refresh",
                           "expires_in": 3600, "token_type": "Bearer",
                           "scope": " ".join(auth.SCOPES)}
    secrets = tmp_path / "credentials.json"
    secrets.write_text(json.dumps({"installed": {
        "client_id": "client-id", "client_secret": "client-secret",
        "auth_uri": "http://127.0.0.1:9/auth", "token_uri": token_endpoint.url,
        "redirect_uris": ["http://localhost"]}}))
    lines: list[str] = []
    redirected = threading.Event()

    def browser(line: str) -> None:
        lines.append(line)
        if "http://127.0.0.1:9/auth" not in line:
            return
        url = line.split("\n")[-1]
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        assert query["scope"] == auth.SCOPES and query["login_hint"] == [EMAIL]
        assert query["access_type"] == ["offline"]
        redirect = query["redirect_uri"][0]
        state = query["state"][0]

        def follow() -> None:
            target = f"{redirect}?code=the-code&state={state}&scope={auth.SCOPES[0]}"
            with urllib.request.urlopen(target, timeout=10) as response:
                response.read()
            redirected.set()

        threading.Thread(target=follow, daemon=True).start()

    tokens = tmp_path / "tokens"
    path = auth.authorize(EMAIL, secrets, tokens, open_browser=False, port=0, echo=browser)
    assert redirected.wait(10)
    assert path == auth.token_path(tokens, EMAIL)
    saved = json.loads(path.read_text())
    assert saved["refresh_token"] == "first-refresh" and saved["token"] == "first-access"
    assert mode(path) == 0o600 and mode(tokens) == 0o700
    assert token_endpoint.requests[0]["code"] == ["the-code"]
    assert not any("first-refresh" in line or "first-access" in line for line in lines)
    assert auth.load_credentials(EMAIL, tokens).token == "first-access"
