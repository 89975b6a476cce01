"""Crash safety on the real Slurm lab: no duplicate job and no lost task, whatever point an
hpcbridge process dies at.

* the randomized kill -9 trials of ``scripts/crash-trials`` (50 trials, checked against sacct);
* the two hard windows, made deterministic: the write-ahead attempt row committed but sbatch
  never run, and sbatch run but its job id never recorded;
* two ``hpcbridge sync`` started at the same moment as three ``submit``s.

Every job is checked in Slurm's own records (sacct/squeue as root), not in the registry.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import ROOT, drive_until, squeue_as_root, wait_for

pytestmark = pytest.mark.integration
S = TaskState
SCRIPT = ROOT / "scripts" / "crash-trials"
SUBMIT_GRACE = 6.0  # the deterministic tests' submit_grace_seconds


def _load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("crash_trials", str(SCRIPT))
    spec = importlib.util.spec_from_loader("crash_trials", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["crash_trials"] = mod  # dataclasses look their module up there
    loader.exec_module(mod)
    return mod


ct = _load_script()


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


@pytest.fixture
def fast_config(lab_config: Path, tmp_path: Path) -> Path:
    return ct.make_config(lab_config, "lab", tmp_path / "fast.toml",
                          {"submit_grace_seconds": SUBMIT_GRACE, "lost_grace_seconds": 60})  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "registry.db"
    yield path
    # Leave no job of this test behind on the shared lab: cancel by job id what is still live.
    if path.exists():
        ids = _recorded_and_named_jobs(path)
        live = [j for j in ids if squeue_as_root("-j", j).strip()]
        if live:
            subprocess.run(["scancel", *live], capture_output=True, timeout=60)


def _recorded_and_named_jobs(path: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        task_ids = [r[0] for r in conn.execute("SELECT id FROM tasks")]
        recorded = {
            r[0] for r in conn.execute("SELECT job_id FROM attempts WHERE job_id IS NOT NULL")
        }
    finally:
        conn.close()
    jobs = ct.slurm_jobs(time.time() - 3600)
    named = {
        jid for jid, j in jobs.items() if any(j["name"].startswith(f"hpcb-{t}-") for t in task_ids)
    }
    return sorted(recorded | named)


def jobs_of(task_id: str, since: float) -> dict[str, dict[str, str]]:
    """Every Slurm job (sacct + squeue, all users) named after one of the task's attempts."""
    return {
        jid: j
        for jid, j in ct.slurm_jobs(since).items()
        if j["name"].startswith(f"hpcb-{task_id}-")
    }


def only_task(svc: Service) -> str:
    tasks = svc.list_tasks()
    assert len(tasks) == 1, tasks
    return tasks[0].id


# --------------------------------------------------------------------------- randomized


@pytest.mark.slow
def test_crash_trials_50_no_duplicates_no_orphans(lab_config: Path, record_property: Any) -> None:
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "50", "--json", "--config", str(lab_config)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode in (0, 1), (
        f"crash-trials could not run (exit {res.returncode}): {res.stderr[-3000:]}"
    )
    out = json.loads(res.stdout)
    record_property("crash_trials", json.dumps({k: out[k] for k in (
        "seed", "trials", "processes_killed", "phases", "tasks_registered", "jobs_seen",
        "adopted_by_token", "resubmitted_after_grace", "elapsed_seconds")}))  # fmt: skip
    summary = f"seed {out['seed']}: {json.dumps(out, indent=1)[:6000]}"
    assert out["duplicates"] == [], summary
    assert out["orphans"] == [], summary
    assert out["non_succeeded"] == [], summary
    assert out["process_errors"] == [], summary
    assert res.returncode == 0 and out["ok"], summary
    assert sum(out["trials"].values()) == 50
    assert sum(out["processes_killed"].values()) >= 15, summary  # the trials did kill things
    # every task ran exactly once: one job per task, each recorded on its attempt
    assert out["jobs_seen"] == out["tasks_registered"] >= 50, summary
    assert time.monotonic() - started < 420


# --------------------------------------------------------------------------- deterministic


