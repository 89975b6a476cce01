"""One sync cycle per cluster: poll every in-flight job in one batch, apply the lifecycle,
cancel what must go, fetch outputs, submit what is due.

Cron-safe: a per-cluster ``flock`` (released by the kernel when its holder dies, so a crashed
run never blocks the next) lets one process work on a cluster at a time; the others return at
once. A cycle that cannot reach the cluster changes nothing: the poll happens before any
write, and a TransportError ends the cycle for that cluster. One task whose handling fails is
recorded on that task and the cycle goes on; one cluster that fails never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from .backends.base import PollRequest
from .backends.slurm_monitor import MonitoringBackend
from .errors import BackendError, ConfigError, ConflictError, HpcBridgeError, TransportError
from .leases import Lease, try_lock
from .lifecycle import ACTIVE, IN_FLIGHT, TERMINAL, WAITING, TaskState
from .models import Attempt, Task
from .notify import deliver
from .paths import missing_outputs
from .reconcile import (
    NEVER_SUBMITTED,
    Effects,
    apply_observation,
    record_task_error,
    submitter_gone_for,
)
from .runtime import Runtime
from .submission import gate_dependencies, start_attempts
from .watch import watch_running

log = logging.getLogger(__name__)
S = TaskState

# How long after an attempt was declared never-submitted the cycle still looks for a job
# carrying its token (a submitter that outlived everything), to cancel it.
STRAY_WATCH_SECONDS = 24 * 3600.0

# Accounting of an ended job is asked for this long after it was last seen (sacct lags
# squeue by a second or so); a job accounting never lists (purged, accounting off) stops
# costing a call then.
USAGE_WINDOW_SECONDS = 900.0

# Attempts whose log tails are kept when they reach one of these states.
ENDED_BADLY = frozenset(s.value for s in (S.FAILED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.CANCELLED,
                                          S.NODE_FAILED, S.PREEMPTED, S.RETRYING, S.LOST))  # fmt: skip
TAIL_LINES = 30


@dataclass
class SyncReport:
    """What one cycle on one cluster did."""

    cluster: str
    skipped: bool = False  # another process holds this cluster's lock
    unreachable: str | None = None  # the transport error that ended the cycle
    polled: int = 0
    submitted: int = 0
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (task, from, to)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unreachable and not self.errors


@contextmanager
def cluster_lock(data_dir: Path, cluster: str) -> Iterator[bool]:
    """Non-blocking exclusive lock for one cluster's cycle; yields False when held elsewhere."""
    with try_lock(data_dir / "locks" / f"sync-{cluster}.lock", note_pid=True) as got:
        yield got


def sync_all(rt: Runtime, clusters: Sequence[str] | None = None) -> list[SyncReport]:
    """One cycle on each named cluster (default: every cluster with active tasks). A cluster
    that fails, or that left the config, is reported and the others go on."""
    names = list(clusters) if clusters else rt.registry.clusters_with_active_tasks(ACTIVE)
    reports: list[SyncReport] = []
    try:
        _sync_each(rt, names, bool(clusters), reports)
    finally:
        # Events committed by the cycles (or left by earlier ones, or by a crash) go out
        # now, even when no cluster has work left.
        deliver_outbox(rt)
    return reports


def deliver_outbox(rt: Runtime) -> None:
    """Deliver the due outbox events; a delivery failure never fails the sync (the events
    stay in the outbox and are retried)."""
    try:
        deliver(rt)
    except Exception:  # noqa: BLE001 - notifications must never stop task tracking
        log.exception("delivering notifications failed; the events stay in the outbox")


def _sync_each(rt: Runtime, names: Sequence[str], named: bool, reports: list[SyncReport]) -> None:
    clusters = named
    for name in names:
        try:
            reports.append(sync_cluster(rt, name, notify=False))
        except ConfigError as exc:
            if clusters:  # the user named it: a usage error
                raise
            report = SyncReport(name)
            report.errors.append(f"cluster {name!r} is not in the config; its tasks are left as they are ({exc.message})")
            log.warning("%s", report.errors[-1])
            reports.append(report)


