"""Every command, driven with the mistakes users make, as real processes of `agentmail`.

Each must exit with the documented code (2 usage/config, 1 the operation failed) and say
what is wrong in one line (a handler's own error: one short block of its lines), with no
Python traceback; `-v` adds the traceback for bug reports.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import cli as bench


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[int, str]]:
    folder = tmp_path_factory.mktemp("bad-inputs")
    found = {row.name: (code, output) for row, code, output in bench.bad_inputs(folder)}
    found["__folder__"] = (0, str(folder))
    return found


@pytest.mark.parametrize("row", bench.BAD_INPUTS, ids=lambda r: r.name)
def test_a_bad_input_exits_with_its_code_and_one_clear_line(results, row):
    code, output = results[row.name]
    assert "Traceback" not in output, output
    assert code == row.code, output
    lines = bench.message_lines(output)
    assert lines and lines[0].lower().startswith("error: "), output
    assert row.says in output, output
    if row.block:  # the user's lines, not agentmail's internals
        assert len(lines) <= 6 and "agentmail/cli" not in output, output
    else:
        assert len(lines) == 1, output


def test_nothing_is_left_behind_by_commands_that_only_read(results):
    folder = Path(results["__folder__"][1])
    assert not (folder / "agentmail.db").exists()
    assert not (folder / "emulator.db").exists()
    assert not (folder / "no").exists()


def test_verbose_adds_the_traceback(tmp_path):
    (tmp_path / "a-folder").mkdir()
    done = subprocess.run([bench.agentmail_command(), "-v", "--db", "a-folder", "status"],
                          cwd=tmp_path, env=bench.clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "error: --db" in done.stderr


def test_every_command_has_a_bad_input_row():
    from agentmail.cli import app
    from tests.cli.test_foundation import _commands

    names = {path[0] for path in _commands(app)}
    covered = {word for row in bench.BAD_INPUTS for word in row.args if word in names}
    assert names - covered == set(), f"commands without a bad-input row: {names - covered}"
