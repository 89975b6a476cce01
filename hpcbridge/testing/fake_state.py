"""What a :class:`~hpcbridge.testing.FakeBackend` is scripted with and what it records.

:data:`ABSENT` and :class:`FakeState` (one scripted poll answer), the :data:`ScriptItem` and
:data:`Key` types of its scripts, and the records it keeps: :class:`FakeCall` (one call to the
backend) and :class:`FakeJob` (one job of the fake scheduler).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..lifecycle import TaskState
from ..models import JobInfo

S = TaskState


class AbsentType:
    """The type of :data:`ABSENT` (one instance; compare with ``is``)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = AbsentType()
"""A script item: the scheduler has no record of the job at this poll (``poll`` leaves its
token out of the result, which is how a real backend reports absence)."""

# What Slurm would print for each lifecycle state: readable raw_state defaults.
_RAW_WORDS: Mapping[TaskState, str] = {
    S.QUEUED: "PENDING",
    S.HELD: "PENDING",
    S.RUNNING: "RUNNING",
    S.SUSPENDED: "SUSPENDED",
    S.COMPLETING: "COMPLETING",
    S.SUCCEEDED: "COMPLETED",
    S.FAILED: "FAILED",
    S.CANCELLED: "CANCELLED",
    S.TIMED_OUT: "TIMEOUT",
    S.OUT_OF_MEMORY: "OUT_OF_MEMORY",
    S.PREEMPTED: "PREEMPTED",
    S.NODE_FAILED: "NODE_FAIL",
}

_JOBINFO_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(JobInfo))


@dataclass(frozen=True)
class FakeState:
    """One scripted answer of :meth:`FakeBackend.poll` for one job: the fields of the
    :class:`~hpcbridge.models.JobInfo` it returns (``job_id``, ``name`` and ``comment`` come
    from the job itself).

    ``state=None`` is a scheduler code hpcbridge does not know (``raw_state`` then says which).
    ``raw_state`` defaults to the Slurm word for ``state`` (``RUNNING`` -> ``"RUNNING"``,
    ``NODE_FAILED`` -> ``"NODE_FAIL"``); ``exit_code`` defaults to 0 for ``SUCCEEDED``.
    ``requeue_states`` and ``job_alive`` are passed on only when set, and ``extra`` carries
    any other JobInfo field; a name JobInfo does not have fails here, at scripting time.
    """

    state: TaskState | None
    raw_state: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    nodes: str | None = None
    partition: str | None = None
    restarts: int = 0
    requeue_causes: tuple[str, ...] = ()
    requeue_states: tuple[TaskState | None, ...] = ()
    job_alive: bool | None = None
    submit_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    source: str = "fake"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state is not None and not isinstance(self.state, TaskState):
            raise TypeError(f"FakeState.state must be a TaskState or None, got {self.state!r}")
        wanted = set(self.extra)
        if self.requeue_states:
            wanted.add("requeue_states")
        if self.job_alive is not None:
            wanted.add("job_alive")
        unknown = sorted(wanted - _JOBINFO_FIELDS)
        if unknown:
            raise TypeError(f"JobInfo has no field(s) {unknown} in this hpcbridge version")
        object.__setattr__(self, "requeue_causes", tuple(self.requeue_causes))
        object.__setattr__(self, "requeue_states", tuple(self.requeue_states))

    def job_info(self, job_id: str, *, name: str | None = None,
                 comment: str | None = None) -> JobInfo:  # fmt: skip
        """The JobInfo a poll returns for job ``job_id`` in this state."""
        raw = self.raw_state
        if raw is None:
            raw = _RAW_WORDS.get(self.state, self.state.value.upper()) if self.state else "UNKNOWN"
        exit_code = self.exit_code
        if exit_code is None and self.state is S.SUCCEEDED:
            exit_code = 0
        kwargs: dict[str, Any] = {
            "job_id": job_id, "raw_state": raw, "state": self.state, "source": self.source,
            "reason": self.reason, "exit_code": exit_code, "signal": self.signal,
            "nodes": self.nodes, "partition": self.partition, "restarts": self.restarts,
            "submit_time": self.submit_time, "start_time": self.start_time,
            "end_time": self.end_time, "name": name, "comment": comment,
            "requeue_causes": self.requeue_causes,
        }  # fmt: skip
        if self.requeue_states:
            kwargs["requeue_states"] = self.requeue_states
        if self.job_alive is not None:
            kwargs["job_alive"] = self.job_alive
        kwargs.update(self.extra)
        return JobInfo(**kwargs)


ScriptItem = TaskState | FakeState | AbsentType
"""What a script entry may be: a state (shorthand for ``FakeState(state)``), a full
:class:`FakeState`, or :data:`ABSENT`."""

Key = str | tuple[str, int]
"""A script key: a task id or task name (every attempt), or ``(id or name, attempt)``."""


@dataclass(frozen=True)
class FakeCall:
    """One recorded call: the method name and its positional arguments (sequences of
    requests are kept as tuples, so a test can index them)."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass
class FakeJob:
    """A job the fake scheduler knows. ``polls`` counts the polls that asked about it."""

    job_id: str
    task_id: str
    attempt: int
    token: str
    name: str | None = None
    work_dir: str | None = None
    polls: int = 0
    cancelled: bool = False
    cursor: int = 0  # index into the job's script at the next poll
    override: FakeState | None = None  # set by cancel(); cleared by set_state()/script()
