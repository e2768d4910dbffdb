"""The `agentmail` command: argument parsing and output only; the work is in services."""

from __future__ import annotations

from agentmail.cli.app import app, main

__all__ = ["app", "main"]
