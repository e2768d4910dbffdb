"""The code stays lint-clean and type-checks: ruff and mypy, as `make lint` runs them.

mypy reads its settings from pyproject.toml and keeps its cache in .mypy_cache, so a
warm run takes a second or so (a cold one about ten).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "agentmail", "tests", "migrations", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = _run("mypy", "--no-error-summary", "agentmail")
    assert result.returncode == 0, result.stdout + result.stderr
