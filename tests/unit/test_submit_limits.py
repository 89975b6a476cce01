"""max_submit_jobs: tasks over the cluster's limit wait in hpcbridge, visibly, and go out as
slots free; they never fail for it (a Service on the FakeBackend)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hpcbridge.errors import SubmitLimitReached
from hpcbridge.lifecycle import TaskState
from hpcbridge.testing import FakeBackend

from .test_cycle import make_service

S = TaskState


def test_tasks_over_max_submit_jobs_wait_and_go_out_as_jobs_end(tmp_path: Path) -> None:
    fake = FakeBackend()
    svc = make_service(tmp_path, fake, max_submit_jobs=3)
    tasks = svc.submit_many([{"command": ["true"], "name": f"t{i}"} for i in range(5)])
    states = [t.state for t in tasks]
    assert states.count(S.QUEUED) == 3 and states.count(S.CREATED) == 2, states
    waiting = [t for t in tasks if t.state == S.CREATED]
    for t in waiting:
        assert any("waiting for a submit slot" in (e.detail or "") and "max_submit_jobs = 3" in (e.detail or "")
                   for e in svc.events(t.id)), [e.detail for e in svc.events(t.id)]
    svc.sync_cluster("lab")  # nothing ended: still no room
    assert len(fake.submitted) == 3
    fake.set_state(tasks[0].spec.name, 1, S.SUCCEEDED, exit_code=0)
    svc.sync_cluster("lab")
    svc.sync_cluster("lab")
    assert len(fake.submitted) == 4  # one slot freed, one more went out
    for name in ("t1", "t2", "t3"):
        fake.set_state(name, 1, S.SUCCEEDED, exit_code=0)
    for _ in range(4):
        svc.sync_cluster("lab")
    fake.set_state("t4", 1, S.SUCCEEDED, exit_code=0)
    for _ in range(3):
        svc.sync_cluster("lab")
    assert [svc.get(t.id).state for t in tasks] == [S.SUCCEEDED] * 5
    assert len(fake.submitted) == 5  # never more than one job per task
    svc.close()


def test_a_cluster_lost_while_planning_hands_the_tasks_back_with_nothing_written_ahead(tmp_path: Path) -> None:
    from hpcbridge.errors import TransportError

    fake = FakeBackend()

    def lost(requests: object) -> dict[str, object]:
        raise TransportError("connection reset while reading the cluster's limits")

    fake.plan = lost  # type: ignore[method-assign, assignment]
    svc = make_service(tmp_path, fake)
    try:
        svc.submit_many([{"command": ["true"], "name": f"t{i}"} for i in range(3)])
    except TransportError:
        pass  # transient: reported as events, the tasks stay registered
    tasks = svc.list_tasks()
    assert [t.state for t in tasks] == [S.CREATED] * 3 and all(t.next_attempt_at for t in tasks)
    assert all(not svc.attempts(t.id) for t in tasks)  # no attempt was written ahead
    assert fake.submitted == []
    fake.plan = lambda requests: {}  # type: ignore[method-assign, assignment]
    svc.sync_cluster("lab")  # the sync submits them, once each
    assert sorted(r.task.spec.name for r in fake.submitted) == ["t0", "t1", "t2"]
    svc.close()


def refused(name: str) -> SubmitLimitReached:
    """What SlurmBackend makes of sbatch's refusal (tests/data/slurm/22.05/limits_refused_*)."""
    return SubmitLimitReached(["sbatch"], 1, "sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job"
                              " submission failed: Job violates accounting/QOS policy (job submit limit, user's"
                              " size and/or time limits)", reason="AssocMaxSubmitJobLimit", what=f"sbatch for {name}")  # fmt: skip


