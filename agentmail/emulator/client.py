"""googleapiclient plumbing for an emulator account.

The two traps (gmail-api-notes.md): ``api_endpoint`` must be the host root,
and batches ignore it, so the batch URI is passed explicitly.
"""

from __future__ import annotations

from typing import Any

from google.oauth2.credentials import Credentials
from googleapiclient import discovery
from googleapiclient.http import BatchHttpRequest

BATCH_PATH = "/batch/gmail/v1"


def credentials(address: str) -> Credentials:
    """Static credentials that select ``address`` (``Authorization: Bearer <address>``)."""
    return Credentials(token=address)


def build_service(url: str, address: str, **kw: Any) -> Any:
    """A ``gmail v1`` Resource for ``address`` on the emulator at ``url``.

    Close it (``svc.close()`` or ``with``) to release its connection.
    """
    return discovery.build("gmail", "v1", credentials=credentials(address),
                           static_discovery=True, cache_discovery=False,
                           client_options={"api_endpoint": url.rstrip("/")}, **kw)


def batch_uri(url: str) -> str:
    """The batch endpoint of the emulator at ``url``."""
    return url.rstrip("/") + BATCH_PATH


def new_batch(service_url: str, callback: Any = None) -> BatchHttpRequest:
    """A BatchHttpRequest that goes to the emulator, not to googleapis.com."""
    return BatchHttpRequest(callback=callback, batch_uri=batch_uri(service_url))
