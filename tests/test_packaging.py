"""An installed agentmail (a wheel, not this checkout) carries its migrations and upgrades journals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_list_names_every_package():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(agentmail(?:\.[\w]+)*)"', text.split("packages = [", 1)[1]
                            .split("]", 1)[0]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "agentmail").rglob("__init__.py")}
    assert on_disk <= listed
    assert {"agentmail._migrations", "agentmail._migrations.versions"} <= listed


def test_a_wheel_opens_a_journal_with_its_own_migrations(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = ("import agentmail.journal.schema as s, agentmail.journal.store as j;"
              "print(s.migrations_dir());"
              f"j.Journal.open({str(tmp_path / 'journal.db')!r}).close();"
              "print(s.head_revision())")
    env = {**os.environ, "PYTHONPATH": str(site)}  # the unpacked wheel before this checkout
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    assert out[0] == str(site / "agentmail" / "_migrations")
    assert (tmp_path / "journal.db").exists() and out[1]
