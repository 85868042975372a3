"""The README's two quickstart commands, taken from the README itself and run in a fresh
virtual environment: the first exactly as written (install, then the demo), the second with
the test run reduced to collection (running the whole suite inside itself would recurse)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_readme_has_exactly_two_commands() -> None:
    cmds = quickstart_commands()
    assert len(cmds) == 2, cmds
    assert "python -m engine run" in cmds[0] and "pytest" in cmds[1]


def test_quickstart_from_a_fresh_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MQD_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(env_dir)
    work = tmp_path / "work"
    work.mkdir()
    first, second = quickstart_commands()

    # `-e .` refers to the clone: run from it, but keep the demo's data dir in the scratch
    # space by pointing MQD_DATA_DIR there.
    run = subprocess.run(first, check=False, shell=True, cwd=REPO, env={**env, "MQD_DATA_DIR": str(work)},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "run finished: data finished" in run.stdout
    assert "equity      200.00 ->" in run.stdout
    assert list((work / "runs").glob("demo-*.sqlite"))
    python = bin_dir / "python"
    assert Path(sys.executable).resolve() != python.resolve()
    # what a newcomer types next: `status` finds the demo's log under runs/ by itself
    status = subprocess.run([str(python), "-m", "engine", "status"], check=False, cwd=REPO,
                            env={**env, "MQD_DATA_DIR": str(work)}, capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "demo-0001.sqlite (most recent run" in status.stdout

    collect = second.replace("python -m pytest -q", "python -m pytest -q --collect-only tests/events")
    assert collect != second, "the README's test command changed; update this test"
    run = subprocess.run(collect, check=False, shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "test_codec.py" in run.stdout
