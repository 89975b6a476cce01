"""The work dir of a running task on the real lab, through the real sshd (issue 10 item 6):
`tasks files` shows a file the job writes every second with a fresh mtime, `tasks tail -f`
prints its lines exactly once until the task ends, and a symlink the job made to a file
outside the work dir is refused by the check that runs on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hpcbridge.errors import UsageError
from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import ROOT, drive_until, wait_for

pytestmark = pytest.mark.integration
S = TaskState
TICKS = 15

TICKER = rf"""
mkdir -p out
ln -s /etc/passwd leak
ln -s /etc etcdir
printf 'literal\n' > "a'; echo \$(id)"
for i in $(seq 1 {TICKS}); do echo "tick $i" >> out/ticks.txt; sleep 1; done
printf 'done' >> out/ticks.txt
"""


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process (HPCBRIDGE_CONFIG / HPCBRIDGE_DB from the fixture)."""
    return subprocess.run([sys.executable, "-m", "hpcbridge", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ))  # fmt: skip


def test_files_and_follow_of_a_running_task(service: Service) -> None:
    task = service.submit(script=TICKER, cluster="lab", name="ticker", time="00:05:00")
    drive_until(service, task.id, lambda t: t.state != S.QUEUED, 120, "the ticker to start")

    def ticking() -> bool:
        got = service.files(task.id)
        ticks = next((f for f in got["files"] if f["path"] == "out/ticks.txt"), None)
        return ticks is not None and ticks["size"] >= len("tick 1\ntick 2\n")

    wait_for(ticking, 60, "out/ticks.txt with two ticks")
    got = service.files(task.id)
    assert got["work_dir"] == service.get(task.id).work_dir
    by = {f["path"]: f for f in got["files"]}
    assert {"out/ticks.txt", "a'; echo $(id)", ".hpcbridge/attempt-1.out"} <= set(by)
    assert "leak" not in by and not any(p.startswith("etcdir/") for p in by)  # symlinks: not listed
    assert by[".hpcbridge/attempt-1.out"]["meta"] and not by["out/ticks.txt"]["meta"]
    assert got["newest"]["path"] == "out/ticks.txt" and got["newest"]["age_seconds"] < 5
    assert time.time() - by["out/ticks.txt"]["mtime"] < 5

    follow = subprocess.Popen([sys.executable, "-m", "hpcbridge", "tasks", "tail", "-f", task.id,
                               "out/ticks.txt", "-n", "1000"], cwd=ROOT, env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # While it follows: the refusals, through the real sshd, and a hostile name read literally.
        for path in ("leak", "etcdir/passwd"):
            with pytest.raises(UsageError, match="outside the task's work dir"):
                service.tail(task.id, path, 10)
        res = cli("tasks", "tail", task.id, "leak")
        assert res.returncode == 1 and res.stdout == "" and "root:" not in res.stderr
        err = res.stderr.splitlines()
        assert len(err) == 2 and err[0].startswith("error: ") and err[1].startswith("hint: "), err
        assert service.tail(task.id, "a'; echo $(id)", 5) == "literal\n"
        out, err_text = follow.communicate(timeout=180)
    finally:
        follow.kill()
    assert follow.returncode == 0, err_text
    assert service.get(task.id).state.terminal
    assert out.splitlines() == [f"tick {i}" for i in range(1, TICKS + 1)] + ["done"]  # each once
    assert out == service.tail(task.id, "out/ticks.txt", None)
    assert service.get(task.id).state == S.SUCCEEDED
