"""Helpers shared by the local end-to-end tests (imported by the test modules)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import hpcbridge

REPO = Path(__file__).resolve().parents[2]
HEAT2D = REPO / "examples" / "heat2d.py"


def py(code: str) -> list[str]:
    """A command running a Python snippet (argv, no shell)."""
    return [sys.executable, "-c", code]


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05,
             what: str = "condition") -> object:  # fmt: skip
    """Poll ``predicate`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_running(task: hpcbridge.Task, timeout: float = 15.0) -> None:
    """Drive sync until the task is ``running`` (its command has started)."""

    def running() -> bool:
        hpcbridge.sync()
        state = task.status
        assert not state.terminal, f"task ended early: {state} {task.record().reason}"
        return state == hpcbridge.TaskState.RUNNING

    wait_for(running, timeout, 0.1, f"task {task.id} to run")


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def state_moves(task: hpcbridge.Task) -> list[tuple[str | None, str | None]]:
    return [(e.from_state, e.to_state) for e in task.events() if e.kind == "state"]


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_clean_error(stderr: str, *needles: str) -> None:
    """One ``error: ...`` line (optionally followed by one ``hint: ...`` line), no traceback."""
    lines = stderr_lines(stderr)
    assert "Traceback" not in stderr, stderr
    assert lines, "nothing on stderr"
    assert lines[0].startswith("error: "), stderr
    assert len(lines) <= 2, stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, stderr)