def test_a_refusal_for_the_submit_limit_withdraws_the_attempt_and_the_task_waits(tmp_path: Path) -> None:
    """Jobs submitted by other means fill slots hpcbridge does not count: sbatch refuses
    the job, no job exists, so the attempt is withdrawn (no attempt of the retry policy is
    spent), the task waits with the reason, and goes out later as attempt 1."""
    fake = FakeBackend()
    fake.fail_submit("t1", "permanent", error=refused("t1"))
    svc = make_service(tmp_path, fake)
    t0, t1 = svc.submit_many([{"command": ["true"], "name": f"t{i}", "max_attempts": 1} for i in range(2)])
    assert t0.state == S.QUEUED
    assert t1.state == S.CREATED and t1.attempt_count == 0 and not svc.attempts(t1.id)
    assert t1.next_attempt_at is not None and t1.next_attempt_at > time.time() + 30  # backs off
    details = [e.detail or "" for e in svc.events(t1.id)]
    assert any("attempt 1 withdrawn" in d and "AssocMaxSubmitJobLimit" in d and "waiting for a submit slot" in d
               for d in details), details
    svc.sync_cluster("lab")
    assert len(fake.submitted) == 2  # not due yet: no second sbatch within the backoff
    svc.registry.update_task(t1.id, {"next_attempt_at": time.time()})  # the backoff is over
    svc.sync_cluster("lab")
    assert svc.get(t1.id).state == S.QUEUED and [a.number for a in svc.attempts(t1.id)] == [1]
    assert len(fake.submitted) == 3
    svc.close()


def test_a_refused_retry_keeps_its_earlier_attempts_and_waits_as_retrying(tmp_path: Path) -> None:
    fake = FakeBackend()
    svc = make_service(tmp_path, fake)
    [t] = svc.submit_many([{"command": ["true"], "name": "t0", "max_attempts": 2}])
    fake.set_state("t0", 1, S.PREEMPTED)
    fake.fail_submit("t0", "permanent", attempt=2, error=refused("t0"))
    svc.sync_cluster("lab")
    assert svc.get(t.id).state == S.PREEMPTED
    svc.registry.update_task(t.id, {"next_attempt_at": time.time()})  # its backoff is over
    svc.sync_cluster("lab")  # attempt 2 goes out and is refused
    task = svc.get(t.id)
    assert task.state == S.RETRYING and task.attempt_count == 1, (task.state, task.attempt_count)
    assert [a.number for a in svc.attempts(t.id)] == [1]
    assert any("attempt 2 withdrawn" in (e.detail or "") for e in svc.events(t.id))
    svc.registry.update_task(t.id, {"next_attempt_at": time.time()})
    svc.sync_cluster("lab")  # max_attempts = 2: the refusal spent none of them
    assert svc.get(t.id).state == S.QUEUED and [a.number for a in svc.attempts(t.id)] == [1, 2]
    svc.close()


def test_limits_still_being_read_hold_nothing_up_and_refused_tasks_are_gated_once_they_come(tmp_path: Path) -> None:
    """The first submission reads the cluster's limits in a thread of their own (two
    sacctmgr queries, 0.3 s) and does not wait for them: the tasks go out, and what sbatch
    refuses for the submit limit is withdrawn and, once the limit is known, started again
    through the gate (here: no slot, so it waits). The next submission finds the limit kept
    and gates before anything is claimed."""
    import threading

    from hpcbridge.slurm.limits import ClusterLimits

    fake = FakeBackend()
    sent = threading.Event()
    reads: list[str] = []

    def slow_limits() -> ClusterLimits:
        reads.append(threading.current_thread().name)
        assert sent.wait(10), "the submission waited for the limits"
        return ClusterLimits(max_array_size=None, max_job_count=None, max_submit_jobs=3)

    real_submit = fake.submit

    def submit(requests: Any) -> Any:
        out = real_submit(requests)
        sent.set()
        return out

    fake.cluster_limits = slow_limits  # type: ignore[attr-defined]
    fake.submit = submit  # type: ignore[method-assign]
    for name in ("t3", "t4"):  # what Slurm would refuse: 3 slots
        fake.fail_submit(name, "permanent", error=refused(name))
    svc = make_service(tmp_path, fake)  # no max_submit_jobs configured: the cluster's counts
    tasks = svc.submit_many([{"command": ["true"], "name": f"t{i}"} for i in range(5)])
    assert reads and reads[0].startswith("hpcbridge-limits-"), reads
    assert [t.state for t in tasks] == [S.QUEUED] * 3 + [S.CREATED] * 2
    assert len(fake.submitted) == 5  # t3 and t4 once each: the gate held them the second time
    for t in tasks[3:]:
        assert not svc.attempts(t.id) and t.attempt_count == 0
        assert any("withdrawn" in (e.detail or "") for e in svc.events(t.id))
    sent.clear()
    more = svc.submit_many([{"command": ["true"], "name": "t5"}])  # limits kept: gated first
    assert len(reads) == 1 and more[0].state == S.CREATED
    assert len(fake.submitted) == 5
    fake.set_state("t0", 1, S.SUCCEEDED, exit_code=0)
    for _ in range(3):
        svc.sync_cluster("lab")
    assert len(fake.submitted) == 6  # one slot freed: one more went out
    svc.close()


