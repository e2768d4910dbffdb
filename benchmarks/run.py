"""Every benchmark of the project, as `make bench` runs them (`BENCH_ARGS=...` for options).

    .venv/bin/python -m benchmarks.run [agent options] [--conversations [--conversations-args ARGS]]
        [--cli [--cli-args ARGS]]

Runs the agent benchmark (`benchmarks.agent`; its options, such as `--scale 0.1`,
`--scenario NAME` or `--json-only`, pass through), then, with `--conversations`,
the conversation-queries benchmark (`benchmarks.conversations`, which builds a
million-event journal first; `--conversations-args "--events 100000"` for less) and,
with `--cli`, the command-line benchmark (`benchmarks.cli`: start-up times and what
common mistakes print; `--cli-args "--runs 5"`). Exits non-zero if any benchmark does.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from benchmarks import agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
        epilog="Other options go to benchmarks.agent (see python -m benchmarks.agent --help).")
    parser.add_argument("--conversations", action="store_true",
                        help="also run the conversation-queries benchmark (slow)")
    parser.add_argument("--conversations-args", default="", metavar="ARGS",
                        help="options for benchmarks.conversations, as one quoted string")
    parser.add_argument("--cli", action="store_true",
                        help="also run the command-line benchmark (start-up, bad inputs)")
    parser.add_argument("--cli-args", default="", metavar="ARGS",
                        help="options for benchmarks.cli, as one quoted string")
    args, rest = parser.parse_known_args(argv)
    status = agent.main(rest)
    if args.conversations:
        from benchmarks import conversations

        sys.stdout.flush()
        status = conversations.main(shlex.split(args.conversations_args)) or status
    if args.cli:
        from benchmarks import cli

        sys.stdout.flush()
        status = cli.main(shlex.split(args.cli_args)) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