def test_the_checker_sees_orphans_and_duplicates(fast_config: Path, db: Path) -> None:
    """The trials' verdict is only worth something if it can say no: an unrecorded job is an
    orphan, a second job for the same attempt a duplicate, an unfinished task non-succeeded."""
    since = time.time() - 5
    svc = Service.open(fast_config, db, source="doomed")
    backend = svc.backend("lab")
    real_submit = backend.submit
    sent: list[Any] = []

    def submit_then_crash(requests: Any) -> Any:
        sent.extend(requests)
        real_submit(requests)
        raise Crash

    backend.submit = submit_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        svc.submit(command=["true"], cluster="lab")
    task_id = only_task(svc)
    wait_for(lambda: len(jobs_of(task_id, since)) == 1, 30, "the job to show in Slurm")
    verdict = ct.verify(db, since)
    assert verdict["duplicates"] == []
    assert len(verdict["orphans"]) == 1 and "records job None" in verdict["orphans"][0], verdict[
        "orphans"
    ]
    assert verdict["non_succeeded"] == [f"{task_id} (): submitting"]

    real_submit(sent)  # the same attempt submitted twice: what the write-ahead log prevents
    svc.close()
    # Wait for what the checker reads: both jobs in sacct (it lags squeue), not just squeue.
    wait_for(lambda: [j.get("source") for j in jobs_of(task_id, since).values()] == ["sacct", "sacct"],
             30, "sacct to list both jobs")  # fmt: skip
    verdict = ct.verify(db, since)
    # "same job name twice" always; "two jobs ran to completion" too once both have ended.
    dups = verdict["duplicates"]
    assert any(d.startswith(f"job name hpcb-{task_id}-1: jobs ") for d in dups), dups
    assert all(task_id in d for d in dups) and len(dups) in (1, 2), dups
    assert len(verdict["orphans"]) == 2


def test_attempt_committed_but_sbatch_never_ran(fast_config: Path, db: Path) -> None:
    """Window 1: the process dies between committing the write-ahead attempt and sbatch."""
    since = time.time() - 5
    svc = Service.open(fast_config, db, source="doomed")
    svc.backend("lab").submit = _crash_before_sbatch  # type: ignore[method-assign]
    with pytest.raises(Crash):
        svc.submit(command=["true"], cluster="lab")
    svc.close()  # the process is gone

    svc = Service.open(fast_config, db, source="test")  # a later, separate sync process
    try:
        task_id = only_task(svc)
        task = svc.get(task_id)
        (att,) = svc.attempts(task_id)
        assert task.state == S.SUBMITTING and att.job_id is None and att.token
        assert jobs_of(task_id, since) == {}, "sbatch must not have run"

        # Within the grace period the sync waits: the submitter might still be running sbatch.
        assert time.time() - (att.created_at or 0) < SUBMIT_GRACE - 1, (
            "too slow to test the grace period"
        )
        report = svc.sync_cluster("lab")
        assert report.unreachable is None and not report.errors, report
        assert svc.get(task_id).state == S.SUBMITTING
        assert [a.number for a in svc.attempts(task_id)] == [1]

        # After it (counted from when the submitter was found gone): attempt 1 is written off
        # as never submitted, and after the retry backoff exactly one new one goes out.
        gone_at = svc.get(task_id).lease_lost_at  # the grace counts from here, not created_at
        assert gone_at is not None, "the sync above found the submitter gone"
        time.sleep(max(0.0, gone_at + SUBMIT_GRACE + 0.5 - time.time()))
        report = svc.sync_cluster("lab")
        assert (task_id, "submitting", "retrying") in report.changes, report
        assert svc.get(task_id).next_attempt_at is not None, "a never-submitted attempt backs off"
        drive_until(svc, task_id, lambda t: t.attempt_count == 2 and t.state != S.SUBMITTING, 60,
                    "the second attempt to be submitted")  # fmt: skip
        a1, a2 = svc.attempts(task_id)
        assert (a1.state, a1.reason, a1.job_id) == (S.LOST, "never submitted", None)
        assert a2.job_id, "the new attempt is submitted"
        assert any(f"no job found for token {att.token}" in e.detail for e in svc.events(task_id))

        done = drive_until(svc, task_id, lambda t: t.state.terminal, 120, "task to finish")
        assert done.state == S.SUCCEEDED, done.reason
        assert [a.number for a in svc.attempts(task_id)] == [1, 2]
        wait_for(lambda: jobs_of(task_id, since).get(a2.job_id or "", {}).get("state") == "COMPLETED",
                 30, "sacct to record the job")  # fmt: skip
        jobs = jobs_of(task_id, since)
        assert list(jobs) == [a2.job_id], jobs  # exactly one job in Slurm, the recorded one
        assert jobs[a2.job_id]["name"] == f"hpcb-{task_id}-2"
        assert jobs[a2.job_id]["comment"] == f"hpcb:{a2.token}"
    finally:
        svc.close()