def test_tasks_with_inputs_wait_for_the_limits_before_anything_is_staged(tmp_path: Path) -> None:
    """A task over the limit would upload its inputs twice (staged, handed back, staged
    again), so tasks with inputs are gated before staging even while the limits are read."""
    import sys
    import threading
    import time

    from hpcbridge.slurm.limits import ClusterLimits

    fake = FakeBackend()
    staged: list[int] = []
    main = threading.main_thread()

    def limits() -> ClusterLimits:
        # Answer once the submitting thread waits for this read (in Thread.join), wherever
        # that is: before staging (gated first) or after planning (gated late).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main.ident or 0)
            if frame is not None and frame.f_code.co_name in ("_wait_for_tstate_lock", "join"):
                break
            time.sleep(0.002)
        return ClusterLimits(max_array_size=None, max_job_count=None, max_submit_jobs=1)

    real_prepare = fake.prepare

    def prepare(tasks: Any) -> Any:
        staged.append(len(tasks))
        return real_prepare(tasks)

    fake.cluster_limits = limits  # type: ignore[attr-defined]
    fake.prepare = prepare  # type: ignore[method-assign]
    svc = make_service(tmp_path, fake)
    data = tmp_path / "in.txt"
    data.write_text("x", encoding="utf-8")
    tasks = svc.submit_many([{"command": ["true"], "name": f"t{i}", "inputs": [str(data)]} for i in range(3)])
    assert staged == [1]  # only the task within the limit was staged
    assert [t.state for t in tasks] == [S.QUEUED, S.CREATED, S.CREATED]
    svc.close()


def test_a_limits_read_whose_connect_fails_tries_nothing_more(tmp_path: Path) -> None:
    """The host is down: the read gives up with its connect (the submission reports the
    error itself), rather than spending the connect attempts a second time in the read."""
    from hpcbridge.errors import TransportError
    from hpcbridge.slurm.limits import ClusterLimits

    fake = FakeBackend()
    calls: list[str] = []

    def connect() -> None:
        calls.append("connect")
        raise TransportError("connection refused")

    def limits() -> ClusterLimits:
        calls.append("limits")
        return ClusterLimits(max_array_size=None, max_job_count=None, max_submit_jobs=None)

    fake.connect = connect  # type: ignore[attr-defined]
    fake.cluster_limits = limits  # type: ignore[attr-defined]
    svc = make_service(tmp_path, fake)
    svc.runtime.prefetch_limits("lab")
    assert svc.runtime.cluster_limits("lab") is None
    assert calls == ["connect"]
    svc.close()


def test_limits_configured_for_the_cluster_are_never_read(tmp_path: Path) -> None:
    from hpcbridge.slurm.limits import ClusterLimits

    fake = FakeBackend()
    reads: list[str] = []

    def limits() -> ClusterLimits:
        reads.append("read")
        return ClusterLimits(max_array_size=None, max_job_count=None, max_submit_jobs=None)

    fake.cluster_limits = limits  # type: ignore[attr-defined]
    svc = make_service(tmp_path, fake, max_submit_jobs=2, max_array_size=100)
    tasks = svc.submit_many([{"command": ["true"], "name": f"t{i}"} for i in range(3)])
    assert [t.state for t in tasks] == [S.QUEUED, S.QUEUED, S.CREATED] and not reads
    svc.close()
