"""reconcile.apply_observation on a Slurm-side requeue, fed the JobInfo shapes measured on the lab (22.05):
squeue shows the requeued job PENDING with its restart count up at once, while sacct names the
cause (the earlier instance's PREEMPTED/NODE_FAIL row) only seconds later."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from hpcbridge.config import parse_config
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Attempt, JobInfo, Task
from hpcbridge.options import SubmitOptions, build_spec
from hpcbridge.reconcile import REQUEUE_CAUSE_WAIT_SECONDS, Effects, apply_observation
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.slurm import requeue_state

S = TaskState


def running_task(tmp_path: Path) -> tuple[Service, str]:
    svc = Service(Runtime(parse_config({}), Registry(tmp_path / "r.db"), source="test"))
    spec, _ = build_spec(SubmitOptions(command=("true",)), svc.cluster("local"))
    now = time.time()
    t = Task(id="t1", spec=spec, state=S.CREATED, metadata={}, created_at=now, updated_at=now)
    reg = svc.registry
    reg.insert_task(t, source="test")
    reg.transition("t1", S.CREATED, S.STAGING, source="test")
    with reg.transaction():
        reg.add_attempt(Attempt(task_id="t1", number=1, token="tok", state=S.SUBMITTING, created_at=now))
        reg.transition("t1", S.STAGING, S.SUBMITTING, source="test", attempt=1,
                       fields={"attempt_count": 1})  # fmt: skip
    reg.update_attempt("t1", 1, {"job_id": "7", "nodes": "node1", "started_at": now - 30, "reason": "Priority"})
    reg.transition("t1", S.SUBMITTING, S.RUNNING, source="test", attempt=1)
    return svc, "t1"


def apply(svc: Service, tid: str, info: JobInfo, now: float) -> None:
    task = svc.registry.get_task(tid)
    att = svc.registry.current_attempts([tid])[tid]
    # The Slurm backend maps each cause where it parses sacct; do what it does.
    info = replace(info, requeue_states=tuple(requeue_state(c) for c in info.requeue_causes))
    apply_observation(svc.runtime, task, att, info, now, Effects())


def test_requeue_waits_for_its_cause_then_records_it(tmp_path: Path) -> None:
    svc, tid = running_task(tmp_path)
    now = time.time()
    pending = JobInfo(job_id="7", raw_state="PENDING", state=S.QUEUED, source="squeue", reason="BeginTime",
                      restarts=1, submit_time=now - 2)  # fmt: skip
    apply(svc, tid, pending, now)  # sacct has no row for the earlier instance yet
    assert svc.registry.get_task(tid).state == S.RUNNING
    att = svc.registry.current_attempts([tid])[tid]
    assert (att.restarts, att.nodes) == (0, "node1")  # the failed node is kept for excluded_nodes

    apply(svc, tid, replace(pending, requeue_causes=("NODE_FAIL",)), now + 3)
    task = svc.registry.get_task(tid)
    assert task.state == S.QUEUED and task.excluded_nodes == ("node1",)
    states = [e.to_state for e in svc.registry.events(tid) if e.kind == "state"]
    assert states[-3:] == ["running", "node_failed", "queued"]
    att = svc.registry.current_attempts([tid])[tid]
    assert att.restarts == 1

    again = JobInfo(job_id="7", raw_state="RUNNING", state=S.RUNNING, source="squeue", reason=None,
                    restarts=1, nodes="node2", requeue_causes=("NODE_FAIL",))  # fmt: skip
    apply(svc, tid, again, now + 15)
    att = svc.registry.current_attempts([tid])[tid]
    assert svc.registry.get_task(tid).state == S.RUNNING
    assert att.nodes == "node2" and att.reason is None  # no stale pending reason


def test_requeue_without_a_cause_is_recorded_as_unknown_after_the_wait(tmp_path: Path) -> None:
    svc, tid = running_task(tmp_path)
    now = time.time()
    pending = JobInfo(job_id="7", raw_state="PENDING", state=S.QUEUED, source="squeue", reason="BeginTime",
                      restarts=1, submit_time=now)  # fmt: skip
    apply(svc, tid, pending, now + 1)
    assert svc.registry.get_task(tid).state == S.RUNNING
    apply(svc, tid, pending, now + REQUEUE_CAUSE_WAIT_SECONDS + 1)  # accounting never answered
    assert svc.registry.get_task(tid).state == S.QUEUED
    assert svc.registry.current_attempts([tid])[tid].restarts == 1
    assert any("unknown cause" in e.detail for e in svc.registry.events(tid))


def test_a_stale_cause_does_not_explain_a_newer_requeue(tmp_path: Path) -> None:
    svc, tid = running_task(tmp_path)
    svc.registry.update_attempt(tid, 1, {"restarts": 1})
    now = time.time()
    # restart 2 seen in squeue; sacct still only knows the first requeue's cause
    info = JobInfo(job_id="7", raw_state="PENDING", state=S.QUEUED, source="squeue", restarts=2,
                   submit_time=now, requeue_causes=("PREEMPTED",))  # fmt: skip
    apply(svc, tid, info, now + 1)
    assert svc.registry.get_task(tid).state == S.RUNNING
    apply(svc, tid, replace(info, requeue_causes=("PREEMPTED", "NODE_FAIL")), now + 2)
    states = [e.to_state for e in svc.registry.events(tid) if e.kind == "state"]
    assert states[-2:] == ["node_failed", "queued"]