def sync_cluster(rt: Runtime, cluster: str, *, notify: bool = True) -> SyncReport:
    """One bounded cycle on ``cluster``; returns at once when another process holds it.
    Then (unless ``notify`` is False) the outbox is delivered, after the cycle's commits."""
    report = SyncReport(cluster)
    started = time.monotonic()
    rt.cluster(cluster)  # unknown cluster -> ConfigError before locking
    with cluster_lock(rt.data_dir, cluster) as got:
        if not got:
            report.skipped = True
            return report
        with rt.registry.recording() as changes:
            try:
                _cycle(rt, cluster, report)
            except TransportError as exc:
                report.unreachable = str(exc.message)
                log.warning("cluster %s unreachable, tasks left as they were: %s", cluster, exc.message)
        report.changes = list(changes)
    if notify:
        deliver_outbox(rt)
    report.seconds = time.monotonic() - started
    return report


def _cycle(rt: Runtime, cluster: str, report: SyncReport) -> None:
    reg = rt.registry
    tasks = reg.list_tasks(states=set(S) - TERMINAL, cluster=cluster, newest_first=False)
    strays = reg.stray_attempts(cluster, since=time.time() - STRAY_WATCH_SECONDS, reason=NEVER_SUBMITTED)
    unaccounted = reg.attempts_needing_usage(cluster, since=time.time() - USAGE_WINDOW_SECONDS)
    if not tasks and not strays and not unaccounted:
        return
    attempts = reg.current_attempts([t.id for t in tasks])
    effects = Effects()

    # 1. Poll every in-flight attempt (and recent never-submitted ones) in one batch, apply
    # what the scheduler says, and keep the log tails of attempts that just ended badly.
    in_flight = [t for t in tasks if t.state in IN_FLIGHT and t.id in attempts]
    if in_flight or strays:
        with reg.recording() as changes:
            _poll(rt, cluster, in_flight, attempts, strays, effects, report)
        _keep_tails(rt, cluster, changes, report)

    # 1b. Watch running tasks: walltime warnings; stalls and watched files in one command.
    try:
        watch_running(rt, cluster, effects)
    except TransportError:
        raise
    except HpcBridgeError as exc:  # the states are recorded; the watch looks again next cycle
        report.errors.append(f"watch: {exc.message}")

    # 2. Cancels: what the user asked for, and jobs that must not run again.
    _cancel(rt, cluster, tasks, effects, report)

    # 3. Monitoring: usage of jobs that ended, why queued jobs wait (one command each).
    try:
        _monitor(rt, cluster)
    except HpcBridgeError as exc:  # the states are recorded; monitoring waits for next cycle
        report.errors.append(f"monitoring: {exc.message}")

    # 4. Fetch outputs of finished jobs: one batch (one remote command) for the cluster.
    _fetch_all(rt, cluster, reg.list_tasks(states=[S.FETCHING], cluster=cluster,
                                           newest_first=False), report)  # fmt: skip

    # 5. Submit what is due: new tasks left behind, and waiting retries.
    now = time.time()
    due = [t for t in reg.list_tasks(states=[S.CREATED, S.STAGING, *WAITING], cluster=cluster,
                                     newest_first=False) if _is_due(rt, t, now)]  # fmt: skip
    due = gate_dependencies(rt, due)
    if due:
        with Lease(rt.lease_dir) as lease:
            start_attempts(rt, cluster, due, lease)
        report.submitted = len(due)


def _poll(rt: Runtime, cluster: str, in_flight: Sequence[Task], attempts: dict[str, Attempt],
          strays: Sequence[Attempt], effects: Effects, report: SyncReport) -> None:  # fmt: skip
    reg = rt.registry
    backend = rt.backend(cluster)
    requests = [rt.poll_request(t, attempts[t.id]) for t in in_flight]
    stray_reqs = [rt.poll_request(reg.get_task(a.task_id), a) for a in strays]
    rt.charge(cluster, 2)
    # The snapshot's time is when the query was sent: an attempt written after it cannot
    # be in the answer, so grace periods are measured against this, not the reply's time.
    now = time.time()
    infos = backend.poll(requests + stray_reqs)  # TransportError here: nothing written yet
    report.polled = len(requests)
    deadline = time.monotonic() + rt.cluster(cluster).cycle_timeout
    for task in in_flight:
        if time.monotonic() > deadline:
            report.errors.append("cycle time limit reached; remaining tasks wait for the next cycle")
            break
        att = attempts[task.id]
        try:
            apply_observation(rt, task, att, infos.get(att.token), now, effects)
        except ConflictError as exc:  # another process (kill, submit) moved it: next cycle
            log.info("task %s: %s", task.id, exc)
        except Exception as exc:  # noqa: BLE001 - one bad task never stops the others
            report.errors.append(f"{task.id}: {record_task_error(rt, task, 'sync', exc)}")
    for att in strays:
        info = infos.get(att.token)
        if info is not None and info.job_id and info.state not in TERMINAL:
            reg.update_attempt(att.task_id, att.number, {"job_id": info.job_id})
            reg.add_event(att.task_id, "warning",
                          f"attempt {att.number}: job {info.job_id} turned up for an attempt "
                          "already given up as never submitted; cancelling it",
                          source=rt.source, attempt=att.number)  # fmt: skip
            effects.cancel.append((reg.get_task(att.task_id), replace(att, job_id=info.job_id)))


