"""The `agentmail` command as a user meets it: start-up time, and what common mistakes print.

    .venv/bin/python -m benchmarks.cli [--runs 10] [--json-only] [--strict]

Start-up: the median wall time of `agentmail --help`, `status` and `history --thread ID`
(on a journal `agentmail demo` wrote) over `--runs` runs, and each as a ratio to
`python -c pass` with the same interpreter. Bad inputs: every row of `BAD_INPUTS` run as
a real process of the installed entry point, with its exit code and what it printed.
tests/cli/test_bad_inputs.py asserts on the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTUP_TARGET_S = 0.3  # --help and history, per the CLI's start-up goal
TIMEOUT_S = 60


@dataclass(frozen=True)
class BadInput:
    """One mistake: the arguments (`{port}` is a port already in use), the exit code and a
    piece of the one line it must print. `block`: a handler's own error, shown as a short
    block (its lines, not agentmail's)."""

    name: str
    args: tuple[str, ...]
    code: int
    says: str
    block: bool = False


def _b(name: str, *args: str, code: int, says: str, block: bool = False) -> BadInput:
    return BadInput(name, args, code, says, block)


EMU = ("--emulator", "http://127.0.0.1:9")  # never contacted: each row fails before that
J = ("--db", "with-journal/agentmail.db")
RUN = ("run", "--email", "agent@example.com", "--once", *EMU)

BAD_INPUTS: tuple[BadInput, ...] = (
    _b("send: missing payload file", *J, "send", "--from", "a@example.com", "--to",
       "b@example.com", "--payload-file", "nope.json", *EMU, code=2, says="no such file"),
    _b("send: invalid JSON", *J, "send", "--from", "a@example.com", "--to", "b@example.com",
       "--payload", "{oops", *EMU, code=2, says="not valid JSON"),
    _b("send: bad recipient", *J, "send", "--from", "a@example.com", "--to", "not an address",
       "--payload", "{}", *EMU, code=2, says="is not an email address"),
    _b("send: no payload", *J, "send", "--from", "a@example.com", "--to", "b@example.com",
       *EMU, code=2, says="exactly one of --payload"),
    _b("--db is a folder", "--db", "a-folder", "status", code=2, says="is a folder"),
    _b("--db mysql://", "--db", "mysql://x/y", "status", code=2, says="runs on SQLite"),
    _b("--db driver missing", "--db", "postgresql+psycopg2://u@h/db", "status", code=2,
       says="pip install 'agentmail-cli[postgres]'"),
    _b("--db not a journal", "--db", "notes.txt", "status", code=2, says="left untouched"),
    _b("--config missing", "--config", "missing.json", "status", code=2,
       says="no such config file"),
    _b("--config broken JSON", "--config", "broken.json", *J, "status", code=2,
       says="invalid JSON"),
    _b("init over a broken config", "--config", "broken.json", *J, "init", code=2,
       says="init --force"),
    _b("config max_attempts -1", "--config", "negative.json", *J, "status", code=2,
       says="max_attempts must be at least 1"),
    _b("status, no journal here", "status", code=2, says="no journal here"),
    _b("threads, no journal here", "threads", code=2, says="no journal here"),
    _b("history, no journal here", "history", "--thread", "x", code=2, says="no journal here"),
    _b("events, no journal here", "events", code=2, says="no journal here"),
    _b("journal verify, no journal", "journal", "verify", code=2, says="no journal here"),
    _b("history: unknown thread", *J, "history", "--thread", "nope", code=1,
       says="no conversation matches"),
    _b("status: unknown mailbox", *J, "status", "--email", "x@example.com", code=1,
       says="knows no account"),
    _b("status: bad address", *J, "status", "--email", "nobody", code=2,
       says="is not an email address"),
    _b("threads: bad address", *J, "threads", "--email", "a b@example.com", code=2,
       says="is not an email address"),
    _b("run: bad address", *J, "run", "--email", "bad address", "--once", *EMU, code=2,
       says="is not an email address"),
    _b("run --interval -5", *J, *RUN, "--interval", "-5", code=2, says="--interval must be"),
    _b("run -n 0", *J, *RUN[:-3], "-n", "0", *EMU, code=2, says="--iterations"),
    _b("run --concurrency 0", *J, *RUN, "--concurrency", "0", code=2,
       says="--concurrency must be at least 1"),
    _b("run --max-attempts -1", *J, *RUN, "--max-attempts", "-1", code=2,
       says="--max-attempts must be at least 1"),
    _b("run --emulator not-a-url", *J, "run", "--email", "agent@example.com", "--once",
       "--emulator", "not-a-url", code=2, says="must be an http:// or https:// URL"),
    _b("run --emulator bad host", *J, "run", "--email", "agent@example.com", "--once",
       "--emulator", "http://no_such host:80", code=2, says="must be an http:// or https://"),
    _b("run --handler no module", *J, *RUN, "--handler", "nomodule:Agent", code=2,
       says="no module named 'nomodule'"),
    _b("run --handler no class", *J, *RUN, "--handler", "handlers_ok:Missing", code=2,
       says="has no class 'Missing'"),
    _b("run --handler not an Agent", *J, *RUN, "--handler", "handlers_ok:Plain", code=2,
       says="does not subclass agentmail.Agent"),
    _b("run --handler bad spec", *J, *RUN, "--handler", "just-a-name", code=2,
       says="must look like package.module:ClassName"),
    _b("run --handler syntax error", *J, *RUN, "--handler", "handlers_syntax:Agent", code=2,
       says="SyntaxError", block=True),
    _b("run --handler raises on import", *J, *RUN, "--handler", "handlers_raise:Agent",
       code=2, says="RuntimeError: no API key in the environment", block=True),
    _b("-v takes no value", "-v", "2", "status", code=2, says="No such command '2'"),
    _b("unknown command", "sned", code=2, says="No such command 'sned'"),
    _b("emulator --port 99999", "emulator", "--port", "99999", code=2, says="--port"),
    _b("emulator --db missing folder", "emulator", "--port", "0", "--db", "no/such/dir/e.db",
       code=2, says="does not exist"),
    _b("emulator on a used port", "emulator", "--port", "{port}", "--db", ":memory:", code=1,
       says="already in use"),
    _b("auth: web-type credentials", "--config", "web/agent_config.json", "auth", "--email",
       "a@example.com", "--no-browser", code=2, says="'Web application'"),
    _b("auth: corrupt credentials", "--config", "corrupt/agent_config.json", "auth", "--email",
       "a@example.com", "--no-browser", code=2, says="not readable JSON"),
    _b("replay: nothing selected", *J, "replay", *EMU, code=2, says="say what to replay"),
    _b("replay --since garbage", *J, "replay", "--since", "yesterday-ish", *EMU, code=2,
       says="--since"),
    _b("replay: no journal here", "replay", "--failed", *EMU, code=2, says="no journal here"),
    _b("demo --dir is a file", "demo", "--dir", "notes.txt", code=2, says="is a file"),
    _b("mcp: bad address", *J, "mcp", "--email", "not an address", *EMU, code=2,
       says="is not an email address"),
    _b("mcp --transport unknown", *J, "mcp", "--transport", "carrier-pigeon", code=2,
       says="--transport"),
    _b("outbox: no journal here", "outbox", code=2, says="no journal here"),
    _b("outbox: bad address", *J, "outbox", "--email", "nobody", code=2,
       says="is not an email address"),
    _b("approve: unknown id", *J, "approve", "nope", code=1, says="no approval 'nope'"),
)

_FILES = {
    "notes.txt": "not a database\n",
    "broken.json": "{oops\n",
    "negative.json": '{"max_attempts": -1}\n',
    "handlers_ok.py": "from agentmail import Agent\n\nclass Plain:\n    pass\n\n"
                      "class Echo(Agent):\n    pass\n",
    "handlers_syntax.py": "from agentmail import Agent\n\nclass Broken(Agent)\n    pass\n",
    "handlers_raise.py": "raise RuntimeError('no API key in the environment')\n",
    "web/credentials.json": '{"web": {"client_id": "x", "client_secret": "y"}}\n',
    "web/agent_config.json": "{}\n",
    "corrupt/credentials.json": '{"installed": \n',
    "corrupt/agent_config.json": "{}\n",
}


def agentmail_command() -> str:
    """The installed entry point next to this interpreter (what a user runs)."""
    return str(Path(sys.executable).with_name("agentmail"))


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMAIL_")}
    env["COLUMNS"] = "200"  # one error per line, however narrow the terminal of the runner
    return env


def prepare(folder: Path) -> None:
    """The files the rows name; the folder itself holds no journal."""
    from agentmail.journal.store import Journal

    for name, text in _FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "a-folder").mkdir(exist_ok=True)
    (folder / "with-journal").mkdir(exist_ok=True)
    Journal.open(str(folder / "with-journal" / "agentmail.db")).close()


@contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_bad(row: BadInput, folder: Path, port: int) -> tuple[int, str]:
    """Exit code and everything printed (stderr then stdout) for one row."""
    args = [a.replace("{port}", str(port)) for a in row.args]
    done = subprocess.run([agentmail_command(), *args], cwd=folder, env=clean_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    return done.returncode, done.stderr + done.stdout


def message_lines(output: str) -> list[str]:
    """What a user reads: the lines that are not click's usage reminder."""
    return [line for line in output.splitlines() if line.strip()
            and not line.startswith(("Usage: ", "Try '"))]


def bad_inputs(folder: Path, rows: Sequence[BadInput] = BAD_INPUTS
               ) -> list[tuple[BadInput, int, str]]:
    prepare(folder)
    with busy_port() as port, ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: run_bad(r, folder, port), rows))
    return [(row, code, output) for row, (code, output) in zip(rows, results, strict=True)]


def _median_seconds(command: Sequence[str], cwd: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True,
                       timeout=TIMEOUT_S)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(folder: Path, runs: int) -> dict[str, dict[str, float]]:
    demo = subprocess.run([agentmail_command(), "demo", "--dir", str(folder / "demo")],
                          env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    if demo.returncode != 0:
        raise RuntimeError(f"agentmail demo failed: {demo.stderr}")
    cid = demo.stdout.split("conversation ", 1)[1].split()[0]
    db = str(folder / "demo" / "agentmail.db")
    baseline = _median_seconds([sys.executable, "-c", "pass"], folder, runs)
    commands = {"--help": ["--help"], "status": ["--db", db, "status"],
                "history": ["--db", db, "history", "--thread", cid]}
    result = {"python -c pass": {"seconds": baseline, "ratio": 1.0}}
    for name, args in commands.items():
        seconds = _median_seconds([agentmail_command(), *args], folder, runs)
        result[name] = {"seconds": seconds, "ratio": seconds / baseline}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (median)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON document")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed "
                        "or a bad input misbehaves")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agentmail-bench-cli-") as tmp:
        folder = Path(tmp)
        times = startup(folder, args.runs)
        (folder / "bad").mkdir()
        rows = bad_inputs(folder / "bad")
    table = [{"input": row.name, "expected_exit": row.code, "exit": code,
              "ok": code == row.code and row.says in output and "Traceback" not in output,
              "prints": " | ".join(message_lines(output))[:300]} for row, code, output in rows]
    targets = [{"target": f"{name} <= {STARTUP_TARGET_S} s", "measured": times[name]["seconds"],
                "ok": times[name]["seconds"] <= STARTUP_TARGET_S} for name in ("--help", "history")]
    document = {"benchmark": "cli", "runs": args.runs, "startup": times, "targets": targets,
                "bad_inputs": table}
    if not args.json_only:
        print(f"start-up, median of {args.runs} runs:")
        for name, t in times.items():
            print(f"  {name:<16} {t['seconds'] * 1000:7.1f} ms  {t['ratio']:5.1f}x python -c pass")
        for t in targets:
            print(f"  {'PASS' if t['ok'] else 'MISS'} {t['target']} (measured "
                  f"{t['measured']:.3f} s)")
        print("\nbad inputs:")
        for r in table:
            print(f"  {'ok ' if r['ok'] else 'BAD'} exit {r['exit']}  {r['input']:<32} "
                  f"{r['prints']}")
    print(json.dumps(document, indent=2))
    failed = not all(t["ok"] for t in targets) or not all(r["ok"] for r in table)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
