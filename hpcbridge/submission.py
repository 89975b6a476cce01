"""The write-ahead submission engine: register tasks, stage them, start attempts.

Never twice, by construction:

1. The process takes a *lease* (``leases.py``) before it registers or claims a task and
   writes the lease on the task; a sync leaves tasks with a live lease alone, however slow
   ``sbatch`` is, and starts its grace periods only once the lease is dead.
2. A task is claimed with a compare-and-set (``created -> staging``, ``staging|waiting ->
   submitting``); whoever moves it first works on it, the other skips it.
3. The attempt row, with a random token, is committed *before* the backend is asked to
   submit; the token rides in the job (``--comment``, markers), so a crash anywhere after is
   reconciled by finding the job by token, not by submitting again.
4. An outcome is recorded compare-and-set on (task state, attempt number): a late reply
   for an attempt the sync already declared never-submitted does not move the task, and its
   job is cancelled.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .backends.base import PollRequest, SubmitOutcome, SubmitRequest
from .deps import decide, parse_after
from .errors import ConflictError, RegistryError, SubmitLimitReached, TaskNotFound, TransportError
from .leases import Lease
from .lifecycle import WAITING, TaskState
from .models import Attempt, Task, new_task_id, new_token
from .options import SubmitOptions, build_spec
from .registry_batch import Change, JobRecord
from .runtime import Runtime

log = logging.getLogger(__name__)
S = TaskState


def submit_many(rt: Runtime, options: Sequence[SubmitOptions]) -> list[Task]:
    """Validate every task (all or nothing), register them, then start them batched per
    cluster: one staging pass and one submission round trip per cluster.

    A cluster that cannot be reached leaves its tasks ``created`` for the next sync (an event
    says why); a permanent transport error (host key, credentials) is raised after that, so
    the caller hears of it, and the tasks stay registered."""
    built = [build_spec(o, rt.cluster(o.cluster)) for o in options]
    for cluster in dict.fromkeys(spec.cluster for spec, _ in built):
        rt.prefetch_limits(cluster)  # read while the tasks are registered and rendered
    with Lease(rt.lease_dir) as lease:
        tasks = _register(rt, built, lease.id)
        by_cluster: dict[str, list[Task]] = {}
        for task in gate_dependencies(rt, tasks, announce=True):
            by_cluster.setdefault(task.cluster, []).append(task)
        permanent: TransportError | None = None
        for cluster, group in by_cluster.items():
            try:
                start_attempts(rt, cluster, group, lease)
            except TransportError as exc:
                for task in group:
                    rt.registry.add_event(
                        task.id, "warning",
                        f"cluster {cluster} unreachable ({exc.message}); the next sync submits it",
                        source=rt.source,
                    )  # fmt: skip
                if not exc.transient and permanent is None:
                    ids = ", ".join(t.id for t in group)
                    permanent = type(exc)(
                        f"{exc.message}\n  task(s) {ids} registered but not submitted; "
                        "`hpcbridge sync` submits them once this is fixed",
                        hint=exc.hint,
                    )
    if permanent is not None:
        raise permanent
    return rt.registry.refresh(tasks)


def gate_dependencies(rt: Runtime, tasks: Sequence[Task], *, announce: bool = False) -> list[Task]:
    """The tasks whose dependencies (``after``) allow them to start now. A task whose
    condition can no longer be met is cancelled with the reason; one still waiting stays
    ``created`` (``announce``: with an event saying for what)."""
    states: dict[str, TaskState | None] = {}

    def state_of(tid: str) -> TaskState | None:
        if tid not in states:
            try:
                states[tid] = rt.registry.get_task(tid).state
            except TaskNotFound:
                states[tid] = None
        return states[tid]

    ready = []
    for t in tasks:
        if not t.spec.after:
            ready.append(t)
            continue
        parents = [parse_after(a)[0] for a in t.spec.after]
        decision = decide(t.spec.after, {p: state_of(p) for p in parents})
        if decision.ready:
            ready.append(t)
        elif decision.never:
            reason = f"dependency can never be met: {decision.reason}"
            rt.try_transition(t.id, t.state, S.CANCELLED, reason,
                              fields={"reason": reason, "ended_at": time.time()})  # fmt: skip
        elif announce:
            # Handed over to the sync (next_attempt_at): it starts the task once it may.
            with rt.registry.transaction():
                rt.registry.update_task(t.id, {"next_attempt_at": time.time()})
                rt.registry.add_event(t.id, "info", decision.reason, source=rt.source)
    return ready


def _register(rt: Runtime, built: Sequence[tuple[Any, dict[str, str]]], lease: str) -> list[Task]:
    now = time.time()
    for _ in range(3):
        tasks = [
            Task(id=(tid := new_task_id(now)), spec=spec, state=S.CREATED, metadata=metadata,
                 created_at=now, updated_at=now, lease=lease,
                 output_dir=str(rt.data_dir / "outputs" / tid))
            for spec, metadata in built
        ]  # fmt: skip
        try:  # one transaction for the whole batch
            rt.registry.insert_tasks(tasks, source=rt.source, detail="task registered")
            return tasks
        except sqlite3.IntegrityError:  # an id made in the same ms by another process
            log.info("task id collision with another process; drawing new ids")
    raise RegistryError("could not allocate unique task ids after 3 tries")


def start_attempts(rt: Runtime, cluster: str, tasks: Sequence[Task], lease: Lease, *,
                   again: bool = True) -> None:  # fmt: skip
    """Stage (if needed) and submit a new attempt for each task, write-ahead, under ``lease``.

    Raises TransportError when the cluster cannot be reached before anything was submitted;
    staged-but-unsubmitted tasks are handed back (``created``, due at once) for the sync.
    """
    rt.prefetch_limits(cluster)
    # Known limits (configured, or kept from an earlier read) gate here, before anything
    # is claimed or staged, so tasks over the limit cost nothing each cycle. While they are
    # still being read (a first submission: two sacctmgr queries, 0.3-0.5 s), nothing waits
    # for them: the tasks go out, sbatch itself refuses what is over the limit, and such a
    # refusal withdraws the attempt (the task waits, see _withdraw_refused); once the limits
    # are known, the refused tasks are started again through the gate (``again``). Tasks
    # with inputs to upload wait for the limits (one over the limit would upload twice, and
    # an upload takes longer than the read anyway).
    unknown = (rt.cluster(cluster).max_submit_jobs is None and rt.limits_pending(cluster)
               and not any(t.spec.inputs for t in tasks))  # fmt: skip
    if not unknown:
        tasks = _within_submit_limit(rt, cluster, tasks)
    if not tasks:
        return
    backend = rt.backend(cluster)
    held = {"lease": lease.id, "lease_lost_at": None}
    # One transaction per step for the whole batch (each task's compare-and-set in a
    # savepoint of its own): one commit, not one per task, which at 1,000 tasks is the
    # difference between milliseconds and seconds of fsync.
    with rt.registry.transaction():
        need_stage = _claim_for_staging(rt, tasks, held)
    staged: dict[str, str] = {}
    if need_stage:
        try:
            results = backend.prepare(need_stage)
        except TransportError:
            for t in need_stage:
                # next_attempt_at marks it as handed over: sync may start it right away.
                rt.try_transition(t.id, S.STAGING, S.CREATED, "staging interrupted: cluster unreachable",
                                  fields={"next_attempt_at": time.time()})  # fmt: skip
            raise
        for t in need_stage:
            res = results.get(t.id)
            if isinstance(res, str):
                staged[t.id] = res
            elif res is not None and res.transient:
                rt.try_transition(t.id, S.STAGING, S.CREATED, f"staging failed, will retry: {res}",
                                  fields={"next_attempt_at": time.time()})  # fmt: skip
            else:
                rt.try_transition(t.id, S.STAGING, S.FAILED, f"staging failed: {res}",
                                  fields={"reason": f"staging failed: {res}", "ended_at": time.time()})  # fmt: skip
    # Charge the scheduler budget before the write-ahead commit, so a budget wait never
    # happens between the commit and sbatch.
    rt.charge(cluster, 1)
    requests = _write_ahead(rt, backend, tasks, staged, held, late_gate=unknown)
    if not requests:
        return
    outcomes = backend.submit(requests)
    by_token = {o.token: o for o in outcomes}
    stray: list[PollRequest] = []
    refused: list[str] = []
    # A refusal that going out before the limits were known may have caused is tried again
    # at once, through the gate; any other waits the cluster's submit_limit_retry_seconds.
    retry_at = time.time() if unknown and again else None
    for req in _record_outcomes(rt, requests, by_token, refused=refused, retry_at=retry_at):
        job = by_token[req.token]
        stray.append(PollRequest(task_id=req.task.id, attempt=req.attempt, token=req.token,
                                 job_id=job.job_id, work_dir=req.task.work_dir,
                                 backend_ref=job.backend_ref))  # fmt: skip
    if stray:
        rt.charge(cluster, 1)
        backend.cancel(stray)
    if refused and retry_at is not None:
        rt.cluster_limits(cluster)  # wait for the read: the gate knows the limit now
        back = set(refused)
        start_attempts(rt, cluster, rt.registry.refresh([t for t in tasks if t.id in back]), lease,
                       again=False)  # fmt: skip


# Tasks whose job counts against the cluster's MaxSubmitJobs (an array element counts as one).
HOLDS_JOB = (S.SUBMITTING, S.QUEUED, S.HELD, S.RUNNING, S.SUSPENDED)


def _submit_slots(rt: Runtime, cluster: str) -> tuple[int | None, int, str]:
    """The cluster's ``max_submit_jobs`` (config, else the user's MaxSubmitJobs read from
    sacctmgr; None: no limit), how many of hpcbridge's own jobs hold a slot, and what a
    task that waits for one is told. sbatch would reject a job over the limit outright
    (QOSMaxSubmitJobPerUserLimit), failing the task. Jobs submitted by other means use
    slots hpcbridge does not see."""
    limit = rt.cluster(cluster).max_submit_jobs
    if limit is None:
        known = rt.cluster_limits(cluster)
        limit = known.max_submit_jobs if known is not None else None
    if limit is None:
        return None, 0, ""
    busy = len(rt.registry.task_ids(states=HOLDS_JOB, cluster=cluster))
    return limit, busy, f"waiting for a submit slot: {busy} of the cluster's max_submit_jobs = {limit} in use"


def _within_submit_limit(rt: Runtime, cluster: str, tasks: Sequence[Task]) -> list[Task]:
    """As many of ``tasks`` as the cluster's submit slots have room for (``_submit_slots``);
    the others wait in hpcbridge (handed to the sync, one event the first time) and go out
    as jobs end."""
    limit, busy, why = _submit_slots(rt, cluster)
    if limit is None:
        return list(tasks)
    free = max(0, limit - busy)
    for t in tasks[free:]:
        if t.state == S.CREATED and t.next_attempt_at is None:
            with rt.registry.transaction():
                rt.registry.update_task(t.id, {"next_attempt_at": time.time()})
                rt.registry.add_event(t.id, "info", why, source=rt.source)
    return list(tasks[:free])


def _claim_for_staging(rt: Runtime, tasks: Sequence[Task], held: Mapping[str, Any]) -> list[Task]:
    """The tasks this process stages: a new task is claimed by compare-and-set."""
    claimed: dict[str, Task] = {}
    for t in tasks:
        if t.state == S.STAGING:
            try:  # handed back by an interrupted staging of our own lease
                rt.registry.update_task(t.id, held, expected=S.STAGING)
                claimed[t.id] = t
            except ConflictError:
                pass
    new = [t for t in tasks if t.state == S.CREATED]
    won = rt.registry.transition_many([Change(t.id, S.CREATED, S.STAGING, "staging inputs", fields=held)
                                       for t in new], source=rt.source)  # fmt: skip
    claimed.update((t.id, t) for t, ok in zip(new, won, strict=True) if ok)
    return [t for t in tasks if t.id in claimed]


def _write_ahead(rt: Runtime, backend: Any, tasks: Sequence[Task], staged: Mapping[str, str],
                 held: Mapping[str, Any], *, late_gate: bool = False) -> list[SubmitRequest]:  # fmt: skip
    """Commit a new attempt (``submitting``, its token and the backend's plan for it) for
    each task still ours, in one transaction; the requests to submit.

    The task's compare-and-set decides who submits an attempt: a loser writes nothing. The
    plan (``Backend.plan``: for Slurm, which array element each attempt becomes) is made
    before, so it is on the attempt row before sbatch can create the job. ``late_gate``:
    the limits were still being read when the submission began; if they have come since,
    the submit slots are counted after the plan, and the requests over them are left out
    (their array indexes become holes) and their tasks handed back to wait."""
    drafts: list[tuple[TaskState, dict[str, Any], SubmitRequest]] = []
    for t in tasks:
        current = S.STAGING if t.state in (S.CREATED, S.STAGING) else t.state
        if current == S.STAGING and t.id not in staged:
            continue  # not ours to stage, or staging failed
        if current not in (S.STAGING, *WAITING):
            continue
        number = t.attempt_count + 1
        fields: dict[str, Any] = {"attempt_count": number, "next_attempt_at": None, **held}
        if t.id in staged:
            fields["work_dir"] = staged[t.id]
        # What the row holds once the compare-and-set below succeeds (it checks state and
        # attempt; what else a request reads, the spec and excluded nodes, no other
        # process changes while the task is staging or waiting).
        task = replace(t, state=S.SUBMITTING, attempt_count=number, next_attempt_at=None,
                       lease=held["lease"], lease_lost_at=None, work_dir=fields.get("work_dir", t.work_dir))  # fmt: skip
        drafts.append((current, fields, SubmitRequest(task=task, attempt=number, token=new_token(),
                                                      exclude_nodes=task.excluded_nodes)))  # fmt: skip
    if not drafts:
        return []
    try:
        refs = backend.plan([r for _, _, r in drafts])
    except TransportError:  # the cluster went away since staging: hand the tasks back
        for state, _, r in drafts:
            if state == S.STAGING:
                rt.try_transition(r.task.id, S.STAGING, S.CREATED, "submission interrupted: cluster unreachable",
                                  fields={"next_attempt_at": time.time()})  # fmt: skip
        raise
    requests = [replace(r, backend_ref=refs[r.token]) if r.token in refs else r for _, _, r in drafts]
    now = time.time()
    changes = [Change(r.task.id, current, S.SUBMITTING, f"attempt {r.attempt}: submitting (token {r.token})",
                      r.attempt, fields, r.attempt - 1) for (current, fields, _), r in zip(drafts, requests, strict=True)]  # fmt: skip
    if late_gate and not rt.limits_pending(requests[0].task.cluster):
        # The limits came while the tasks were registered and planned: gate as usual (else
        # they go out ungated, and sbatch refuses what is over the limit: start_attempts).
        drafts = _within_slots_late(rt, drafts)
        keep = {r.token for _, _, r in drafts}
        changes = [ch for ch, r in zip(changes, requests, strict=True) if r.token in keep]
        requests = [r for r in requests if r.token in keep]
    winners: list[SubmitRequest] = []
    try:
        with rt.registry.transaction():  # committed before sbatch: the write-ahead
            winners = _write_attempts(rt, changes, requests, now)
    except sqlite3.IntegrityError as exc:  # an attempt row exists already: nothing was written
        log.info("write-ahead batch: %s; writing ahead task by task", exc)
        for ch, r in zip(changes, requests, strict=True):
            try:
                with rt.registry.transaction():
                    winners += _write_attempts(rt, [ch], [r], now)
            except sqlite3.IntegrityError as one:
                log.info("task %s: not submitted, changed meanwhile: %s", r.task.id, one)
    kept = {r.token for r in winners}
    for r in requests:
        if r.token not in kept:
            log.info("task %s: not submitted, changed meanwhile", r.task.id)
    return winners


def _write_attempts(rt: Runtime, changes: Sequence[Change], requests: Sequence[SubmitRequest],
                    now: float) -> list[SubmitRequest]:  # fmt: skip
    """The write-ahead's writes (in the caller's transaction): the requests whose task won."""
    won = rt.registry.transition_many(changes, source=rt.source)
    winners = [r for r, ok in zip(requests, won, strict=True) if ok]
    rt.registry.add_attempts([Attempt(task_id=r.task.id, number=r.attempt, token=r.token,
                                      state=S.SUBMITTING, created_at=now, backend_ref=r.backend_ref)
                              for r in winners])  # fmt: skip
    return winners


def _within_slots_late(rt: Runtime, drafts: list[tuple[TaskState, dict[str, Any], SubmitRequest]]
                       ) -> list[tuple[TaskState, dict[str, Any], SubmitRequest]]:  # fmt: skip
    """The drafts the submit slots have room for; a task over them that this process
    claimed goes back to ``created`` (due at once: the sync submits it as slots free), one
    that waited for a retry keeps waiting, as ``_within_submit_limit`` leaves them."""
    limit, busy, why = _submit_slots(rt, drafts[0][2].task.cluster)
    if limit is None:
        return drafts
    free = max(0, limit - busy)
    for state, _, r in drafts[free:]:
        if state == S.STAGING:
            rt.try_transition(r.task.id, S.STAGING, S.CREATED, why, fields={"next_attempt_at": time.time()})
    return drafts[:free]


def _record_outcomes(rt: Runtime, requests: Sequence[SubmitRequest], by_token: Mapping[str, SubmitOutcome],
                     *, refused: list[str] | None = None, retry_at: float | None = None) -> list[SubmitRequest]:  # fmt: skip
    """Record every outcome in one transaction; the requests whose job was created for an
    attempt that is no longer current (the caller cancels those jobs). The ids of tasks
    whose sbatch was refused for the submit limit go to ``refused``; they are due again at
    ``retry_at`` (None: after the cluster's ``submit_limit_retry_seconds``)."""
    now = time.time()
    made = [(r, o) for r in requests if (o := by_token.get(r.token)) is not None and o.job_id]
    stray: list[SubmitRequest] = []
    with rt.registry.transaction():
        recorded = rt.registry.record_jobs(
            [JobRecord(r.task.id, r.attempt, o.job_id or "", {**r.backend_ref, **o.backend_ref}) for r, o in made],
            at=now)  # fmt: skip
        queued = [(r, o) for (r, o), ok in zip(made, recorded, strict=True) if ok]
        # submitted_at: the task's first job (no other process sets it while we submit)
        rt.registry.transition_many(
            [Change(r.task.id, S.SUBMITTING, S.QUEUED, f"attempt {r.attempt}: job {o.job_id} submitted",
                    r.attempt, None if r.task.submitted_at else {"submitted_at": now}, r.attempt)
             for r, o in queued], source=rt.source)  # fmt: skip
        for (r, o), ok in zip(made, recorded, strict=True):
            if ok:
                log.info("task %s attempt %s: submitted as job %s", r.task.id, r.attempt, o.job_id)
            elif record_outcome(rt, r, o):
                stray.append(r)
        for r in requests:
            o = by_token.get(r.token)
            if o is not None and isinstance(o.error, SubmitLimitReached):
                if _withdraw_refused(rt, r, o.error, retry_at) and refused is not None:
                    refused.append(r.task.id)
            elif o is None or not o.job_id:
                record_outcome(rt, r, o)
    return stray


def _withdraw_refused(rt: Runtime, req: SubmitRequest, error: SubmitLimitReached, retry_at: float | None) -> bool:
    """sbatch refused the attempt for the cluster's submit limit: no job exists, so the
    attempt is withdrawn (it costs the retry policy nothing) and the task waits for a slot,
    ``created`` (``retrying`` if it had attempts before), due again at ``retry_at``."""
    n = req.attempt
    due = time.time() + rt.cluster(req.task.cluster).submit_limit_retry_seconds if retry_at is None else retry_at
    detail = (f"attempt {n} withdrawn: sbatch refused it, the cluster's submit limit is full "
              f"({error.reason}); no job was made, waiting for a submit slot")  # fmt: skip
    done = rt.registry.withdraw_attempt(req.task.id, n, S.CREATED if n == 1 else S.RETRYING, source=rt.source,
                                        detail=detail, fields={"next_attempt_at": due})  # fmt: skip
    if not done:
        log.info("task %s: attempt %s refused for the submit limit, but it moved meanwhile", req.task.id, n)
    return done


def record_outcome(rt: Runtime, req: SubmitRequest, out: SubmitOutcome | None) -> bool:
    """Record what the backend said of one submission. Returns True when a job was created
    for an attempt that is no longer current (the caller cancels it)."""
    tid, n = req.task.id, req.attempt
    now = time.time()
    if out is not None and out.job_id:
        with rt.registry.transaction():
            att = {a.number: a for a in rt.registry.attempts(tid)}.get(n)
            task = rt.registry.get_task(tid)
            if att is None or att.state != S.SUBMITTING or task.attempt_count != n:
                rt.registry.update_attempt(tid, n, {"job_id": out.job_id, "submitted_at": now})
                rt.registry.add_event(
                    tid, "warning",
                    f"attempt {n}: job {out.job_id} was created after the attempt was given up "
                    f"({att.state.value if att else 'no attempt row'}); cancelling it",
                    source=rt.source, attempt=n,
                )  # fmt: skip
                return True
            rt.registry.update_attempt(
                tid, n, {"job_id": out.job_id, "submitted_at": now, "last_seen_at": now,
                         "backend_ref": {**req.backend_ref, **out.backend_ref}, "state": S.QUEUED},
            )  # fmt: skip
            if task.state == S.SUBMITTING:
                fields = {} if task.submitted_at else {"submitted_at": now}
                rt.registry.transition(
                    tid, S.SUBMITTING, S.QUEUED, source=rt.source, attempt=n,
                    detail=f"attempt {n}: job {out.job_id} submitted", fields=fields,
                    expected_attempt=n,
                )  # fmt: skip
        log.info("task %s attempt %s: submitted as job %s", tid, n, out.job_id)
        return False
    error = out.error if out is not None else None
    if out is None or out.unknown or (error is not None and error.transient):
        rt.registry.add_event(
            tid, "warning",
            f"attempt {n}: submission outcome unknown ({error}); the next sync looks for the job by token",
            source=rt.source, attempt=n,
        )  # fmt: skip
        return False
    reason = f"submission rejected: {error}"
    with rt.registry.transaction():
        rt.registry.update_attempt(tid, n, {"state": S.FAILED, "reason": reason, "ended_at": now})
        rt.try_transition(tid, S.SUBMITTING, S.FAILED, reason, attempt=n, expected_attempt=n,
                          fields={"reason": reason, "ended_at": now})  # fmt: skip
    return False
