"""The HTTP side: a threading HTTP/1.1 server with keep-alive, and :class:`Emulator`.

Each connection gets a thread; requests on it are answered in order, each
with Content-Length so clients keep the connection. ``X-HTTP-Method-Override``
is honoured before routing (googleapiclient turns GETs longer than 2048
characters into ``POST`` + override with the query string as a form body).
A dropped connection is a reset (SO_LINGER 0) with nothing written, so the
client sees a connection error at once rather than a clean close it might
silently retry.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import struct
import threading
import time
from typing import Any

from agentmail.emulator import errors, faults, quota
from agentmail.emulator.api import Api, Drop, Response, error_response
from agentmail.emulator.store import Store

STOP_GRACE_SECONDS = 2.0
log = logging.getLogger(__name__)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        try:
            self._serve_one()
        except OSError:  # the client went away mid-request
            self.close_connection = True
        except Exception:
            log.exception("emulator: failed to serve %s %s", self.command, self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._write(error_response(errors.internal()))

    def _serve_one(self) -> None:
        api = self.server.api
        verb = self.command
        override = self.headers.get("X-HTTP-Method-Override")
        if override and verb == "POST":
            verb = override.strip().upper()
        path, _, query = self.path.partition("?")
        limit = api.body_limit(verb, path)
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        try:
            length = -1 if chunked else int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -2
        if length < -1:
            self.close_connection = True
            self._write(error_response(errors.invalid("Invalid Content-Length")))
            return
        if length > limit:
            # Not read: the connection cannot be reused.
            self.close_connection = True
            self._write(error_response(errors.ApiError(
                413, "Request payload size exceeds the limit.", "uploadTooLarge")))
            return
        body = self._read_chunked(limit) if chunked else (
            self.rfile.read(length) if length else b"")
        if body is None or (not chunked and len(body) < length):
            self.close_connection = True
            if body is None:
                self._write(error_response(errors.ApiError(
                    413, "Request payload size exceeds the limit.", "uploadTooLarge")))
            return
        content_type = (self.headers.get("Content-Type") or "").lower()
        if override and content_type.startswith("application/x-www-form-urlencoded"):
            query = "&".join(q for q in (query, body.decode("latin-1")) if q)
            body = b""
        try:
            response = api.handle(verb, path, query, self.headers, body)
        except Drop:
            self._drop()
            return
        self._write(response)

    def _read_chunked(self, limit: int) -> bytes | None:
        """A chunked request body; None once it grows past ``limit``."""
        body = bytearray()
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return bytes(body)
            if len(body) + size > limit:
                return None
            body += self.rfile.read(size)
            self.rfile.readline(16)

    def _write(self, response: Response) -> None:
        lines = [f"HTTP/1.1 {response.status} {response.reason}"]
        lines += [f"{k}: {v}" for k, v in response.headers.items()]
        lines.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if self.command == "HEAD" else response.body))

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        # The socket's fd is closed only once its makefile() wrappers are.
        self.wfile.close()
        self.rfile.close()
        self.connection.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.api = api
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished is not news; anything else is logged, not printed.
        log.debug("emulator: connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Wake every connection thread so it closes its socket, then wait a little."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            with self._open_lock:
                if not self._open:
                    return
            time.sleep(0.01)


class Emulator:
    """A Gmail API emulator on ``host:port`` (0 = any free port), in a daemon thread.

    ``db_path`` None keeps everything in memory. ``rate_limit`` is units per user
    per rolling minute, ``concurrency_limit`` in-flight calls per user;
    ``regime`` picks the quota table ("2026-05" or "legacy");
    ``history_retention`` keeps only the last N history records per mailbox;
    ``faults`` are initial fault settings (see :mod:`agentmail.emulator.faults`),
    ``seed`` makes random faults reproducible. Use as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, db_path: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 rate_limit: int | None = None, concurrency_limit: int | None = None,
                 regime: str = "2026-05", history_retention: int | None = None,
                 faults: dict[str, Any] | None = None, seed: int | None = None) -> None:
        quota.check_regime(regime)
        self.host = host
        self.port = port
        self._faults = _faults_module.Faults(seed)
        if faults:
            self._faults.update(**faults)
        self.store = Store(db_path or ":memory:", history_retention=history_retention)
        self.api = Api(self.store, regime=regime, rate_limit=rate_limit,
                       concurrency_limit=concurrency_limit, fault_settings=self._faults)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self.api)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"gmail-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=STOP_GRACE_SECONDS)
        self.store.close()

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (for the CLI)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The host root to give clients as ``api_endpoint`` (no trailing path)."""
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- inspection and control ----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Same as ``GET /emulator/v1/stats``."""
        return self.api.stats.snapshot(self._faults.injected_counts())

    def faults(self) -> dict[str, Any]:
        """Current fault settings (as ``GET /emulator/v1/faults``)."""
        return self._faults.settings()

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault settings (as ``PUT /emulator/v1/faults``); returns them all."""
        return self._faults.update(**settings)

    def clear_faults(self) -> None:
        """Back to no faults at all, counters of injected faults included."""
        self._faults.clear()

    def reset(self) -> None:
        """Drop all accounts, messages, labels, history and counters (faults stay)."""
        self.api.reset()

    def expire_history(self, email: str | None = None) -> None:
        """Forget history so far (one mailbox, or all): older startHistoryIds get 404."""
        self.store.expire_history(email.lower() if email else None)

    def deliver(self, raw: bytes, to: str,
                label_ids: tuple[str, ...] | list[str] = ("INBOX", "UNREAD")) -> dict[str, Any]:
        """Put ``raw`` into ``to``'s mailbox as is (threaded by its headers); test helper."""
        row = self.store.insert(to.lower(), raw, label_ids=list(label_ids))
        return {"id": row["id"], "threadId": row["thread_id"], "labelIds": row["labels"]}


_faults_module = faults
