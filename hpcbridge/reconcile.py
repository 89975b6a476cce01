"""Apply what the scheduler said about one attempt's job to its task.

``apply_observation`` is the heart of the sync cycle for one task: attempt bookkeeping, a
Slurm-side requeue (same job id, restart count up) recorded as an interruption inside the
attempt, the lifecycle's plan applied as one transaction, and absence resolved through the
grace periods (never as success). Backends have already mapped the scheduler's words to
lifecycle states (``JobInfo.state``, ``JobInfo.requeue_states``): nothing here knows Slurm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from .leases import lease_alive
from .lifecycle import TERMINAL, WAITING, TaskState, plan_transition
from .models import Attempt, JobInfo, Task
from .runtime import Runtime
from .slurm import expand_hostlist

log = logging.getLogger(__name__)
S = TaskState

INTERRUPTIONS = frozenset({S.NODE_FAILED, S.PREEMPTED})

# How long a Slurm-side requeue (restart count up) may wait for accounting to name its cause.
REQUEUE_CAUSE_WAIT_SECONDS = 60.0

NEVER_SUBMITTED = "never submitted"


@dataclass
class Effects:
    """What applying an observation asks the cycle to do next."""

    cancel: list[tuple[Task, Attempt]] = field(default_factory=list)


def node_names(hostlist: str | None) -> tuple[str, ...]:
    """Node names from a scheduler's node list as stored on an attempt (``node[1,3]``)."""
    if not hostlist:
        return ()
    try:
        return tuple(expand_hostlist(hostlist))
    except ValueError:  # not a hostlist (another backend's node name): keep it whole
        return (hostlist,)


def with_nodes(excluded: tuple[str, ...], nodes: tuple[str, ...]) -> tuple[str, ...]:
    """``excluded`` plus ``nodes``, in order, without repeats."""
    return tuple(dict.fromkeys((*excluded, *nodes)))