def _crash_before_sbatch(requests: Any) -> Any:
    raise Crash


def crash_after_sbatch(svc: Service) -> list[str]:
    """Make the lab backend's submit run for real, then die before its outcome is recorded
    (the outcome is lost with the process); the job ids sbatch made land in the list."""
    backend = svc.backend("lab")
    real_submit = backend.submit
    job_ids: list[str] = []

    def submit_then_crash(requests: Any) -> Any:
        outcomes = real_submit(requests)
        job_ids.extend(o.job_id for o in outcomes if o.job_id)
        raise Crash

    backend.submit = submit_then_crash  # type: ignore[method-assign]
    return job_ids


@pytest.mark.parametrize("command, where", [
    (["true"], "sacct"),  # the job is over before the sync: found by name in sacct
    (["sleep", "6"], "squeue"),  # still queued/running: found by comment in squeue
])  # fmt: skip
def test_sbatch_ran_but_job_id_never_recorded(
    fast_config: Path, db: Path, command: list[str], where: str
) -> None:
    """Window 2: sbatch ran, the process died before it recorded the job id."""
    since = time.time() - 5
    svc = Service.open(fast_config, db, source="doomed")
    job_ids = crash_after_sbatch(svc)
    with pytest.raises(Crash):
        svc.submit(command=command, cluster="lab")
    svc.close()
    assert len(job_ids) == 1
    job_id = job_ids[0]

    svc = Service.open(fast_config, db, source="test")
    try:
        task_id = only_task(svc)
        (att,) = svc.attempts(task_id)
        assert svc.get(task_id).state == S.SUBMITTING and att.job_id is None
        if where == "sacct":
            wait_for(
                lambda: not squeue_as_root("-j", job_id).strip(), 60, "the job to leave squeue"
            )
        else:
            assert squeue_as_root("-j", job_id).strip(), "the job should still be in squeue"
        report = svc.sync_cluster("lab")
        assert report.unreachable is None and not report.errors, report
        (att,) = svc.attempts(task_id)
        assert att.job_id == job_id, "adopted in the first sync, within the grace period"
        assert any(
            e.detail == f"attempt 1: adopted job {job_id} found by token"
            for e in svc.events(task_id)
        )

        done = drive_until(svc, task_id, lambda t: t.state.terminal, 120, "task to finish")
        assert done.state == S.SUCCEEDED, done.reason
        assert [a.number for a in svc.attempts(task_id)] == [1]
        wait_for(lambda: jobs_of(task_id, since).get(job_id, {}).get("state") == "COMPLETED", 30,
                 "sacct to record the job")  # fmt: skip
        jobs = jobs_of(task_id, since)
        assert list(jobs) == [job_id], jobs  # no second job
        assert jobs[job_id]["comment"] == f"hpcb:{att.token}"
    finally:
        svc.close()


