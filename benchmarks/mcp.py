"""Tool round-trip latency of `agentmail mcp` over stdio, as an MCP host sees it.

    .venv/bin/python -m benchmarks.mcp [--calls 100] [--json-only]

Starts the Gmail API emulator and a fresh journal, launches `agentmail mcp` as a
subprocess, talks to it with the MCP SDK's stdio client, and times `--calls` calls of the
`status` tool (after one warm-up call), printing p50/p90/max in milliseconds as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ADDRESS = "bench@example.com"


def server_command(db: str, emulator_url: str, *emails: str, verbose: bool = False,
                   options: tuple[str, ...] = ()) -> list[str]:
    """The argv that starts `agentmail mcp` with this Python."""
    args = [sys.executable, "-m", "agentmail", "--db", db, *(["-v"] if verbose else []), "mcp",
            "--emulator", emulator_url, *options]
    for email in emails:
        args += ["--email", email]
    return args


def server_environment() -> dict[str, str]:
    """This environment without AGENTMAIL_* settings, so only the flags configure the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTMAIL_")}


async def time_status_calls(command: list[str], calls: int, errlog: Any) -> list[float]:
    """Seconds per `status` call over stdio, one warm-up call excluded."""
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:],
                                   env=server_environment())
    async with Client(stdio_client(params, errlog=errlog)) as client:
        await client.call_tool("status", {})
        took = []
        for _ in range(calls):
            start = time.perf_counter()
            result = await client.call_tool("status", {})
            took.append(time.perf_counter() - start)
            if result.is_error:
                raise RuntimeError(f"status failed: {result.content}")
    return took


def figures(took: list[float]) -> dict[str, Any]:
    ordered = sorted(took)
    return {"calls": len(took), "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    import anyio

    from agentmail.emulator import Emulator

    parser = argparse.ArgumentParser(prog="python -m benchmarks.mcp",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emulator, \
            open(Path(tmp) / "server.log", "w") as errlog:
        command = server_command(str(Path(tmp) / "journal.db"), emulator.url, ADDRESS)
        took = anyio.run(time_status_calls, command, args.calls, errlog)
    result = {"benchmark": "mcp_stdio_status", **figures(took)}
    if not args.json_only:
        print(f"status over stdio: p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms "
              f"({result['calls']} calls)", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
