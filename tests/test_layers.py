"""The architecture's dependency rules, checked on the source (design.md, Layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agentmail

PACKAGE = Path(agentmail.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _modules(*parts: str) -> list[Path]:
    root = PACKAGE.joinpath(*parts)
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


@pytest.mark.parametrize("module", ["pipeline", "screening", "records", "message", "policy",
                                    "agent", "reconcile"])
def test_the_core_never_imports_an_adapter_library(module):
    for path in _modules(module):
        bad = {m for m in _imports(path)
               if m.split(".")[0] in ("sqlalchemy", "googleapiclient", "google", "httplib2",
                                      "typer", "alembic")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_pure_modules_do_no_io():
    for path in _modules("message") + _modules("policy"):
        bad = {m for m in _imports(path) if m.split(".")[0] in (
            "socket", "sqlite3", "subprocess", "urllib", "http", "agentmail.journal",
            "agentmail.mailbox")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_emulator_shares_nothing_with_the_agent_but_the_wire():
    for path in _modules("emulator"):
        ours = {m for m in _imports(path)
                if m.startswith("agentmail.") and not m.startswith("agentmail.emulator")}
        assert not ours, f"emulator/{path.name} imports {sorted(ours)}"


def test_adapters_and_the_journal_never_import_the_cli_or_services():
    for path in _modules("mailbox") + _modules("journal"):
        up = {m for m in _imports(path)
              if m.startswith(("agentmail.cli", "agentmail.services", "agentmail.pipeline"))}
        assert not up, f"{path.relative_to(PACKAGE)} imports {sorted(up)}"


def test_the_public_names():
    assert set(agentmail.__all__) == {"Agent", "Message", "errors"}
    assert agentmail.Agent.process_message and agentmail.Message.key
