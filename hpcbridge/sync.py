"""One sync cycle per cluster: poll every in-flight job in one batch, apply the lifecycle,
fetch outputs, submit what is due. Cron-safe: a per-cluster ``flock`` (released by the kernel
when its holder dies, so a crashed run never blocks the next) lets only one process work on a
cluster at a time; the others return at once.

A cycle that cannot reach the cluster changes nothing: the poll happens before any write, and
a TransportError aborts the cycle for that cluster.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConflictError, HpcBridgeError, TransportError
from .lifecycle import IN_FLIGHT, TERMINAL, WAITING, TaskState, plan_transition
from .models import Attempt, JobInfo, Task
from .slurm_states import map_state

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)
S = TaskState

# The previous instance's end (sacct -D), read through the one state table, explains a
# Slurm-side requeue when it is an interruption; REQUEUED (an admin) is not one.
INTERRUPTIONS = frozenset({S.NODE_FAILED, S.PREEMPTED})


def _with_nodes(excluded: tuple[str, ...], nodes: str) -> tuple[str, ...]:
    """``excluded`` plus the comma-separated ``nodes``, in order, without repeats."""
    return tuple(dict.fromkeys((*excluded, *nodes.split(","))))


# How long a task may sit in created/staging before sync assumes its submitter is gone.
ORPHAN_SECONDS = 10.0


# How long a Slurm-side requeue (restart count up) may wait for sacct to name its cause.
REQUEUE_CAUSE_WAIT_SECONDS = 60.0


@dataclass
class SyncReport:
    cluster: str
    skipped: bool = False  # another process holds this cluster's lock
    unreachable: str | None = None
    polled: int = 0
    submitted: int = 0
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (task, from, to)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def cluster_lock(data_dir: Path, cluster: str) -> Iterator[bool]:
    """Non-blocking exclusive lock for one cluster's cycle; yields False when held elsewhere."""
    lock_dir = data_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"sync-{cluster}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def sync_all(service: Service, clusters: list[str] | None = None) -> list[SyncReport]:
    names = clusters if clusters else service.active_clusters()
    reports = []
    for name in names:
        reports.append(sync_cluster(service, name))
    return reports


def sync_cluster(service: Service, cluster: str) -> SyncReport:
    report = SyncReport(cluster)
    started = time.monotonic()
    service.config.cluster(cluster)  # unknown cluster -> ConfigError before locking
    with cluster_lock(service.data_dir, cluster) as got:
        if not got:
            report.skipped = True
            return report
        service.registry.journal.clear()
        try:
            _cycle(service, cluster, report)
            # Every committed change of the cycle, submissions and retries included.
            report.changes = list(service.registry.journal)
        except TransportError as exc:
            report.unreachable = str(exc.message)
            log.warning("cluster %s unreachable, tasks left as they were: %s", cluster, exc.message)
    report.seconds = time.monotonic() - started
    return report


