"""Never twice, with a slow slurmctld: the real sbatch, delayed by a wrapper on
``slurm_bin_dir``, while cron-style ``hpcbridge sync`` processes run meanwhile.

Before leases, a sync declared an attempt "never submitted" ``submit_grace_seconds`` after
its row was written, while its submitter was still inside sbatch, and submitted it again:
every task got two Slurm jobs. The wrapper only delays the real sbatch; every other command
is the real one (symlinks), so this runs the whole real path over the real sshd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import wait_for
from .test_crash_safety import ct  # the crash-trials script's checker

pytestmark = pytest.mark.integration
S = TaskState
DELAY = 8  # seconds each sbatch call takes: far beyond submit_grace_seconds below



@pytest.fixture
def slow_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with every Slurm command, sbatch delayed by DELAY seconds."""
    d = Path("/tmp") / f"hpcb-slow-bin-{os.getpid()}-{time.time_ns()}"
    d.mkdir(mode=0o755)
    for name in ("squeue", "sacct", "scancel", "scontrol", "sstat", "sinfo"):
        real = shutil.which(name)
        if real:
            (d / name).symlink_to(real)
    real_sbatch = shutil.which("sbatch")
    assert real_sbatch, "sbatch not found on the lab host"
    wrapper = d / "sbatch"
    wrapper.write_text(f'#!/bin/sh\n# a busy slurmctld: the real sbatch, {DELAY} s late\nsleep {DELAY}\n'
                       f'exec {real_sbatch} "$@"\n', encoding="utf-8")  # fmt: skip
    wrapper.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_syncs_during_a_slow_sbatch_never_make_a_second_job(lab_config: Path, tmp_path: Path,
                                                            slow_bin: Path) -> None:  # fmt: skip
    cfg = ct.make_config(lab_config, "lab", tmp_path / "slow.toml",
                         {"slurm_bin_dir": str(slow_bin), "submit_grace_seconds": 1,
                          "command_timeout": 120})  # fmt: skip
    db = tmp_path / "registry.db"
    env = {**os.environ, "HPCBRIDGE_CONFIG": str(cfg), "HPCBRIDGE_DB": str(db)}
    since = time.time() - 5
    submitted: list[object] = []

    def submit() -> None:  # the submitting process (its own registry connection)
        with Service.open(cfg, db, source="test") as sub:
            submitted.extend(sub.submit_many([{"command": ["true"], "name": f"slow-{i}"} for i in range(3)]))

    th = threading.Thread(target=submit)
    th.start()
    # Cron fires every second while sbatch is busy; each sync is a separate process.
    syncs = []
    wait_for(lambda: db.exists(), 10, "the registry to exist")
    while th.is_alive():
        res = subprocess.run([sys.executable, "-m", "hpcbridge", "sync"], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        syncs.append(res)
        assert "Traceback" not in res.stderr, res.stderr
        th.join(1.0)
    assert len(syncs) >= 3, "the syncs must overlap the slow submission"
    assert len(submitted) == 3

    svc = Service.open(cfg, db, source="test")
    try:
        for task in submitted:
            tid = task.id  # type: ignore[attr-defined]
            assert [a.number for a in svc.attempts(tid)] == [1], svc.events(tid)
        ids = [t.id for t in submitted]  # type: ignore[attr-defined]
        done = svc.wait(ids, timeout=180)
        assert [t.state for t in done] == [S.SUCCEEDED] * 3, [(t.state, t.reason) for t in done]
        # Exactly one Slurm job per task, as sacct sees it once every job has ended. The three
        # share one resource request, so they went out as one array: an element counts for
        # the task whose attempt records it (an element no attempt records, or a second
        # array, is an orphan for ct.verify below).
        recorded = {a.job_id: tid for tid in ids for a in svc.attempts(tid) if a.job_id}

        def jobs_per_task() -> dict[str, int]:
            jobs = ct.slurm_jobs(since)
            return {tid: sum(1 for jid, j in jobs.items() if j["source"] == "sacct" and (
                j["name"].startswith(f"hpcb-{tid}-") or recorded.get(jid) == tid)) for tid in ids}  # fmt: skip

        wait_for(lambda: all(n >= 1 for n in jobs_per_task().values()), 60, "sacct to list the jobs")
        assert jobs_per_task() == {tid: 1 for tid in ids}
        verdict = ct.verify(db, since)
        assert verdict["duplicates"] == [] and verdict["orphans"] == [], verdict
        ours = {f"hpcb-array-a-{a.token}" for tid in ids for a in svc.attempts(tid)}
        arrays = {j["name"] for j in ct.slurm_jobs(since).values() if j["name"] in ours}
        assert len(arrays) == 1, arrays  # one sbatch for the three
    finally:
        svc.close()


def test_a_remote_script_that_outlives_the_command_timeout_is_found_not_resubmitted(
    lab_config: Path, tmp_path: Path, slow_bin: Path
) -> None:
    """The submitter gives up on the exec after 3 s (CommandTimeout: outcome unknown) while
    the remote script is still inside the 8 s sbatch; the syncs that follow see its lock
    held (``submitting``), then find the job by token: one job, no second attempt."""
    cfg = ct.make_config(lab_config, "lab", tmp_path / "timeout.toml",
                         {"slurm_bin_dir": str(slow_bin), "submit_grace_seconds": 1,
                          "command_timeout": 3})  # fmt: skip
    db = tmp_path / "registry.db"
    since = time.time() - 5
    with Service.open(cfg, db, source="test") as svc:
        (task,) = svc.submit_many([{"command": ["true"], "name": "outlived"}])
        assert task.state == S.SUBMITTING, (task.state, task.reason)
        assert any("outcome unknown" in e.detail for e in svc.events(task.id))

    with Service.open(cfg, db, source="sync") as svc:
        def settled() -> bool:
            svc.sync_cluster("lab")
            return svc.get(task.id).state != S.SUBMITTING

        wait_for(settled, 90, "the job to be found by token")
        assert [a.number for a in svc.attempts(task.id)] == [1], svc.events(task.id)
        assert any("adopted job" in e.detail for e in svc.events(task.id))
        done = svc.wait([task.id], timeout=120)[0]
        assert done.state == S.SUCCEEDED, done.reason
        wait_for(lambda: any(j["source"] == "sacct" and j["name"].startswith(f"hpcb-{task.id}-")
                             for j in ct.slurm_jobs(since).values()), 60, "sacct to list the job")  # fmt: skip
        names = [j["name"] for j in ct.slurm_jobs(since).values() if j["name"].startswith(f"hpcb-{task.id}-")]
        assert names == [f"hpcb-{task.id}-1"]
