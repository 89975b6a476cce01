"""FakeBackend: a scheduler you script, behind the Backend protocol.

The script items and records it uses are in :mod:`hpcbridge.testing.fake_state`; the
package docstring (:mod:`hpcbridge.testing`) shows it driving the sync cycle.
"""

from __future__ import annotations

import posixpath
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from ..backends.base import PollRequest, SubmitOutcome, SubmitRequest
from ..backends.slurm_watch import WatchRequest, WatchResult
from ..errors import (
    BackendError,
    CommandTimeout,
    HpcBridgeError,
    SchedulerError,
    TransportError,
    UsageError,
)
from ..lifecycle import TaskState
from ..models import FileInfo, JobInfo, Task
from ..paths import check_work_path, log_name, match_outputs
from ..transport.base import RemoteFileError, RemoteFileNotFound, tail_bytes
from .fake_state import ABSENT, AbsentType, FakeCall, FakeJob, FakeState, Key, ScriptItem

S = TaskState


SubmitFailure = Literal["permanent", "transient", "unknown"]


@dataclass
class _SubmitFault:
    kind: SubmitFailure
    error: HpcBridgeError | None
    job_created: bool
    times: int


class FakeBackend:
    """A scheduler you script, behind the Backend protocol (see :mod:`hpcbridge.testing`).

    Each job answers polls from its *script*: a sequence of items (a :class:`TaskState`, a
    :class:`FakeState`, or :data:`ABSENT`), one per poll, the last one repeating. Scripts are
    looked up per poll, most specific first: ``(task id, attempt)``, ``task id``,
    ``(task name, attempt)``, ``task name``, then ``default`` (``QUEUED`` unless given).
    Setting a script restarts it for the jobs it applies to.

    A poll for a job id this fake never allocated (an attempt your test wrote into the
    registry directly) is answered from the task's script when it has one, else absent; a
    request without a job id (submission outcome unknown) finds a job only by its token,
    which exists after ``fail_submit(..., "unknown")`` (the reply was lost, the job is real).

    Parameters:
        script: initial scripts, ``{key: item or [items]}`` with keys as above.
        default: the script of jobs no key matches.
        first_job_id: the first job id handed out; ids count up from it.
        work_root: ``prepare`` returns ``<work_root>/<task id>`` as each task's work dir.
        cancel_state: what a job reports after ``cancel`` (``None``: cancel is only recorded).
        name, scheduler_requeues: the Backend protocol attributes.
    """

    def __init__(
        self,
        *,
        script: Mapping[Key, ScriptItem | Sequence[ScriptItem]] | None = None,
        default: ScriptItem | Sequence[ScriptItem] = S.QUEUED,
        first_job_id: int = 1000,
        work_root: str = "/fake/work",
        cancel_state: TaskState | None = S.CANCELLED,
        name: str = "fake",
        scheduler_requeues: bool = True,
    ) -> None:
        self.name = name
        self.scheduler_requeues = scheduler_requeues
        self.work_root = work_root.rstrip("/") or "/"
        self.cancel_state = cancel_state
        self.calls: list[FakeCall] = []
        self.jobs: dict[str, FakeJob] = {}  # by job id, in submission order
        self.closed = False
        self._next_id = first_job_id
        self._default = _as_steps(default)
        self._scripts: dict[tuple[str, int | None], tuple[ScriptItem, ...]] = {}
        self._submit_faults: dict[tuple[str, int | None], list[_SubmitFault]] = {}
        self._prepare_errors: dict[str, HpcBridgeError] = {}
        self._fetch_errors: dict[str, HpcBridgeError] = {}
        self._raises: dict[str, list[list[Any]]] = {}  # method -> [[error, times left]]
        self._outputs: dict[str, dict[str, bytes]] = {}
        self._outputs_at: dict[str, float] = {}
        self._files: dict[str, dict[str, tuple[bytes, float]]] = {}
        self._outside: dict[str, frozenset[str]] = {}
        self._logs: dict[tuple[str, int, str], str] = {}
        self._logs_at: dict[tuple[str, int, str], float] = {}
        self._names: dict[str, str] = {}  # task id -> task name, learnt from prepare/submit
        self._lock = threading.RLock()
        for key, items in (script or {}).items():
            task, attempt = _split_key(key)
            self.script(task, attempt, *_as_steps(items))

    # -- scripting ------------------------------------------------------------------------

    def script(self, task: str, attempt: int | None, *items: ScriptItem) -> None:
        """Script the answers of the next polls of ``task``'s job (id or name; ``attempt``
        None = every attempt without a script of its own): one item per poll, the last
        repeating. ``backend.script("t1", 1, QUEUED, RUNNING, ABSENT, SUCCEEDED)``."""
        if not items:
            raise ValueError("script() needs at least one item")
        steps = _as_steps(items)
        with self._lock:
            self._scripts[(task, attempt)] = steps
            for job in self._matching_jobs(task, attempt):
                job.cursor = 0
                job.override = None

    def set_state(self, task: str, attempt: int | None, state: TaskState | None,
                  **fields: Any) -> None:  # fmt: skip
        """From the next poll on, ``task``'s job reports ``state`` with these JobInfo fields
        (see :class:`FakeState`: ``exit_code``, ``signal``, ``nodes``, ``reason``,
        ``restarts``, ``requeue_causes``, ``requeue_states``, ``job_alive``, times, ...)."""
        self.script(task, attempt, FakeState(state, **fields))

    def set_absent(self, task: str, attempt: int | None = None) -> None:
        """From the next poll on, the scheduler has no record of ``task``'s job."""
        self.script(task, attempt, ABSENT)

    def fail_submit(
        self,
        task: str,
        kind: SubmitFailure = "permanent",
        *,
        attempt: int | None = None,
        error: HpcBridgeError | None = None,
        job_created: bool | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` submissions of ``task`` (id or name) fail.

        ``"permanent"``: the scheduler rejected it (``SchedulerError``; the task fails).
        ``"transient"``: it never reached the scheduler (``TransportError``, transient).
        ``"unknown"``: the reply was lost (``CommandTimeout``, ``unknown=True``); the job is
        created anyway unless ``job_created=False``, so a later poll finds it by token.
        ``error`` replaces the default error."""
        if kind not in ("permanent", "transient", "unknown"):
            raise ValueError(f"kind must be 'permanent', 'transient' or 'unknown', got {kind!r}")
        created = (kind == "unknown") if job_created is None else job_created
        with self._lock:
            self._submit_faults.setdefault((task, attempt), []).append(
                _SubmitFault(kind, error, created, times)
            )

    def fail_prepare(self, task: str, error: HpcBridgeError | None = None) -> None:
        """``prepare`` returns ``error`` (default: a non-transient BackendError) for ``task``
        instead of a work dir, every time until :meth:`reset_failures`."""
        with self._lock:
            self._prepare_errors[task] = error or BackendError(
                f"FakeBackend: staging task {task} failed"
            )

    def fail(self, method: str, error: BaseException | None = None, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (``"poll"``, ``"submit"``, ``"prepare"``,
        ``"cancel"``, ``"fetch_outputs"``, ``"read_log"``, ``"list_work_dir"``,
        ``"read_work_file"``, ``"watch"``) raise ``error``; the default is
        a ``TransportError`` (the cluster cannot be reached: nothing is known)."""
        if method not in _METHODS:
            raise ValueError(f"unknown Backend method {method!r}; one of {sorted(_METHODS)}")
        exc = error or TransportError(f"FakeBackend: {method} failed: cluster unreachable")
        with self._lock:
            self._raises.setdefault(method, []).append([exc, times])

    def fail_poll(self, error: BaseException | None = None, *, times: int = 1) -> None:
        """The next ``times`` polls raise ``error`` (default ``TransportError``)."""
        self.fail("poll", error, times=times)

    def reset_failures(self) -> None:
        """Forget every pending failure (submit, prepare, raised errors)."""
        with self._lock:
            self._submit_faults.clear()
            self._prepare_errors.clear()
            self._fetch_errors.clear()
            self._raises.clear()

    def set_outputs(self, task: str, files: Mapping[str, str | bytes]) -> None:
        """The files (relative path -> content) in ``task``'s work dir that ``fetch_outputs``
        selects from with the task's output globs. Replaces earlier ones."""
        with self._lock:
            self._outputs[task] = {
                path: data.encode() if isinstance(data, str) else bytes(data)
                for path, data in files.items()
            }
            self._outputs_at[task] = time.time()

    def set_files(self, task: str, files: Mapping[str, str | bytes], *,
                  mtime: float | None = None, outside: Iterable[str] = ()) -> None:  # fmt: skip
        """More files (relative path -> content) in ``task``'s work dir, for
        ``list_work_dir`` and ``read_work_file``, modified at ``mtime`` (default: now).
        Merged with earlier ones (a path set again is replaced, so a test can make a file
        grow or shrink). The outputs of ``set_outputs`` and the logs of ``set_log``
        (``.hpcbridge/attempt-N.out``/``.err``) are in the work dir too. ``outside``: paths
        that are symlinks leaving the work dir: reading one is refused as the real backends
        refuse it (``UsageError``)."""
        when = time.time() if mtime is None else mtime
        with self._lock:
            mine = self._files.setdefault(task, {})
            for path, data in files.items():
                mine[check_work_path(path)] = (data.encode() if isinstance(data, str)
                                               else bytes(data), when)  # fmt: skip
            self._outside[task] = self._outside.get(task, frozenset()) | frozenset(outside)

    def set_log(self, task: str, attempt: int, stream: str, text: str) -> None:
        """What ``read_log`` returns for this attempt's ``"stdout"`` or ``"stderr"``."""
        _check_stream(stream)
        with self._lock:
            self._logs[(task, attempt, stream)] = text
            self._logs_at[(task, attempt, stream)] = time.time()

    # -- inspection -----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[FakeCall]:
        """The recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    @property
    def submitted(self) -> list[SubmitRequest]:
        """Every SubmitRequest passed to ``submit``, in order."""
        return [r for c in self.calls_to("submit") for r in c.args[0]]

    def job(self, task: str, attempt: int | None = None) -> FakeJob:
        """The job of ``task`` (id or name) for ``attempt`` (default: its latest job)."""
        with self._lock:
            found = [j for j in self.jobs.values() if self._key_matches(j, task, attempt)]
        if not found:
            raise KeyError(f"FakeBackend has no job for task {task!r} attempt {attempt}")
        return found[-1]

    # -- Backend protocol -----------------------------------------------------------------

    def prepare(self, tasks: Sequence[Task]) -> dict[str, str | HpcBridgeError]:
        with self._lock:
            self._record("prepare", tuple(tasks))
            out: dict[str, str | HpcBridgeError] = {}
            for task in tasks:
                self._names[task.id] = task.name
                err = self._prepare_errors.get(task.id) or self._prepare_errors.get(task.name)
                out[task.id] = err if err is not None else (task.work_dir or self._work_dir(task.id))
            return out

    def plan(self, requests: Sequence[SubmitRequest]) -> dict[str, Mapping[str, Any]]:
        return {}  # one job per request: nothing to decide before the write-ahead

    def submit(self, requests: Sequence[SubmitRequest]) -> list[SubmitOutcome]:
        with self._lock:
            self._record("submit", tuple(requests))
            outcomes: list[SubmitOutcome] = []
            for req in requests:
                task = req.task
                self._names[task.id] = task.name
                fault = self._take_fault(task.id, task.name, req.attempt)
                if fault is None or fault.job_created:
                    job = self._new_job(task.id, req.attempt, req.token,
                                        task.work_dir or self._work_dir(task.id))  # fmt: skip
                    if fault is None:
                        outcomes.append(SubmitOutcome(req.token, job_id=job.job_id))
                        continue
                error = fault.error or _default_submit_error(fault.kind, task.id)
                outcomes.append(SubmitOutcome(req.token, error=error,
                                              unknown=fault.kind == "unknown"))  # fmt: skip
            return outcomes

    def poll(self, requests: Sequence[PollRequest]) -> dict[str, JobInfo]:
        with self._lock:
            self._record("poll", tuple(requests))
            out: dict[str, JobInfo] = {}
            for req in requests:
                job = self._job_for(req)
                if job is None:
                    continue
                job.polls += 1
                item = self._next_item(job)
                if isinstance(item, AbsentType):
                    continue
                out[req.token] = item.job_info(job.job_id, name=f"fake-{job.task_id}-{job.attempt}",
                                               comment=f"fake:{job.token}")  # fmt: skip
            return out

    def cancel(self, requests: Sequence[PollRequest]) -> None:
        with self._lock:
            self._record("cancel", tuple(requests))
            for req in requests:
                job = self._job_for(req, adopt=False)
                if job is None:
                    continue
                job.cancelled = True
                if self.cancel_state is not None:
                    job.override = FakeState(self.cancel_state)

    def fetch_outputs(self, task: Task, dest: Path) -> list[Path]:
        with self._lock:
            self._record("fetch_outputs", task, dest)
            return self._copy_outputs(task, Path(dest))

    def _copy_outputs(self, task: Task, dest: Path) -> list[Path]:
        files = self._outputs.get(task.id, self._outputs.get(task.name, {}))
        copied: list[Path] = []
        for rel in match_outputs(files, task.spec.outputs):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[rel])
            copied.append(target)
        return copied

    def fetch_outputs_many(self, tasks: Sequence[Task], dests: Mapping[str, Path],
                           ) -> dict[str, list[Path] | HpcBridgeError]:  # fmt: skip
        """One recorded call for the whole batch (as the Slurm backend makes one command).
        ``fail("fetch_outputs_many")`` fails the batch; ``fail_fetch(task)`` fails one task."""
        with self._lock:
            self._record("fetch_outputs_many", tuple(tasks), dict(dests))
            out: dict[str, list[Path] | HpcBridgeError] = {}
            for task in tasks:
                error = self._fetch_errors.get(task.id)
                if error is not None:
                    out[task.id] = error
                    continue
                out[task.id] = self._copy_outputs(task, Path(dests[task.id]))
            return out

    def fail_fetch(self, task: str, error: HpcBridgeError | None = None) -> None:
        """``fetch_outputs_many`` returns ``error`` (default: ``RemoteFileNotFound``, the work
        dir is gone) for ``task`` alone, every time until :meth:`reset_failures`."""
        with self._lock:
            self._fetch_errors[task] = error or RemoteFileNotFound(
                f"/fake/{task}", where=f"task {task}'s work dir")

    def read_log(self, task: Task, attempt: int, stream: str, tail: int | None) -> str:
        with self._lock:
            self._record("read_log", task, attempt, stream, tail)
            _check_stream(stream)
            text = self._logs.get((task.id, attempt, stream),
                                  self._logs.get((task.name, attempt, stream), ""))  # fmt: skip
            if tail is None:
                return text
            return tail_bytes(text.encode(), tail).decode()

    def list_work_dir(self, task: Task) -> list[FileInfo]:
        with self._lock:
            self._record("list_work_dir", task)
            return sorted((FileInfo(p, len(data), at) for p, (data, at) in self._work_files(task).items()),
                          key=lambda f: f.path)  # fmt: skip

    def read_work_file(self, task: Task, path: str, tail: int | None) -> str:
        with self._lock:
            self._record("read_work_file", task, path, tail)
            rel = check_work_path(path)
            if rel in self._outside.get(task.id, self._outside.get(task.name, frozenset())):
                raise UsageError(f"{rel!r} is outside the task's work dir (a symlink that leaves it)",
                                 hint="give a path relative to the work dir, as "
                                      "`hpcbridge tasks files ID` lists it")  # fmt: skip
            files = self._work_files(task)
            full = posixpath.join(task.work_dir or self._work_dir(task.id), rel)
            if rel not in files:
                if any(p.startswith(rel + "/") for p in files):
                    raise RemoteFileError(f"FakeBackend: not a regular file: {full}", path=full)
                raise RemoteFileNotFound(full, where=f"FakeBackend: task {task.id}'s work dir")
            data = files[rel][0]
            return (data if tail is None else tail_bytes(data, tail)).decode("utf-8", errors="replace")

    def watch(self, requests: Sequence[WatchRequest]) -> WatchResult:
        """Newest mtime and watched items from the files of ``set_files`` / ``set_outputs``
        / ``set_log`` (regexes with Python's ``re.search``; the real script uses grep -E)."""
        with self._lock:
            self._record("watch", list(requests))
            result = WatchResult(now=time.time())
            for r in requests:
                files = self._work_files(_Named(r.task_id, r.task_name))
                result.newest[r.token] = max((at for _d, at in files.values()), default=None)
                result.hits[r.token] = {
                    i: path in files and (regex is None or re.search(regex, files[path][0].decode(errors="replace")) is not None)
                    for i, (path, regex) in enumerate(r.items)
                }  # fmt: skip
            return result

    def _work_files(self, task: Task | _Named) -> dict[str, tuple[bytes, float]]:
        # you hold self._lock
        out: dict[str, tuple[bytes, float]] = {}
        for (key, attempt, stream), text in self._logs.items():
            if key in (task.id, task.name):
                out[log_name(attempt, stream)] = (text.encode(), self._logs_at[(key, attempt, stream)])
        for key in (task.name, task.id):  # the id's entries win over the name's
            at = self._outputs_at.get(key, 0.0)
            out.update({p: (d, at) for p, d in self._outputs.get(key, {}).items()})
        for key in (task.name, task.id):
            out.update(self._files.get(key, {}))
        return out

    def close(self) -> None:
        with self._lock:
            self._record("close")
            self.closed = True

    # -- internals ------------------------------------------------------------------------

    def _record(self, method: str, *args: Any) -> None:
        # you hold self._lock
        self.calls.append(FakeCall(method, args))
        pending = self._raises.get(method)
        if pending:
            entry = pending[0]
            entry[1] -= 1
            if entry[1] <= 0:
                pending.pop(0)
            raise entry[0]

    def _work_dir(self, task_id: str) -> str:
        return posixpath.join(self.work_root, task_id)

    def _new_job(self, task_id: str, attempt: int, token: str, work_dir: str | None,
                 job_id: str | None = None) -> FakeJob:  # fmt: skip
        if job_id is None:
            job_id = str(self._next_id)
            self._next_id += 1
        job = FakeJob(job_id=job_id, task_id=task_id, attempt=attempt, token=token,
                      name=self._names.get(task_id), work_dir=work_dir)  # fmt: skip
        self.jobs[job_id] = job
        return job

    def _take_fault(self, task_id: str, name: str, attempt: int) -> _SubmitFault | None:
        for key in ((task_id, attempt), (task_id, None), (name, attempt), (name, None)):
            faults = self._submit_faults.get(key)
            if faults:
                fault = faults[0]
                fault.times -= 1
                if fault.times <= 0:
                    faults.pop(0)
                return fault
        return None

    def _job_for(self, req: PollRequest, *, adopt: bool = True) -> FakeJob | None:
        if req.job_id is not None:
            job = self.jobs.get(req.job_id)
            if job is None and adopt and self._script_for(req.task_id, req.attempt) is not None:
                # A job the test put into the registry itself: answer from the task's script.
                job = self._new_job(req.task_id, req.attempt, req.token, req.work_dir,
                                    job_id=req.job_id)  # fmt: skip
            return job
        # Submission outcome unknown: the scheduler is asked by token (as Slurm's comment).
        return next((j for j in self.jobs.values() if j.token == req.token), None)

    def _script_for(self, task_id: str, attempt: int) -> tuple[ScriptItem, ...] | None:
        name = self._names.get(task_id)
        keys: list[tuple[str, int | None]] = [(task_id, attempt), (task_id, None)]
        if name:
            keys += [(name, attempt), (name, None)]
        for key in keys:
            if key in self._scripts:
                return self._scripts[key]
        return None

    def _next_item(self, job: FakeJob) -> FakeState | AbsentType:
        if job.override is not None:
            return job.override
        steps = self._script_for(job.task_id, job.attempt) or self._default
        item = steps[min(job.cursor, len(steps) - 1)]
        job.cursor += 1
        return FakeState(item) if isinstance(item, TaskState) else item

    def _key_matches(self, job: FakeJob, task: str, attempt: int | None) -> bool:
        return task in (job.task_id, job.name) and attempt in (None, job.attempt)

    def _matching_jobs(self, task: str, attempt: int | None) -> list[FakeJob]:
        return [j for j in self.jobs.values() if self._key_matches(j, task, attempt)]


_METHODS: Final = frozenset({"prepare", "submit", "poll", "cancel", "fetch_outputs",
                             "fetch_outputs_many", "read_log",
                             "list_work_dir", "read_work_file", "watch"})


@dataclass(frozen=True)
class _Named:
    """What ``_work_files`` reads of a task: its id and name."""

    id: str
    name: str


def _as_steps(items: ScriptItem | Sequence[ScriptItem]) -> tuple[ScriptItem, ...]:
    # A TaskState is a str (StrEnum), so test for single items before treating as a sequence.
    if isinstance(items, (TaskState, FakeState, AbsentType)):
        return (items,)
    steps = tuple(items)
    for item in steps:
        if not isinstance(item, (TaskState, FakeState, AbsentType)):
            raise TypeError(f"script items are TaskState, FakeState or ABSENT, got {item!r}")
    if not steps:
        raise ValueError("a script needs at least one item")
    return steps


def _split_key(key: Key) -> tuple[str, int | None]:
    if isinstance(key, tuple):
        return key[0], key[1]
    return key, None


def _check_stream(stream: str) -> None:
    if stream not in ("stdout", "stderr"):
        raise UsageError(f"stream must be 'stdout' or 'stderr', got {stream!r}")


def _default_submit_error(kind: SubmitFailure, task_id: str) -> HpcBridgeError:
    if kind == "permanent":
        return SchedulerError(("fake-sbatch",), 1, "FakeBackend: submission rejected",
                              what=f"submitting task {task_id}")  # fmt: skip
    if kind == "transient":
        return TransportError(f"FakeBackend: submitting task {task_id}: cluster unreachable")
    return CommandTimeout(f"FakeBackend: submitting task {task_id} timed out; outcome unknown")


if TYPE_CHECKING:
    # mypy proves the fake satisfies the protocol: a missing or mistyped member fails here.
    from ..backends.base import Backend

    _backend_check: Backend = FakeBackend()