def _cycle(service: Service, cluster: str, report: SyncReport) -> None:
    reg = service.registry
    backend = service.backend(cluster)
    tasks = reg.list_tasks(states=set(S) - TERMINAL, cluster=cluster, newest_first=False)
    if not tasks:
        return
    attempts = reg.current_attempts([t.id for t in tasks])

    # 1. Poll every in-flight attempt in one batch (the backend makes it one round trip).
    in_flight = [t for t in tasks if t.state in IN_FLIGHT and t.id in attempts]
    if in_flight:
        requests = [service.poll_request(t, attempts[t.id]) for t in in_flight]
        service.charge(cluster, 2)
        # The snapshot's time is when the query was sent: an attempt written after it cannot
        # be in the answer, so grace periods are measured against this, not the reply's time.
        now = time.time()
        infos = backend.poll(requests)  # TransportError here: nothing written yet
        report.polled = len(requests)
        cancels = []
        deadline = time.monotonic() + service.config.cluster(cluster).cycle_timeout
        for task in in_flight:
            if time.monotonic() > deadline:
                report.errors.append("cycle time limit reached; remaining tasks wait for the next cycle")
                break
            att = attempts[task.id]
            try:
                _apply(service, task, att, infos.get(att.token), now)
            except ConflictError as exc:  # another process (kill, submit) moved it: next cycle
                log.info("task %s: %s", task.id, exc)
            except HpcBridgeError as exc:
                report.errors.append(f"{task.id}: {exc.message}")
                log.error("task %s: %s", task.id, exc.message)
            if not task.cancel_requested:  # as listed at the start of the cycle
                continue
            fresh = reg.get_task(task.id)
            if fresh.state in IN_FLIGHT:
                fresh_att = reg.current_attempts([task.id]).get(task.id)
                if fresh_att is not None and (fresh_att.job_id or fresh_att.backend_ref):
                    cancels.append(service.poll_request(fresh, fresh_att))
        if cancels:
            service.charge(cluster, 1)
            backend.cancel(cancels)

    # 2. Fetch outputs of finished jobs.
    for task in reg.list_tasks(states=[S.FETCHING], cluster=cluster, newest_first=False):
        _fetch(service, task, report)

    # 3. Submit what is due: new tasks (never staged or staging interrupted) and waiting retries.
    now = time.time()
    due = [
        t
        for t in reg.list_tasks(states=[S.CREATED, S.STAGING, *WAITING], cluster=cluster, newest_first=False)
        if not t.cancel_requested and (
            # A new task is normally started by the process that registered it, right away;
            # sync takes over only what was left behind (unreachable cluster, killed submitter).
            (t.state in (S.CREATED, S.STAGING)
             and (now - t.updated_at >= ORPHAN_SECONDS or (t.next_attempt_at or now + 1) <= now))
            or (t.state in WAITING and (t.next_attempt_at or 0) <= now))
    ]  # fmt: skip
    if due:
        service.start_attempts(cluster, due)
        report.submitted = len(due)


