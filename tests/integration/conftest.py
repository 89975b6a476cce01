"""Shared fixtures for tests against the real Slurm lab (scripts/slurm-lab up).

Without a lab these tests skip with the reason, except when CI=true or
HPCBRIDGE_REQUIRE_LAB=1 (set by scripts/test): then a missing lab is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpcbridge.config import ClusterConfig, load_config
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Task
from hpcbridge.service import Service

ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPT = ROOT / "scripts" / "slurm-lab"
LAB_DIR = Path(os.environ.get("HPCBRIDGE_LAB_DIR", "/tmp/hpcbridge-lab"))
HEAT = ROOT / "examples" / "heat2d.py"


def lab_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("HPCBRIDGE_REQUIRE_LAB") == "1"


def unavailable(reason: str) -> None:
    if lab_required():
        pytest.fail(f"the Slurm lab is required here but {reason}")
    pytest.skip(reason)


def lab_config_path() -> Path:
    return Path(os.environ.get("HPCBRIDGE_LAB_CONFIG") or LAB_DIR / "hpcbridge.toml")


@pytest.fixture(scope="session")
def lab_config() -> Path:
    path = lab_config_path()
    if not path.is_file():
        unavailable(f"lab not up: {path} missing (run `scripts/slurm-lab up`)")
    cluster = load_config(path).cluster("lab")
    try:
        socket.create_connection((cluster.host or "127.0.0.1", cluster.port or 22), timeout=2).close()
    except OSError as exc:
        unavailable(f"lab sshd not reachable: {exc}")
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        unavailable(f"slurmctld not answering: {res.stderr.strip()}")
    return path


@pytest.fixture(scope="session")
def lab_cluster(lab_config: Path) -> ClusterConfig:
    return load_config(lab_config).cluster("lab")


def lab_cmd(*args: str, timeout: float = 120) -> str:
    """Run a scripts/slurm-lab subcommand (fault injection); fail the test if it fails."""
    res = subprocess.run([str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"slurm-lab {' '.join(args)} failed: {res.stderr[-2000:]}"
    return res.stdout


@pytest.fixture
def service(lab_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """A Service on the lab config with a fresh registry of its own."""
    db = tmp_path / "registry.db"
    monkeypatch.setenv("HPCBRIDGE_CONFIG", str(lab_config))
    monkeypatch.setenv("HPCBRIDGE_DB", str(db))
    yield from lab_service(lab_config, db)


def lab_service(config: Path, db: Path) -> Iterator[Service]:
    """A Service on ``config`` and ``db`` for a fixture to yield from; afterwards every task
    still active is killed, so no job of the test stays behind on the shared lab."""
    svc = Service.open(config, db, source="test")
    yield svc
    active = [t.id for t in svc.list_tasks(states=[s for s in TaskState if not s.terminal])]
    if active:
        try:
            svc.kill(active)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
    svc.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def states_seen(svc: Service, task: Task) -> list[str]:
    return [e.to_state for e in svc.events(task.id) if e.kind == "state" and e.to_state]


def drive_until(svc: Service, task_id: str, pred: Callable[[Task], bool], timeout: float,
                what: str) -> Task:  # fmt: skip
    """Run sync cycles until ``pred(task)``; return the task."""

    deadline = time.monotonic() + timeout
    task = svc.get(task_id)
    while time.monotonic() < deadline:
        svc.sync_cluster(task.cluster)
        task = svc.get(task_id)
        if pred(task):
            return task
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; task is {task.state.value}"
                         f" ({task.reason}); events: {states_seen(svc, task)}")  # fmt: skip


def squeue_as_root(*args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, timeout=30).stdout