def apply_observation(
    rt: Runtime, task: Task, att: Attempt, info: JobInfo | None, now: float, effects: Effects
) -> None:
    """Move ``task`` according to ``info`` (None: the scheduler has no record of the job)."""
    reg = rt.registry
    policy = task.spec.retry
    if info is None:
        _absent(rt, task, att, now, effects)
        return

    # Attempt bookkeeping first: what the scheduler says about the job, whatever its state.
    afields: dict[str, Any] = {"last_seen_at": now}
    if att.job_id is None and info.job_id:
        afields["job_id"] = info.job_id
        afields["submitted_at"] = info.submit_time or now
        reg.add_event(task.id, "info", f"attempt {att.number}: adopted job {info.job_id} found by token",
                      source=rt.source, attempt=att.number)  # fmt: skip
    for key, value in (("nodes", info.nodes), ("partition", info.partition),
                       ("started_at", info.start_time), ("ended_at", info.end_time),
                       ("exit_code", info.exit_code), ("signal", info.signal)):  # fmt: skip
        if value not in (None, ""):
            afields[key] = value
    # The scheduler's current reason, or none: a pending reason (BeginTime, Priority) must not
    # outlive the wait it explained.
    afields["reason"] = info.reason
    if info.state is None:
        # Unknown code, or a row that did not parse: reported, and the task stays as it was.
        # last_seen_at still moves: the job exists, so this never feeds the lost-grace clock.
        note = f"unknown scheduler state {info.raw_state!r} for job {info.job_id}; task left as it was"
        if att.reason != note:
            reg.add_event(task.id, "warning", note, source=rt.source, attempt=att.number)
            log.warning("task %s: %s", task.id, note)
        afields["reason"] = note
        reg.update_attempt(task.id, att.number, afields)
        return
    afields["state"] = info.state

    current = task.state
    path: list[TaskState] = []
    details: list[str] = []
    tfields: dict[str, Any] = {}
    nodes = info.node_names or node_names(info.nodes)
    # The cause is known once accounting lists an earlier instance for every restart; a stale
    # cause (restart 2 while only the first requeue is listed) is not the latest one.
    cause_known = bool(info.requeue_causes) and len(info.requeue_causes) >= info.restarts
    cause_raw = info.requeue_causes[-1] if cause_known else None
    job_over = info.state in TERMINAL or info.state in (S.SUCCEEDED, S.PREEMPTED, S.NODE_FAILED)
    if info.restarts > att.restarts and cause_raw is None and not job_over:
        # Accounting lags the queue (measured on 22.05: up to ~7 s): until it names the cause,
        # change nothing - neither the task nor the attempt's nodes (the failed node that
        # `excluded_nodes` needs). Bounded: the queue's SubmitTime of a requeued job is the
        # requeue time; without accounting the cause is recorded as unknown.
        requeued_at = info.submit_time or att.started_at or 0.0
        if now - requeued_at < REQUEUE_CAUSE_WAIT_SECONDS:
            reg.update_attempt(task.id, att.number, {"last_seen_at": now})
            return
    if info.restarts > att.restarts:
        afields["restarts"] = info.restarts
        mapped = info.requeue_states[-1] if cause_known and info.requeue_states else None
        cause = mapped if mapped in INTERRUPTIONS else None
        what = cause_raw or "an unknown cause (no accounting row)"
        details.append(f"job {info.job_id} requeued by Slurm (restart {info.restarts}) after {what}")
        if cause is not None:
            plan = plan_transition(current, cause, policy=policy, attempts_done=att.number,
                                   slurm_will_requeue=True)  # fmt: skip
            path.extend(plan.path)
            # The failed node is the one the earlier instance ran on (still on the attempt).
            old_nodes = node_names(att.nodes)
            if cause == S.NODE_FAILED and old_nodes and policy.exclude_failed_nodes:
                tfields["excluded_nodes"] = with_nodes(task.excluded_nodes, old_nodes)
            current = path[-1] if path else current
        else:  # e.g. an admin's requeue: not an interruption
            reg.add_event(task.id, "info", details[-1], source=rt.source, attempt=att.number)
            details.clear()

    # An interruption reported *as current* means this job is over (a scheduler that
    # requeues by itself shows PENDING with a higher restart count instead, handled above),
    # so whether a new attempt follows is the retry policy's call.
    observed = info.state
    stall = att.watch or {}
    if observed == S.CANCELLED and stall.get("requeue"):
        # hpcbridge cancelled it for a stall (on_stall = "requeue"): retried as a node
        # failure is, the node it hung on excluded from the next attempt.
        observed = S.NODE_FAILED
        policy = replace(policy, retry_on=policy.retry_on | {S.NODE_FAILED}, exclude_failed_nodes=True)
        nodes = nodes or node_names(att.nodes)  # the node it hung on, seen while it ran
    plan = plan_transition(current, observed, policy=policy, attempts_done=att.number)
    path.extend(plan.path)
    if not path:
        reg.update_attempt(task.id, att.number, afields)
        return

    final = path[-1]
    # A job cancelled (or preempted) while pending gets a StartTime too - the moment it left
    # the queue - so a start is recorded only for a job that really ran.
    ran = (task.state in (S.RUNNING, S.SUSPENDED, S.COMPLETING) or S.RUNNING in path
           or final in (S.FETCHING, S.FAILED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.COMPLETING))  # fmt: skip
    if ran and task.started_at is None:
        tfields["started_at"] = info.start_time or now
    if final in TERMINAL or final in WAITING or final == S.FETCHING:
        tfields["ended_at"] = info.end_time or now
        tfields["exit_code"] = info.exit_code
        tfields["reason"] = plan.reason or _end_reason(info)
        if stall.get("cancel_reason") and final in (S.CANCELLED, S.NODE_FAILED, S.FAILED):
            # Cancelled by hpcbridge's stall watch (on_stall): say so, not "CANCELLED by uid".
            tfields["reason"] = stall["cancel_reason"] + (f"; {plan.reason}" if plan.reason else "")
        if info.job_alive:
            # The scheduler still holds the job (e.g. requeued held after a launch failure):
            # it must go before a new attempt, or it would run as a second copy on release.
            effects.cancel.append((task, att))
    if plan.resubmit_after is not None:
        tfields["next_attempt_at"] = now + plan.resubmit_after
        if final == S.NODE_FAILED and policy.exclude_failed_nodes and nodes:
            tfields["excluded_nodes"] = with_nodes(task.excluded_nodes, nodes)
    with reg.transaction():
        reg.update_attempt(task.id, att.number, afields)
        prev = task.state
        for i, state in enumerate(path):
            detail = details[i] if i < len(details) else _describe(info, state, plan.reason)
            reg.transition(task.id, prev, state, source=rt.source, attempt=att.number,
                           detail=f"attempt {att.number}: {detail}", expected_attempt=att.number,
                           fields=tfields if i == len(path) - 1 else None)  # fmt: skip
            log.info("task %s attempt %s: %s -> %s", task.id, att.number, prev.value, state.value)
            prev = state