def _keep_tails(rt: Runtime, cluster: str, changes: Sequence[tuple[str, str, str]],
                report: SyncReport) -> None:  # fmt: skip
    """Fetch the last lines of stderr and stdout of each attempt that ended badly in this
    cycle, once, and keep them on the attempt: diagnostics outlive the cluster's scratch."""
    ended = dict.fromkeys(tid for tid, _old, new in changes if new in ENDED_BADLY)
    if not ended:
        return
    backend = rt.backend(cluster)
    attempts = rt.registry.current_attempts(list(ended))
    for tid in ended:
        att = attempts.get(tid)
        task = rt.registry.get_task(tid)
        if att is None or att.stderr_tail is not None or task.work_dir is None:
            continue
        try:
            tails = {f"{stream}_tail": backend.read_log(task, att.number, stream, TAIL_LINES)
                     for stream in ("stderr", "stdout")}  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the state change stands; say why no tail
            report.errors.append(f"{tid}: {record_task_error(rt, task, 'reading its log tails', exc)}")
            continue
        rt.registry.update_attempt(tid, att.number, tails)


def _monitor(rt: Runtime, cluster: str) -> None:
    """One accounting call for the jobs that ended and still lack their usage; one queue
    call for every queued or held task."""
    backend = rt.backend(cluster)
    if not isinstance(backend, MonitoringBackend):
        return
    reg = rt.registry
    ended = reg.attempts_needing_usage(cluster, since=time.time() - USAGE_WINDOW_SECONDS)
    if ended:
        tasks = {t.id: t for t in (reg.get_task(a.task_id) for a in ended)}
        rt.charge(cluster, 1)
        got = backend.usage([rt.poll_request(tasks[a.task_id], a) for a in ended])
        for att in ended:
            if att.token in got:  # not final yet: asked again next cycle
                reg.update_attempt(att.task_id, att.number, {"usage": got[att.token]})
    waiting = reg.list_tasks(states=[S.QUEUED, S.HELD], cluster=cluster, newest_first=False)
    current = reg.current_attempts([t.id for t in waiting])
    pairs = [(t, current[t.id]) for t in waiting if t.id in current and current[t.id].job_id]
    if pairs:
        rt.charge(cluster, 1)
        got = backend.queue_insight([rt.poll_request(t, a) for t, a in pairs],
                                    sorted({a.partition for _t, a in pairs if a.partition}))  # fmt: skip
        for t, att in pairs:
            q = got.get(att.token)
            fields: dict[str, object] = {"queue": q}
            if att.eligible_at is None and q and q.get("position") is not None:
                # In line now. Seen out of line before (a dependency, a begin time, a hold):
                # eligible from now (within one sync interval); else from its submission.
                # Queue time counts from here, so a dependency wait is not the queue's.
                was_out = att.queue is not None and att.queue.get("position") is None
                fields["eligible_at"] = time.time() if was_out else att.submitted_at
            if q != att.queue or "eligible_at" in fields:  # unchanged: no write
                reg.update_attempt(t.id, att.number, fields)


def _is_due(rt: Runtime, t: Task, now: float) -> bool:
    if t.cancel_requested:
        return False
    if t.state in WAITING:
        return (t.next_attempt_at or 0) <= now
    # A new task is started by the process that registered it, right away; the sync takes
    # over only what was handed back (next_attempt_at) or whose submitter is gone (lease).
    if t.next_attempt_at is not None:  # handed over, due then (a refused sbatch: later)
        return t.next_attempt_at <= now
    return submitter_gone_for(rt, t, now) is not None


