"""Task states and the transition table: what ``lifecycle`` builds its policy on.

Kept apart from ``lifecycle`` (which re-exports every name here) so that a command that
only reads the registry, ``tasks list``, gets ``TaskState`` without creating the retry
policy's and the plan's dataclasses (start-up time, benchmarks/bench_startup.py). Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .errors import IllegalTransition


class TaskState(enum.StrEnum):
    """Where a task is in its life: the states of DESIGN.md section 2 plus ``retrying`` (an
    outcome the retry policy retries, waiting for its backoff). Terminal states never change."""

    CREATED = "created"  # registered, nothing sent yet
    STAGING = "staging"  # inputs being uploaded
    SUBMITTING = "submitting"  # intent recorded, sbatch outcome not yet known
    QUEUED = "queued"  # the scheduler knows the job, not running yet
    HELD = "held"  # the job waits at the scheduler but will not start until released
    RUNNING = "running"
    SUSPENDED = "suspended"  # suspended or stopped by the scheduler
    COMPLETING = "completing"  # job ended, epilogue still running
    FETCHING = "fetching"  # exit 0, outputs being downloaded
    PREEMPTED = "preempted"  # interrupted by preemption, waiting to come back
    NODE_FAILED = "node_failed"  # interrupted by node/boot/launch failure, waiting to come back
    RETRYING = "retrying"  # another outcome the retry policy retries, waiting for backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    OUT_OF_MEMORY = "out_of_memory"
    LOST = "lost"  # the scheduler has no record of the job after the grace period

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def has_job(self) -> bool:
        """A scheduler job exists (or may exist) for the current attempt."""
        return self in IN_FLIGHT


S = TaskState

TERMINAL: frozenset[TaskState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.LOST}
)
# States in which the current attempt has (or may have) a job at the scheduler.
IN_FLIGHT: frozenset[TaskState] = frozenset(
    {S.SUBMITTING, S.QUEUED, S.HELD, S.RUNNING, S.SUSPENDED, S.COMPLETING}
)
# Waiting for a new attempt (after backoff).
WAITING: frozenset[TaskState] = frozenset({S.PREEMPTED, S.NODE_FAILED, S.RETRYING})
# Everything the sync cycle must look at.
ACTIVE: frozenset[TaskState] = frozenset(set(TaskState) - TERMINAL)

# What a finished job can end as, as reported by a backend.
OUTCOMES: frozenset[TaskState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.PREEMPTED, S.NODE_FAILED}
)
JOB_STATES: frozenset[TaskState] = frozenset(
    {S.QUEUED, S.HELD, S.RUNNING, S.SUSPENDED, S.COMPLETING}
)

_ends = frozenset({S.FAILED, S.CANCELLED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.LOST})
_interrupt = frozenset({S.PREEMPTED, S.NODE_FAILED, S.RETRYING})

TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    S.CREATED: frozenset({S.STAGING, S.SUBMITTING, S.CANCELLED, S.FAILED}),
    S.STAGING: frozenset({S.SUBMITTING, S.CANCELLED, S.FAILED, S.CREATED}),
    # SUBMITTING -> SUBMITTING is not a move; an unknown sbatch outcome stays put. Back to
    # CREATED (or RETRYING): sbatch refused the job for a submit limit, the attempt is
    # withdrawn (no job was made) and the task waits for a slot.
    S.SUBMITTING: JOB_STATES | {S.FETCHING, S.CREATED} | _ends | _interrupt,
    S.QUEUED: (JOB_STATES - {S.QUEUED}) | {S.FETCHING} | _ends | _interrupt,
    S.HELD: (JOB_STATES - {S.HELD}) | {S.FETCHING} | _ends | _interrupt,
    S.RUNNING: (JOB_STATES - {S.RUNNING}) | {S.FETCHING} | _ends | _interrupt,
    S.SUSPENDED: (JOB_STATES - {S.SUSPENDED}) | {S.FETCHING} | _ends | _interrupt,
    S.COMPLETING: (JOB_STATES - {S.COMPLETING}) | {S.FETCHING} | _ends | _interrupt,
    S.FETCHING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    # A waiting task either comes back inside the same job (Slurm requeued it: same job id,
    # restart count up) or through a new attempt (SUBMITTING), or gives up.
    S.PREEMPTED: frozenset({S.QUEUED, S.HELD, S.RUNNING, S.SUBMITTING, S.FAILED, S.CANCELLED, S.LOST}),
    S.NODE_FAILED: frozenset({S.QUEUED, S.HELD, S.RUNNING, S.SUBMITTING, S.FAILED, S.CANCELLED, S.LOST}),
    S.RETRYING: frozenset({S.SUBMITTING, S.CANCELLED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
    S.OUT_OF_MEMORY: frozenset(),
    S.LOST: frozenset(),
}


def check_transition(current: TaskState, new: TaskState) -> None:
    """Raise IllegalTransition unless the table allows ``current -> new``."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"illegal task state change {current.value} -> {new.value}",
            hint="this is a bug or a race; the task was left unchanged",
        )