def _describe(info: JobInfo, state: TaskState, reason: str) -> str:
    bits = [f"job {info.job_id} {info.raw_state}"]
    if state in (S.QUEUED, S.HELD) and info.reason and info.reason != "None":
        bits.append(f"reason {info.reason}")
    if info.nodes and state in (S.RUNNING, S.COMPLETING):
        bits.append(f"on {info.nodes}")
    if info.exit_code is not None and state not in (S.QUEUED, S.HELD, S.RUNNING):
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


def submitter_gone_for(rt: Runtime, task: Task, now: float) -> float | None:
    """Seconds since a sync first found the task's submitter gone; None while it lives.

    The first sync that finds the lease dead records the moment: every grace period for an
    unfinished submission counts from there, never from when the row was written."""
    if lease_alive(rt.lease_dir, task.lease):
        return None
    if task.lease_lost_at is None:
        try:
            rt.registry.update_task(task.id, {"lease_lost_at": now}, expected=task.state)
        except Exception:  # noqa: BLE001 - moved meanwhile: the next cycle looks again
            log.debug("task %s: could not record lease loss", task.id, exc_info=True)
        return 0.0
    return max(0.0, now - task.lease_lost_at)


def _absent(rt: Runtime, task: Task, att: Attempt, now: float, effects: Effects) -> None:
    """The scheduler has no record of the attempt's job: never success; lost after a grace."""
    reg = rt.registry
    cfg = rt.cluster(task.cluster)
    policy = task.spec.retry
    if att.job_id is None:
        # Write-ahead row with no job id: the submitter may still be inside sbatch (its lease
        # lives: leave it alone), or it died before sbatch ran / before recording the id.
        # Once it is gone, give the job submit_grace_seconds to show up by token.
        gone = submitter_gone_for(rt, task, now)
        if gone is None or gone < cfg.submit_grace_seconds:
            return
        detail = (f"attempt {att.number}: no job found for token {att.token} "
                  f"{gone:.0f} s after its submitter ended")  # fmt: skip
        fields: dict[str, Any] = {}
        if task.cancel_requested:
            path, fields["reason"] = [S.CANCELLED], "cancelled by user before the job was submitted"
            fields["ended_at"] = now
        elif att.number < policy.max_attempts:
            # Counted like every other attempt: bounded by max_attempts, with the backoff.
            path = [S.RETRYING]
            fields["next_attempt_at"] = now + policy.backoff(att.number)
            detail += f"; attempt {att.number + 1} of {policy.max_attempts} due"
        else:
            path = [S.FAILED]
            fields["reason"] = (f"{NEVER_SUBMITTED}: no job reached the scheduler "
                                f"in {att.number} attempt(s)")  # fmt: skip
            fields["ended_at"] = now
        with reg.transaction():
            reg.update_attempt(task.id, att.number, {"state": S.LOST, "reason": NEVER_SUBMITTED, "ended_at": now})
            reg.transition(task.id, S.SUBMITTING, path[0], source=rt.source, attempt=att.number,
                           detail=detail, fields=fields, expected_attempt=att.number)  # fmt: skip
        return
    seen = att.last_seen_at or att.submitted_at or att.created_at or now
    if now - seen < cfg.lost_grace_seconds:
        return
    plan = plan_transition(task.state, S.LOST, policy=policy, attempts_done=att.number)
    detail = (f"attempt {att.number}: job {att.job_id} absent from the scheduler and its markers for "
              f"{now - seen:.0f} s (grace {cfg.lost_grace_seconds:.0f} s)")  # fmt: skip
    tfields: dict[str, Any] = {"reason": plan.reason or "job vanished", "ended_at": now}
    if plan.resubmit_after is not None:
        tfields["next_attempt_at"] = now + plan.resubmit_after
    with reg.transaction():
        reg.update_attempt(task.id, att.number, {"state": S.LOST, "reason": "vanished"})
        prev = task.state
        for i, state in enumerate(plan.path):
            reg.transition(task.id, prev, state, source=rt.source, attempt=att.number,
                           detail=detail, fields=tfields if i == len(plan.path) - 1 else None,
                           expected_attempt=att.number)  # fmt: skip
            prev = state


def record_task_error(rt: Runtime, task: Task, what: str, exc: BaseException) -> str:
    """An unexpected error while handling one task: an event and a reason on that task, so
    the rest of the cycle goes on and the user sees why this one did not move."""
    message = f"{what}: {type(exc).__name__}: {exc}"
    try:
        if task.reason != message:
            rt.registry.add_event(task.id, "error", message, source=rt.source)
            rt.registry.update_task(task.id, {"reason": message})
    except Exception:  # noqa: BLE001 - the registry itself failing: the cycle reports it
        log.exception("task %s: could not record %s", task.id, message)
    log.error("task %s: %s", task.id, message, exc_info=exc)
    return message