def _cancel(rt: Runtime, cluster: str, tasks: Sequence[Task], effects: Effects, report: SyncReport) -> None:
    reg = rt.registry
    requests: dict[str, PollRequest] = {}
    for task, att in effects.cancel:
        if att.job_id or att.backend_ref:
            requests[att.token] = rt.poll_request(task, att)
    for task in tasks:
        if not task.cancel_requested:
            continue
        fresh = reg.get_task(task.id)
        if fresh.state in (S.CREATED, S.STAGING, *WAITING):
            # Marked while its submitter held it (or as it went back to wait): end it now.
            rt.try_transition(fresh.id, fresh.state, S.CANCELLED, "cancelled by user",
                              fields={"reason": "cancelled by user", "ended_at": time.time()})  # fmt: skip
            continue
        if fresh.state not in IN_FLIGHT:
            continue
        current = reg.current_attempts([task.id]).get(task.id)
        if current is not None and (current.job_id or current.backend_ref):
            requests[current.token] = rt.poll_request(fresh, current)
    if requests:
        rt.charge(cluster, 1)
        try:
            rt.backend(cluster).cancel(list(requests.values()))
        except HpcBridgeError as exc:
            if isinstance(exc, TransportError):
                raise
            report.errors.append(f"cancel failed, retried next cycle: {exc.message}")


def _fetch_all(rt: Runtime, cluster: str, tasks: Sequence[Task], report: SyncReport) -> None:
    """Fetch every FETCHING task's outputs in one backend call, then settle each task. A
    failure of the whole batch (the stream broke) leaves every task in FETCHING for the next
    cycle; a task's own error is that task's alone."""
    if not tasks:
        return
    dests = {t.id: Path(t.output_dir or rt.data_dir / "outputs" / t.id) for t in tasks}
    try:
        got = rt.backend(cluster).fetch_outputs_many(tasks, dests)
    except (HpcBridgeError, OSError) as exc:  # TransportError too: submissions still get their turn
        message = exc.message if isinstance(exc, HpcBridgeError) else str(exc)
        report.errors.append(f"fetching outputs of {len(tasks)} task(s) failed, will retry: {message}")
        return
    for task in tasks:
        try:
            _settle_fetch(rt, task, dests[task.id], got.get(task.id), report)
        except Exception as exc:  # noqa: BLE001 - one bad task never stops the others
            report.errors.append(f"{task.id}: {record_task_error(rt, task, 'fetching outputs', exc)}")


def _settle_fetch(rt: Runtime, task: Task, dest: Path, files: list[Path] | HpcBridgeError | None,
                  report: SyncReport) -> None:  # fmt: skip
    if files is None:
        files = BackendError(f"the backend returned nothing for task {task.id}")
    if isinstance(files, HpcBridgeError):
        exc = files
        if exc.transient:
            report.errors.append(f"{task.id}: fetch failed, will retry: {exc.message}")
            return
        rt.try_transition(task.id, S.FETCHING, S.FAILED, f"fetching outputs failed: {exc}",
                          fields={"reason": f"fetching outputs failed: {exc.message}"})  # fmt: skip
        return
    rel = [p.relative_to(dest).as_posix() for p in files if p.is_relative_to(dest)]
    missing = missing_outputs(rel, task.spec.outputs)
    detail = f"{len(files)} output file(s) fetched"
    if missing:
        note = f"no file matched output pattern(s) {missing}"
        detail += f"; {note}"
        if task.spec.require_outputs:
            rt.try_transition(task.id, S.FETCHING, S.FAILED, detail,
                              fields={"fetched_at": time.time(), "reason": f"outputs missing: {note}"})  # fmt: skip
            return
        rt.try_transition(task.id, S.FETCHING, S.SUCCEEDED, detail,
                          fields={"fetched_at": time.time(), "reason": f"warning: {note}"})  # fmt: skip
        return
    rt.try_transition(task.id, S.FETCHING, S.SUCCEEDED, detail,
                      fields={"fetched_at": time.time(), "reason": None})  # fmt: skip


__all__ = ["SyncReport", "cluster_lock", "sync_all", "sync_cluster"]
