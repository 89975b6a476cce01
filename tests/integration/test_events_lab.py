"""Stall detection and watched files on the real lab (issue 12 items 3 and 5): a job that
writes once and hangs is found stalled by the one batched watch command (through the real
sshd, ages on the cluster's clock) and, with on_stall = "cancel", ends `cancelled` with the
stall as its reason; a job that keeps writing is never stalled and its watched file's regex
fires once; every watch command covers all the watched running tasks; with on_stall =
"requeue" the next attempt runs on another node; walltime_near from Slurm's start time."""

from __future__ import annotations

import pytest

from hpcbridge import outbox
from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import drive_until

pytestmark = pytest.mark.integration
S = TaskState

HUNG = "echo started > progress.txt\nsleep 600\n"
# Converges at tick 10 and goes on writing (the watch looks at running tasks only).
TICKER = ("for i in $(seq 1 25); do echo tick $i >> progress.txt; [ $i = 10 ] && echo converged > result.txt;"
          " sleep 1; done\n")


def test_a_hung_job_is_stalled_and_cancelled_with_the_reason(service: Service,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    backend = service.backend("lab")
    sizes: list[int] = []
    real_watch = backend.watch  # type: ignore[attr-defined]

    def counted(requests):  # type: ignore[no-untyped-def]
        sizes.append(len(requests))
        return real_watch(requests)

    monkeypatch.setattr(backend, "watch", counted)
    hung = service.submit(script=HUNG, cluster="lab", name="hung", time="00:10:00",
                          stall_after="8s", on_stall="cancel", max_attempts=1)  # fmt: skip
    ticker = service.submit(script=TICKER, cluster="lab", name="ticker", time="00:05:00",
                            stall_after="8s", on_stall="cancel", watch_file=["result.txt:^converged$"])  # fmt: skip
    task = drive_until(service, hung.id, lambda t: t.state.terminal, 240, "the hung job to be cancelled")
    assert task.state is S.CANCELLED, (task.state, task.reason)
    assert task.reason and task.reason.startswith("stalled on "), task.reason
    assert "no file in its work dir changed for" in task.reason and "stall_after 8 s" in task.reason
    (stalled,) = [e for e in outbox.entries(service.registry, everything=True)
                  if e.notice.kind == "stalled" and e.notice.task_id == hung.id]  # fmt: skip
    assert "on_stall = cancel" in stalled.notice.detail
    done = drive_until(service, ticker.id, lambda t: t.state.terminal, 240, "the ticker to end")
    assert done.state is S.SUCCEEDED, (done.state, done.reason)
    kinds = [e.notice.kind for e in outbox.entries(service.registry, everything=True) if e.notice.task_id == ticker.id]
    assert "stalled" not in kinds, "a job that keeps writing is never stalled"
    assert kinds.count("file_matched") == 1, kinds
    assert sizes and max(sizes) == 2, f"one watch command per cycle for both running tasks: {sizes}"


def test_walltime_near_from_slurms_start_time_once(lab_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """walltime_near on a real job: its start time as Slurm reports it, its --time limit, a
    warning share raised to 0.9 (warn with 54 s of 60 left) so the test need not wait a
    minute; once per attempt."""
    import dataclasses

    from hpcbridge.config import load_config
    from hpcbridge.registry import Registry
    from hpcbridge.runtime import Runtime

    cfg = load_config(lab_config)
    lab = dataclasses.replace(cfg.cluster("lab"), walltime_warn_fraction=0.9)
    config = dataclasses.replace(cfg, clusters={**cfg.clusters, "lab": lab})
    svc = Service(Runtime(config, Registry(tmp_path / "r.db"), source="test"))
    try:
        task = svc.submit(script="sleep 40\n", cluster="lab", name="short", time="1")
        drive_until(svc, task.id, lambda t: t.state is S.RUNNING, 120, "the job to start")
        started = svc.attempts(task.id)[-1].started_at
        assert started is not None

        def warned() -> bool:
            return any(e.notice.kind == "walltime_near" for e in outbox.entries(svc.registry, everything=True))

        drive_until(svc, task.id, lambda t: warned(), 60, "walltime_near")
        for _ in range(2):
            svc.sync_cluster("lab")
        (e,) = [e for e in outbox.entries(svc.registry, everything=True) if e.notice.kind == "walltime_near"]
        assert "of its 60 s time limit left" in e.notice.detail, e.notice.detail
        assert e.notice.at - started >= 6 - 1, "not before 10% of the limit had passed"
    finally:
        active = [t.id for t in svc.list_tasks() if not t.state.terminal]
        if active:
            svc.kill(active)
        svc.close()


def test_on_stall_requeue_runs_the_next_attempt_on_another_node(service: Service) -> None:
    """on_stall = "requeue" on the lab: the hung job is cancelled, the task waits as after a
    node failure, and its next attempt's sbatch excludes the node it hung on."""
    task = service.submit(script=HUNG, cluster="lab", name="hung-rq", time="00:10:00",
                          stall_after="8s", on_stall="requeue", max_attempts=2)  # fmt: skip
    drive_until(service, task.id, lambda t: t.attempt_count >= 2 and t.state is S.RUNNING, 300,
                "the second attempt to run")  # fmt: skip
    first, second = service.attempts(task.id)[:2]
    assert first.nodes and second.nodes and first.nodes != second.nodes, (first.nodes, second.nodes)
    fresh = service.get(task.id)
    assert first.nodes in fresh.excluded_nodes, fresh.excluded_nodes
    kinds = [e.notice.kind for e in outbox.entries(service.registry, everything=True) if e.notice.task_id == task.id]
    assert kinds.count("stalled") == 1 and "node_failed" in kinds, kinds
    service.kill([task.id])
