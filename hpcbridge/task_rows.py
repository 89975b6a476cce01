"""What a task listing shows, and the cheap row it can be read into.

``ListedTask`` is the part of a task the listing formatters use (``report.task_summary``,
``report_data.task_records``, the tables of ``tasks list``): a ``models.Task`` has it, and so
has a ``TaskRow``, which ``registry_read`` builds straight from a tasks-table row without
the model's dataclasses (their creation is most of a listing's own start-up time,
benchmarks/bench_startup.py). ``queue_seconds`` and ``run_seconds`` are the one definition
of those timings, ``models.Task``'s properties included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .states import TaskState


def queue_seconds(submitted_at: float | None, started_at: float | None) -> float | None:
    """Seconds from submission to start (None until both are known)."""
    if submitted_at is None or started_at is None:
        return None
    return max(0.0, started_at - submitted_at)


def run_seconds(started_at: float | None, ended_at: float | None) -> float | None:
    """Seconds from start to end (None until both are known)."""
    if started_at is None or ended_at is None:
        return None
    return max(0.0, ended_at - started_at)


class Timings:
    """``queue_seconds`` and ``run_seconds`` of a task's own times (``models.Task`` and
    ``TaskRow``)."""

    __slots__ = ()
    submitted_at: float | None
    started_at: float | None
    ended_at: float | None

    @property
    def queue_seconds(self) -> float | None:
        return queue_seconds(self.submitted_at, self.started_at)

    @property
    def run_seconds(self) -> float | None:
        return run_seconds(self.started_at, self.ended_at)


class ListedTask(Protocol):
    """A task as a listing shows it (``models.Task`` and ``TaskRow`` both are one)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def project(self) -> str | None: ...
    @property
    def state(self) -> TaskState: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def created_at(self) -> float: ...
    @property
    def submitted_at(self) -> float | None: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def attempt_count(self) -> int: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def queue_seconds(self) -> float | None: ...
    @property
    def run_seconds(self) -> float | None: ...


# The tasks-table columns a TaskRow is built from, in the order of its constructor.
ROW_COLUMNS = ("id, name, cluster, project, state, metadata, created_at, submitted_at, started_at,"
               " ended_at, attempt_count, exit_code, reason")  # fmt: skip


class TaskRow(Timings):
    """A read-only task of a listing, from one row of ``ROW_COLUMNS``. The metadata JSON is
    decoded when first read (a plain table never reads it)."""

    __slots__ = ("id", "name", "cluster", "project", "state", "_metadata", "created_at", "submitted_at",
                 "started_at", "ended_at", "attempt_count", "exit_code", "reason")  # fmt: skip

    id: str
    name: str
    cluster: str
    project: str | None
    state: TaskState
    created_at: float
    submitted_at: float | None
    started_at: float | None
    ended_at: float | None
    attempt_count: int
    exit_code: int | None
    reason: str | None

    def __init__(self, row: tuple[Any, ...]) -> None:
        (self.id, self.name, self.cluster, self.project, state, self._metadata, self.created_at,
         self.submitted_at, self.started_at, self.ended_at, attempts, self.exit_code, self.reason) = row  # fmt: skip
        self.state = TaskState(state)
        self.attempt_count = attempts or 0

    @property
    def metadata(self) -> Mapping[str, str]:
        meta = self._metadata
        if isinstance(meta, str):
            import json

            meta = self._metadata = json.loads(meta)
        return meta

    def __repr__(self) -> str:
        return f"TaskRow(id={self.id!r}, name={self.name!r}, state={self.state.value!r})"