def _apply(service: Service, task: Task, att: Attempt, info: JobInfo | None, now: float) -> None:
    reg = service.registry
    policy = task.spec.retry
    if info is None:
        _absent(service, task, att, now)
        return

    # Attempt bookkeeping first: what Slurm says about the job, whatever its state.
    afields: dict[str, Any] = {"last_seen_at": now}
    if att.job_id is None and info.job_id:
        afields["job_id"] = info.job_id
        afields["submitted_at"] = info.submit_time or now
        reg.add_event(task.id, "info", f"attempt {att.number}: adopted job {info.job_id} found by token",
                      source=service.source, attempt=att.number)  # fmt: skip
    for key, value in (("nodes", info.nodes), ("partition", info.partition),
                       ("started_at", info.start_time), ("ended_at", info.end_time),
                       ("exit_code", info.exit_code), ("signal", info.signal)):  # fmt: skip
        if value not in (None, ""):
            afields[key] = value
    # The scheduler's current reason, or none: a pending reason (BeginTime, Priority) must not
    # outlive the wait it explained (it stayed on attempts that later ran and succeeded).
    afields["reason"] = info.reason
    if info.state is None:
        note = f"unknown scheduler state {info.raw_state!r} for job {info.job_id}; task left as it was"
        if att.reason != note:
            reg.add_event(task.id, "warning", note, source=service.source, attempt=att.number)
            log.warning("task %s: %s", task.id, note)
        afields["reason"] = note
        reg.update_attempt(task.id, att.number, afields)
        return
    afields["state"] = info.state

    current = task.state
    path: list[TaskState] = []
    details: list[str] = []
    # Slurm requeued the job itself (same job id, restart count up): record the interruption
    # and its cause (the previous instance's state in sacct -D) inside this attempt.
    tfields: dict[str, Any] = {}
    # The cause is known once sacct lists an earlier instance for every restart; a stale
    # cause (restart 2 while sacct only knows the first requeue) is not the latest one.
    cause_known = bool(info.requeue_causes) and len(info.requeue_causes) >= info.restarts
    cause_raw = info.requeue_causes[-1] if cause_known else None
    job_over = info.state in TERMINAL or info.state in (S.SUCCEEDED, S.PREEMPTED, S.NODE_FAILED)
    if info.restarts > att.restarts and cause_raw is None and not job_over:
        # sacct lags squeue: measured on 22.05, the requeued job shows PENDING with its restart
        # count up at once, but sacct keeps one row (the ended instance, read as current) for
        # up to ~7 s before the new instance's row appears and names the cause. Until then
        # change nothing - neither the task (it would read running -> queued with no reason,
        # then queued -> preempted -> queued) nor the attempt's nodes (the failed node that
        # `excluded_nodes` needs). Bounded: squeue's SubmitTime of a requeued job is the
        # requeue time; without accounting the cause stays unknown and is recorded as such.
        # (Never last_seen_at as a fallback: it moves every cycle. The instance's first start
        # is earlier than the requeue, so it can only shorten the wait.)
        requeued_at = info.submit_time or att.started_at or 0.0
        if now - requeued_at < REQUEUE_CAUSE_WAIT_SECONDS:
            reg.update_attempt(task.id, att.number, {"last_seen_at": now})
            return
    if info.restarts > att.restarts:
        afields["restarts"] = info.restarts
        mapped = map_state(cause_raw) if cause_raw else None
        cause = mapped if mapped in INTERRUPTIONS else None
        what = cause_raw or "an unknown cause (no accounting row)"
        details.append(f"job {info.job_id} requeued by Slurm (restart {info.restarts}) after {what}")
        if cause is not None:
            plan = plan_transition(current, cause, policy=policy, attempts_done=att.number,
                                   slurm_will_requeue=True)  # fmt: skip
            path.extend(plan.path)
            if cause == S.NODE_FAILED and att.nodes and policy.exclude_failed_nodes:
                tfields["excluded_nodes"] = _with_nodes(task.excluded_nodes, att.nodes)
            current = path[-1] if path else current
        else:  # e.g. REQUEUED: an admin's `scontrol requeue`, not an interruption
            reg.add_event(task.id, "info", details[-1], source=service.source, attempt=att.number)
            details.clear()

    # A PREEMPTED/NODE_FAIL state *reported as current* means this job is over: when Slurm
    # requeues a job itself it shows PENDING with a higher restart count instead (handled
    # above), so whether a new attempt follows is the retry policy's call.
    plan = plan_transition(current, info.state, policy=policy, attempts_done=att.number)
    path.extend(plan.path)
    if not path:
        reg.update_attempt(task.id, att.number, afields)
        return

    # Apply the whole path in one transaction: either every step is recorded or none.
    final = path[-1]
    # Slurm gives a job cancelled (or preempted) while pending a StartTime too - the moment it
    # left the queue - so a start is recorded only for a job that really ran.
    ran = (task.state in (S.RUNNING, S.SUSPENDED, S.COMPLETING) or S.RUNNING in path
           or final in (S.FETCHING, S.FAILED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.COMPLETING))  # fmt: skip
    if ran and task.started_at is None:
        tfields["started_at"] = info.start_time or now
    if final in TERMINAL or final in WAITING or final == S.FETCHING:
        tfields["ended_at"] = info.end_time or now
        tfields["exit_code"] = info.exit_code
        tfields["reason"] = plan.reason or _end_reason(info)
    if plan.resubmit_after is not None:
        tfields["next_attempt_at"] = now + plan.resubmit_after
        if final == S.NODE_FAILED and policy.exclude_failed_nodes and info.nodes:
            tfields["excluded_nodes"] = _with_nodes(task.excluded_nodes, info.nodes)
    with reg.transaction() as conn:
        reg.update_attempt(task.id, att.number, afields, conn)
        prev = task.state
        for i, state in enumerate(path):
            detail = details[i] if i < len(details) else _describe(info, state, plan.reason)
            reg.transition(task.id, prev, state, source=service.source, attempt=att.number,
                           detail=f"attempt {att.number}: {detail}",
                           fields=tfields if i == len(path) - 1 else None, conn=conn)  # fmt: skip
            log.info("task %s attempt %s: %s -> %s", task.id, att.number, prev.value, state.value)
            prev = state


