"""Running the real `agentmail` command in-process."""

from __future__ import annotations

from typer.testing import CliRunner

from agentmail.cli import app


def run_cli(*args: str, input: str | None = None):
    """Invoke `agentmail ARGS…`; returns the result with .exit_code, .stdout, .stderr."""
    return CliRunner().invoke(app, list(args), input=input)