@pytest.mark.parametrize("command, where", [
    (["true"], "ended"),  # the elements are over before the sync: their markers, or sacct
    (["sleep", "6"], "squeue"),  # still queued/running: by (array token, index) in squeue
])  # fmt: skip
def test_an_array_whose_sbatch_reply_was_lost_is_adopted_element_by_element(
    fast_config: Path, db: Path, command: list[str], where: str
) -> None:
    """Window 2 for an array: sbatch made the array, the process died before it recorded any
    element. Nothing was written per element on the cluster; the attempts carry their
    (array token, index) from the write-ahead, and the sync finds each element by it."""
    svc = Service.open(fast_config, db, source="doomed")
    job_ids = crash_after_sbatch(svc)
    with pytest.raises(Crash):
        svc.submit_many([{"command": command, "cluster": "lab", "name": f"el{i}"} for i in range(3)])
    svc.close()
    assert len(job_ids) == 3 and len({j.split("_")[0] for j in job_ids}) == 1, job_ids  # one array
    array = job_ids[0].split("_")[0]
    svc = Service.open(fast_config, db, source="test")
    try:
        tasks = sorted(svc.list_tasks(), key=lambda t: t.spec.name)
        atts = [svc.attempts(t.id)[0] for t in tasks]
        assert all(a.job_id is None and a.backend_ref.get("array") for a in atts), atts
        if where == "ended":
            wait_for(lambda: not squeue_as_root("-j", array).strip(), 60, "the array to leave squeue")
        else:
            assert squeue_as_root("-j", array).strip(), "the array should still be in squeue"
        report = svc.sync_cluster("lab")
        assert report.unreachable is None and not report.errors, report
        by_index = {str(a.backend_ref["index"]): a.task_id for a in atts}
        for t in tasks:
            (att,) = svc.attempts(t.id)
            assert att.job_id == f"{array}_{att.backend_ref['index']}", (att, by_index)
        ids = [t.id for t in tasks]
        deadline = time.monotonic() + 120
        while not all(svc.get(i).state.terminal for i in ids):
            assert time.monotonic() < deadline, [svc.get(i).state for i in ids]
            svc.sync_cluster("lab")
            time.sleep(1.0)
        assert [svc.get(i).state for i in ids] == [S.SUCCEEDED] * 3
        assert all(len(svc.attempts(i)) == 1 for i in ids)  # adopted, never submitted again
    finally:
        subprocess.run(["scancel", array], capture_output=True, timeout=60)
        svc.close()


# --------------------------------------------------------------------------- concurrency


def test_two_syncs_and_three_submits_at_once(fast_config: Path, db: Path, tmp_path: Path) -> None:
    since = time.time() - 5
    env = {**os.environ, "HPCBRIDGE_CONFIG": str(fast_config), "HPCBRIDGE_DB": str(db)}
    env.pop("HPCBRIDGE_CLUSTER", None)

    def cli(*argv: str) -> list[str]:
        return [sys.executable, "-m", "hpcbridge", *argv]

    for _ in range(3):  # tasks in flight while the syncs run
        res = subprocess.run(cli("submit", "--cluster", "lab", "--", "sleep", "5"), env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr

    skips_per_round = []
    for _round in range(4):  # until the two syncs have overlapped (almost always the first round)
        procs = [subprocess.Popen(cli("sync"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]  # fmt: skip
        procs += [subprocess.Popen(cli("submit", "--cluster", "lab", "--", "sleep", "2"), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(3)]  # fmt: skip
        outs = [(p.communicate(timeout=180), p.returncode) for p in procs]
        for (out, err), rc in outs:
            assert rc == 0, f"exit {rc}: {out}\n{err}"
            assert "database is locked" not in err + out
            assert "Traceback" not in err
        skipped = ["skipped (another sync holds the lock)" in out for (out, _), _ in outs[:2]]
        assert skipped.count(True) <= 1, "the lock is held by one of them, not by nobody"
        skips_per_round.append(skipped.count(True))
        if any(skipped):
            break
    assert 1 in skips_per_round, f"the two syncs never overlapped in {len(skips_per_round)} rounds"

    svc = Service.open(fast_config, db, source="test")
    try:
        deadline = time.monotonic() + 180
        while any(not t.state.terminal for t in svc.list_tasks()) and time.monotonic() < deadline:
            res = subprocess.run(
                cli("sync", "-q"), env=env, capture_output=True, text=True, timeout=120
            )
            assert res.returncode == 0, res.stderr
            time.sleep(2)
        tasks = svc.list_tasks()
        assert len(tasks) == 3 + 3 * len(skips_per_round)
        assert {t.id: t.state for t in tasks} == {t.id: S.SUCCEEDED for t in tasks}
        jobs = ct.slurm_jobs(since)
        for t in tasks:
            (att,) = svc.attempts(t.id)  # nobody submitted a second attempt
            mine = sorted(jid for jid, j in jobs.items() if j["name"].startswith(f"hpcb-{t.id}-"))
            assert mine == [att.job_id], (t.id, mine, att)
    finally:
        svc.close()