def _describe(info: JobInfo, state: TaskState, reason: str) -> str:
    bits = [f"job {info.job_id} {info.raw_state}"]
    if state == S.QUEUED and info.reason and info.reason != "None":
        bits.append(f"reason {info.reason}")
    if info.nodes and state in (S.RUNNING, S.COMPLETING):
        bits.append(f"on {info.nodes}")
    if info.exit_code is not None and state not in (S.QUEUED, S.RUNNING):
        bits.append(f"exit code {info.exit_code}" + (f" signal {info.signal}" if info.signal else ""))
    if reason:
        bits.append(reason)
    return ", ".join(bits)


def _end_reason(info: JobInfo) -> str:
    if info.state == S.FAILED:
        if info.signal:
            return f"killed by signal {info.signal}"
        return f"exit code {info.exit_code}" if info.exit_code is not None else info.raw_state
    return info.raw_state if not info.reason or info.reason == "None" else f"{info.raw_state} ({info.reason})"


def _absent(service: Service, task: Task, att: Attempt, now: float) -> None:
    """The scheduler has no record of the attempt's job: never success; lost after a grace."""
    reg = service.registry
    cfg = service.config.cluster(task.cluster)
    if att.job_id is None:
        # Write-ahead row with no job id: either the submit is still in flight in another
        # process, or it died before sbatch ran / before recording the id. Give it the submit
        # grace period to show up by token, then submit a fresh attempt.
        if now - (att.created_at or now) < cfg.submit_grace_seconds:
            return
        detail = f"attempt {att.number}: no job found for token {att.token}; submitting again"
        with reg.transaction() as conn:
            reg.update_attempt(task.id, att.number, {"state": S.LOST, "reason": "never submitted"}, conn)
            # Not counted as a real attempt: the next attempt number still increments, but
            # the retry budget only counts attempts that reached the scheduler.
            reg.transition(task.id, S.SUBMITTING, S.RETRYING, source=service.source,
                           attempt=att.number, detail=detail,
                           fields={"next_attempt_at": now}, conn=conn)  # fmt: skip
        return
    seen = att.last_seen_at or att.submitted_at or att.created_at or now
    if now - seen < cfg.lost_grace_seconds:
        return
    plan = plan_transition(task.state, S.LOST, policy=task.spec.retry, attempts_done=att.number)
    detail = (f"attempt {att.number}: job {att.job_id} absent from the scheduler and its markers for "
              f"{now - seen:.0f} s (grace {cfg.lost_grace_seconds:.0f} s)")  # fmt: skip
    fields: dict[str, Any] = {"reason": plan.reason or "job vanished", "ended_at": now}
    if plan.resubmit_after is not None:
        fields["next_attempt_at"] = now + plan.resubmit_after
    with reg.transaction() as conn:
        reg.update_attempt(task.id, att.number, {"state": S.LOST, "reason": "vanished"}, conn)
        prev = task.state
        for i, state in enumerate(plan.path):
            reg.transition(task.id, prev, state, source=service.source, attempt=att.number,
                           detail=detail, fields=fields if i == len(plan.path) - 1 else None,
                           conn=conn)  # fmt: skip
            prev = state


def _fetch(service: Service, task: Task, report: SyncReport) -> None:
    try:
        files = service.fetch(task)
    except HpcBridgeError as exc:
        if exc.transient:
            report.errors.append(f"{task.id}: fetch failed, will retry: {exc.message}")
            return
        service._try_transition(task.id, S.FETCHING, S.FAILED, f"fetching outputs failed: {exc}",
                                fields={"reason": f"fetching outputs failed: {exc.message}"})  # fmt: skip
        return
    except OSError as exc:
        report.errors.append(f"{task.id}: fetch failed, will retry: {exc}")
        return
    missing = [p for p in task.spec.outputs if not any(f.match(p) for f in files)]
    detail = f"{len(files)} output file(s) fetched"
    if missing:
        detail += f"; no file matched {missing}"
    service._try_transition(task.id, S.FETCHING, S.SUCCEEDED, detail,
                            fields={"fetched_at": time.time(), "reason": None})  # fmt: skip
