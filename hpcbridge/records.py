"""What backends and transports report: a job's state as the scheduler (or the markers) told
it, a command's result, a file listed under a work dir. Plain, frozen data, no I/O.

``hpcbridge.models`` re-exports these names (bound when first used there), so
``from hpcbridge.models import JobInfo`` works as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lifecycle import TaskState


@dataclass(frozen=True)
class JobInfo:
    """What a backend learnt about one attempt's job from the scheduler (or markers)."""

    job_id: str
    raw_state: str  # exactly as the scheduler printed it, e.g. "CANCELLED by 1000"
    state: TaskState | None  # mapped lifecycle state; None = unknown code, change nothing
    source: str  # "squeue", "sacct", "scontrol", "marker", "process"
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    nodes: str | None = None
    partition: str | None = None
    restarts: int = 0
    submit_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    name: str | None = None
    comment: str | None = None
    # Causes of earlier instances of this job id (sacct -D rows), oldest first, e.g.
    # ("NODE_FAIL", "PREEMPTED"): how Slurm-side requeues are explained.
    requeue_causes: tuple[str, ...] = ()
    # The same causes mapped to lifecycle states where the scheduler's output is parsed
    # (NODE_FAIL -> node_failed, PREEMPTED -> preempted; None for a cause that is no
    # interruption, such as an admin's REQUEUED), so the sync cycle needs no Slurm words.
    requeue_states: tuple[TaskState | None, ...] = ()
    # ``nodes`` expanded from the scheduler's hostlist ("c[01-02]" -> ("c01", "c02")).
    node_names: tuple[str, ...] = ()
    # The scheduler still holds this job although the attempt is over (e.g. requeued held
    # after a launch failure): it must be cancelled before a new attempt, or it would run
    # as a second copy once released.
    job_alive: bool = False


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class FileInfo:
    """One regular file under a task's work dir, as a backend listed it (one round trip)."""

    path: str  # relative to the work dir, POSIX separators
    size: int  # bytes
    mtime: float  # last modification, seconds since the epoch (the cluster's clock)
