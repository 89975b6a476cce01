"""Fixtures for end-to-end tests on the embedded local backend.

Every test gets its own registry (``$HPCBRIDGE_DB`` under ``tmp_path``), no config file
(``$HPCBRIDGE_CONFIG`` unset and ``$XDG_CONFIG_HOME`` pointed at an empty dir so a user's
``~/.config/hpcbridge/config.toml`` cannot leak in) and its own working directory. Processes a
test leaves running are killed (by process group, from the pids recorded in the registry) at
teardown, so nothing outlives the suite.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner, Result

from hpcbridge import api
from hpcbridge.cli import cli


@dataclass
class Env:
    """The isolated environment of one test."""

    root: Path  # tmp_path
    db: Path  # the registry file
    cwd: Path  # the test's working directory
    env: dict[str, str]  # environment for subprocesses

    @property
    def data_dir(self) -> Path:
        return self.db.parent

    def work_dir(self, task_id: str) -> Path:
        return self.data_dir / "work" / task_id


@pytest.fixture
def hb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    data = tmp_path / "data"
    data.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    db = data / "registry.db"
    monkeypatch.setenv("HPCBRIDGE_DB", str(db))
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    monkeypatch.delenv("HPCBRIDGE_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(api, "_explicit", {})
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    yield Env(root=tmp_path, db=db, cwd=cwd, env=env)
    _kill_leftovers(db)


def _kill_leftovers(db: Path) -> None:
    """SIGKILL the process group of every attempt still alive (runner + its command)."""
    if not db.exists():
        return
    try:
        conn = sqlite3.connect(db, timeout=30)
        rows = conn.execute("SELECT backend_ref FROM attempts").fetchall()
        conn.close()
    except sqlite3.Error:
        return
    for (raw,) in rows:
        ref = json.loads(raw or "{}")
        pid, created = ref.get("pid"), ref.get("create_time")
        if not isinstance(pid, int):
            continue
        try:
            proc = psutil.Process(pid)
            if created is not None and abs(proc.create_time() - created) > 0.01:
                continue
            os.killpg(pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue


@pytest.fixture
def run_cli(hb: Env) -> Callable[..., Result]:
    """Invoke the click group in-process (stdout and stderr kept apart)."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def run_proc(hb: Env) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m hpcbridge ARGS`` as a real, separate process."""

    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "hpcbridge", *args],
            capture_output=True, text=True, timeout=timeout,
            env=env or hb.env, cwd=cwd or hb.cwd,
        )  # fmt: skip

    return run
