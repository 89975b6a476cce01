"""A Slurm-side requeue through the public sync cycle (FakeBackend), fed the JobInfo shapes
measured on the lab (22.05): squeue shows the requeued job PENDING with its restart count up
at once, while sacct names the cause (the earlier instance's PREEMPTED/NODE_FAIL row) only
seconds later."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hpcbridge.config import parse_config
from hpcbridge.lifecycle import TaskState
from hpcbridge.reconcile import REQUEUE_CAUSE_WAIT_SECONDS
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.slurm import requeue_state
from hpcbridge.testing import FakeBackend

S = TaskState


def running_task(tmp_path: Path) -> tuple[Service, FakeBackend, str]:
    fake = FakeBackend()
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000}
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}})
    svc = Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": fake}, source="test"))
    task = svc.submit(command=["true"], name="sim")
    fake.set_state("sim", 1, S.RUNNING, nodes="node1", start_time=time.time() - 30)
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.RUNNING
    return svc, fake, task.id


def observe(svc: Service, fake: FakeBackend, state: TaskState, **fields: Any) -> None:
    """The scheduler now reports this; one sync cycle reads it. The Slurm backend maps each
    requeue cause where it parses sacct: do what it does."""
    causes = fields.get("requeue_causes", ())
    fake.set_state("sim", 1, state, requeue_states=tuple(requeue_state(c) for c in causes), **fields)
    svc.sync_cluster("lab")


def test_requeue_waits_for_its_cause_then_records_it(tmp_path: Path) -> None:
    svc, fake, tid = running_task(tmp_path)
    now = time.time()
    pending = {"raw_state": "PENDING", "reason": "BeginTime", "restarts": 1, "submit_time": now - 2}
    observe(svc, fake, S.QUEUED, **pending)  # sacct has no row for the earlier instance yet
    assert svc.registry.get_task(tid).state == S.RUNNING
    att = svc.registry.current_attempts([tid])[tid]
    assert (att.restarts, att.nodes) == (0, "node1")  # the failed node is kept for excluded_nodes

    observe(svc, fake, S.QUEUED, **pending, requeue_causes=("NODE_FAIL",))
    task = svc.registry.get_task(tid)
    assert task.state == S.QUEUED and task.excluded_nodes == ("node1",)
    states = [e.to_state for e in svc.registry.events(tid) if e.kind == "state"]
    assert states[-3:] == ["running", "node_failed", "queued"]
    att = svc.registry.current_attempts([tid])[tid]
    assert att.restarts == 1

    observe(svc, fake, S.RUNNING, raw_state="RUNNING", reason=None, restarts=1, nodes="node2",
            requeue_causes=("NODE_FAIL",))  # fmt: skip
    att = svc.registry.current_attempts([tid])[tid]
    assert svc.registry.get_task(tid).state == S.RUNNING
    assert att.nodes == "node2" and att.reason is None  # no stale pending reason


def test_requeue_without_a_cause_is_recorded_as_unknown_after_the_wait(tmp_path: Path) -> None:
    svc, fake, tid = running_task(tmp_path)
    pending = {"raw_state": "PENDING", "reason": "BeginTime", "restarts": 1}
    observe(svc, fake, S.QUEUED, **pending, submit_time=time.time() - 1)
    assert svc.registry.get_task(tid).state == S.RUNNING
    # accounting never answered: the requeue happened longer ago than the wait
    observe(svc, fake, S.QUEUED, **pending, submit_time=time.time() - REQUEUE_CAUSE_WAIT_SECONDS - 1)
    assert svc.registry.get_task(tid).state == S.QUEUED
    assert svc.registry.current_attempts([tid])[tid].restarts == 1
    assert any("unknown cause" in e.detail for e in svc.registry.events(tid))


def test_a_stale_cause_does_not_explain_a_newer_requeue(tmp_path: Path) -> None:
    svc, fake, tid = running_task(tmp_path)
    svc.registry.update_attempt(tid, 1, {"restarts": 1})
    # restart 2 seen in squeue; sacct still only knows the first requeue's cause
    info = {"raw_state": "PENDING", "restarts": 2, "submit_time": time.time()}
    observe(svc, fake, S.QUEUED, **info, requeue_causes=("PREEMPTED",))
    assert svc.registry.get_task(tid).state == S.RUNNING
    observe(svc, fake, S.QUEUED, **info, requeue_causes=("PREEMPTED", "NODE_FAIL"))
    states = [e.to_state for e in svc.registry.events(tid) if e.kind == "state"]
    assert states[-2:] == ["node_failed", "queued"]


def test_a_node_failure_of_a_multi_node_job_excludes_every_node_of_the_failed_instance(tmp_path: Path) -> None:
    svc, fake, tid = running_task(tmp_path)
    svc.registry.update_attempt(tid, 1, {"nodes": "node[1,3]"})
    # the requeued instance already runs elsewhere: its node must not be the one excluded
    observe(svc, fake, S.RUNNING, raw_state="RUNNING", restarts=1, nodes="node2",
            extra={"node_names": ("node2",)}, requeue_causes=("NODE_FAIL",))  # fmt: skip
    assert svc.registry.get_task(tid).excluded_nodes == ("node1", "node3")
