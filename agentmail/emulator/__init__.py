"""A Gmail API v1 emulator: the REST API on localhost, mail delivered between its accounts.

Separate from the rest of agentmail (stdlib + sqlite3 only; :mod:`.client`
alone uses googleapiclient). Embed it with::

    from agentmail.emulator import Emulator
    from agentmail.emulator.client import build_service

    with Emulator() as emu:
        svc = build_service(emu.url, "alice@example.com")

or run ``agentmail emulator`` and point a client at the printed URL.
"""

from __future__ import annotations

from agentmail.emulator.server import Emulator

__all__ = ["Emulator"]
