"""The interface every backend implements (local processes, Slurm over a transport, and later
pyslurm in-process). The service calls only these methods; backends never touch the registry.

Batching is part of the contract: ``submit`` and ``poll`` take every task of a cluster at once
so a remote backend can do one round trip per cycle, not one per task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import HpcBridgeError
from ..models import FileInfo, JobInfo, Task


@dataclass(frozen=True)
class SubmitRequest:
    """One attempt to start: the write-ahead row is already committed with ``token`` and
    ``backend_ref`` (what the backend's ``plan`` said of it, e.g. its array and index)."""

    task: Task
    attempt: int
    token: str
    exclude_nodes: tuple[str, ...] = ()
    backend_ref: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmitOutcome:
    """Result for one request. Exactly one of ``job_id`` / ``error`` is set.

    ``error.transient`` (or ``unknown``) means the job may or may not exist: the attempt stays
    ``submitting`` and is reconciled by token later; a non-transient error means the scheduler
    definitely rejected it.
    """

    token: str
    job_id: str | None = None
    backend_ref: Mapping[str, Any] = field(default_factory=dict)
    error: HpcBridgeError | None = None
    unknown: bool = False


@dataclass(frozen=True)
class PollRequest:
    """One attempt whose job the service wants news of."""

    task_id: str
    attempt: int
    token: str
    job_id: str | None  # None: submission outcome unknown, find the job by token
    work_dir: str | None
    backend_ref: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    # Whether the scheduler itself requeues interrupted jobs (same job id) - Slurm does.
    scheduler_requeues: bool

    def prepare(self, tasks: Sequence[Task]) -> dict[str, str | HpcBridgeError]:
        """Create each task's work dir and upload its inputs, batched; return, per task id,
        the work dir path or the error that task met. Idempotent: a second call for the same
        task reuses the same dir (a resubmitted attempt resumes from its checkpoints there).
        Raises TransportError when the cluster cannot be reached at all."""
        ...

    def plan(self, requests: Sequence[SubmitRequest]) -> dict[str, Mapping[str, Any]]:
        """What the backend will make of each request (token -> reference), decided before
        the write-ahead commit so the reference is on the attempt before the job can exist:
        Slurm plans job arrays here (``{"array": <array token>, "index": i}``), so an element
        whose sbatch reply is lost is still found. ``submit`` follows the plan it is handed
        back in ``SubmitRequest.backend_ref``, leaving out requests that were dropped.
        Empty when there is nothing to plan. May read the cluster's limits (cached)."""
        ...

    def submit(self, requests: Sequence[SubmitRequest]) -> list[SubmitOutcome]:
        """Start one job per request, in as few round trips as the backend can."""
        ...

    def poll(self, requests: Sequence[PollRequest]) -> dict[str, JobInfo]:
        """Current state of each request's job, keyed by token. A token missing from the result
        means the scheduler has no record of it (yet): the caller decides about ``lost``.
        Raises TransportError when the cluster cannot be reached: then nothing is known."""
        ...

    def cancel(self, requests: Sequence[PollRequest]) -> None:
        """Ask the scheduler to cancel these jobs. Confirmation comes through ``poll``."""
        ...

    def fetch_outputs(self, task: Task, dest: Path) -> list[Path]:
        """Copy files matching the task's output globs from its work dir into ``dest``:
        :meth:`fetch_outputs_many` for one task, its error raised instead of returned."""
        ...

    def fetch_outputs_many(self, tasks: Sequence[Task], dests: Mapping[str, Path],
                           ) -> dict[str, list[Path] | HpcBridgeError]:  # fmt: skip
        """Copy the outputs of all ``tasks`` (one cluster) at once; remote backends in one
        command execution whatever ``len(tasks)``.

        ``dests`` maps every task id to its local destination directory (created if
        missing). A task's outputs are the regular files under its work dir that
        :func:`hpcbridge.paths.match_outputs` selects with ``task.spec.outputs``: the one
        matcher, so what is fetched is what ``require_outputs`` judges. Each lands at
        ``dest / <path relative to the work dir>``, written atomically; nothing outside
        ``dest`` is ever written, whatever the file names (an archive member that is not a
        requested regular file is refused).

        Returns, for every task id, the local files written, or the ``HpcBridgeError`` met
        by that task alone: ``RemoteFileNotFound`` when its work dir is gone,
        ``RemoteFileError`` when it cannot be listed or a file could not be read. Raises,
        for the whole batch, ``TransportError`` (transient: the cluster cannot be reached,
        the connection or the stream broke; files already written stay, nothing remote
        changed, so the call is safe to repeat) and ``UnsafeArchive`` (the stream held a
        member never asked for)."""
        ...

    def read_log(self, task: Task, attempt: int, stream: str, tail: int | None) -> str:
        """The job's stdout or stderr text (the last ``tail`` lines when given)."""
        ...

    def list_work_dir(self, task: Task) -> list[FileInfo]:
        """Every regular file under the task's work dir, recursively, in one round trip: its
        path relative to the work dir (POSIX), size in bytes and mtime (seconds since the
        epoch, by the clock of the machine the files are on), sorted by path. hpcbridge's own
        ``.hpcbridge/`` dir (markers, the batch script, the ``attempt-N.out``/``.err`` logs)
        is listed with the rest; callers tell it apart with ``paths.in_meta_dir``.

        Symlinks are neither followed nor listed (``find -type f``); empty directories do not
        appear. A file name that is not UTF-8 is shown with replacement characters.

        Raises ``RemoteFileNotFound`` (a ``FileNotFoundError``) when the work dir does not
        exist (yet), ``RemoteFileError`` when it cannot be listed at all (an unreadable
        subdirectory only leaves its files out, with a warning logged), ``TransportError``
        when the cluster cannot be reached. Read-only: safe to repeat."""
        ...

    def read_work_file(self, task: Task, path: str, tail: int | None) -> str:
        """The text (UTF-8, undecodable bytes replaced) of the file ``path`` under the
        task's work dir, in one round trip; with ``tail``, only its last ``tail`` lines,
        exactly as ``tail -n`` prints them (0 gives ``""``), without reading the whole file.

        ``path`` is relative to the work dir and must pass ``paths.check_work_path``. The
        backend resolves it where the file is (symlinks included) and refuses a file whose
        real location is outside the work dir, so a symlink the job made pointing at
        ``~/.ssh`` reads nothing.

        Raises ``UsageError`` for a path outside the work dir (absolute, ``..``, or a symlink
        that leaves it), ``RemoteFileNotFound`` when the file (or the work dir) does not
        exist, ``RemoteFileError`` when it is not a regular file or cannot be read,
        ``TransportError`` when the cluster cannot be reached. Read-only: safe to repeat."""
        ...

    def close(self) -> None: ...
