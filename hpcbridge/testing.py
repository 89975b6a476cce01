"""Test helpers: fakes for the two seams where hpcbridge meets the outside world.

Public and stable, for hpcbridge's own tests and for yours (as structlog's ``testing`` module
or httpx's ``MockTransport``). Nothing here touches a cluster, a network or ``subprocess``
(except :func:`run_locally`, which you call on purpose).

:class:`FakeBackend`
    A scripted scheduler behind the :class:`~hpcbridge.backends.base.Backend` protocol. Say
    what each attempt's job looks like at each poll (``set_state``, ``script``), make a
    submission fail (permanently, transiently, or with an unknown outcome), a poll raise, a
    job vanish, outputs appear; every call is recorded in ``backend.calls``. Job ids are
    allocated sequentially (1000, 1001, ...). Use it to drive the sync cycle without Slurm::

        backend = FakeBackend(script={"sim": [TaskState.RUNNING, TaskState.SUCCEEDED]})
        backend.set_outputs("sim", {"result.json": "{}"})     # keys: task name or task id
        runtime = Runtime(config, registry, backends={"lab": backend})
        Service(runtime).submit(command=["python3", "sim.py"], name="sim", cluster="lab",
                                outputs=["*.json"])           # job 1000, queued
        sync_cluster(runtime, "lab")                          # running
        sync_cluster(runtime, "lab")                          # succeeded, result.json fetched
        assert [c.method for c in backend.calls] == [
            "prepare", "submit", "poll", "poll", "fetch_outputs"]

:class:`ReplayTransport`
    Replays captured scheduler output behind the :class:`~hpcbridge.transport.base.Transport`
    protocol, so the real :class:`~hpcbridge.backends.slurm.SlurmBackend` runs unchanged.
    Rules map an argv *prefix* to a reply (stdout, stderr, exit status, or an exception);
    replies can be loaded from the captures in ``tests/data/slurm/<version>/``. An argv no
    rule matches raises :class:`UnexpectedCommand` (an ``AssertionError``: a test failure, never
    an empty reply). Files live in memory. Every call is recorded in ``transport.calls``::

        data = Path("tests/data/slurm/22.05")
        transport = ReplayTransport(data)
        transport.on("squeue", file="hpcb-squeue-me-live.txt")
        transport.on("sbatch", file="err_sbatch_invalid_partition")  # .stdout/.stderr/.rc
        backend = SlurmBackend(cluster_config, transport)
        infos = backend.poll(requests)
        assert [c.command[0] for c in transport.calls] == ["date", "squeue"]

Column helpers (:func:`split_columns`, :func:`join_columns`, :func:`reorder_columns`) turn
captures made with another field order (``scripts/lab/capture.sh``) into the exact line shape
of hpcbridge's own queries (``hpcbridge.slurm.SQUEUE_FIELDS`` / ``SACCT_FIELDS``).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from .backends.base import PollRequest, SubmitOutcome, SubmitRequest
from .errors import (
    BackendError,
    CommandFailed,
    CommandTimeout,
    HpcBridgeError,
    SchedulerError,
    TransportError,
    UsageError,
)
from .lifecycle import TaskState
from .models import CommandResult, JobInfo, Task
from .paths import match_outputs
from .transport.base import (
    RemoteFileError,
    RemoteFileNotFound,
    TransportStats,
    check_argv,
    expand_path,
    script_argv,
    tail_bytes,
)

__all__ = [
    "ABSENT",
    "FakeBackend",
    "FakeCall",
    "FakeJob",
    "FakeState",
    "Reply",
    "ReplayCall",
    "ReplayTransport",
    "UnexpectedCommand",
    "join_columns",
    "normalize_argv",
    "reorder_columns",
    "run_locally",
    "split_columns",
]

S = TaskState


# ============================================================================ FakeBackend


class _Absent:
    """The type of :data:`ABSENT` (one instance; compare with ``is``)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
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


ScriptItem = TaskState | FakeState | _Absent
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


SubmitFailure = Literal["permanent", "transient", "unknown"]


@dataclass
class _SubmitFault:
    kind: SubmitFailure
    error: HpcBridgeError | None
    job_created: bool
    times: int


class FakeBackend:
    """A scheduler you script, behind the Backend protocol (see the module docstring).

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
        self._raises: dict[str, list[list[Any]]] = {}  # method -> [[error, times left]]
        self._outputs: dict[str, dict[str, bytes]] = {}
        self._logs: dict[tuple[str, int, str], str] = {}
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
        ``"cancel"``, ``"fetch_outputs"``, ``"read_log"``) raise ``error``; the default is
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
            self._raises.clear()

    def set_outputs(self, task: str, files: Mapping[str, str | bytes]) -> None:
        """The files (relative path -> content) in ``task``'s work dir that ``fetch_outputs``
        selects from with the task's output globs. Replaces earlier ones."""
        with self._lock:
            self._outputs[task] = {
                path: data.encode() if isinstance(data, str) else bytes(data)
                for path, data in files.items()
            }

    def set_log(self, task: str, attempt: int, stream: str, text: str) -> None:
        """What ``read_log`` returns for this attempt's ``"stdout"`` or ``"stderr"``."""
        _check_stream(stream)
        with self._lock:
            self._logs[(task, attempt, stream)] = text

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
                if isinstance(item, _Absent):
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
            files = self._outputs.get(task.id, self._outputs.get(task.name, {}))
            copied: list[Path] = []
            for rel in match_outputs(files, task.spec.outputs):
                target = Path(dest) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(files[rel])
                copied.append(target)
            return copied

    def read_log(self, task: Task, attempt: int, stream: str, tail: int | None) -> str:
        with self._lock:
            self._record("read_log", task, attempt, stream, tail)
            _check_stream(stream)
            text = self._logs.get((task.id, attempt, stream),
                                  self._logs.get((task.name, attempt, stream), ""))  # fmt: skip
            if tail is None:
                return text
            return tail_bytes(text.encode(), tail).decode()

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

    def _next_item(self, job: FakeJob) -> FakeState | _Absent:
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


_METHODS: Final = frozenset({"prepare", "submit", "poll", "cancel", "fetch_outputs", "read_log"})


def _as_steps(items: ScriptItem | Sequence[ScriptItem]) -> tuple[ScriptItem, ...]:
    # A TaskState is a str (StrEnum), so test for single items before treating as a sequence.
    if isinstance(items, (TaskState, FakeState, _Absent)):
        return (items,)
    steps = tuple(items)
    for item in steps:
        if not isinstance(item, (TaskState, FakeState, _Absent)):
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


# ========================================================================= ReplayTransport


class UnexpectedCommand(AssertionError):
    """A :class:`ReplayTransport` got a command (or script) that no rule answers, or
    :meth:`ReplayTransport.verify` found rules that were not used up.

    An ``AssertionError``, not an hpcbridge error: code under test that handles
    ``HpcBridgeError``/``OSError`` (an "outcome unknown" path, say) must not swallow it. Code
    that catches every ``Exception`` still can, which is why every such call is also kept in
    ``transport.unmatched`` and :meth:`~ReplayTransport.verify` reports it again."""


@dataclass(frozen=True)
class Reply:
    """What a replayed command prints and how it exits, or the exception it raises instead
    (``CommandTimeout``, ``TransportError``: the transport's own failures)."""

    stdout: str = ""
    stderr: str = ""
    exit_status: int = 0
    raises: BaseException | None = None

    @classmethod
    def from_files(cls, directory: str | os.PathLike[str], name: str) -> Reply:
        """A captured reply. ``name`` with a suffix (``squeue_running.txt``) is a file of
        stdout, exit status 0; without one (``err_sbatch_invalid_partition``) it is the triple
        ``name.stdout`` / ``name.stderr`` / ``name.rc``, each optional (empty, 0)."""
        base = Path(directory)
        whole = base / name
        if whole.is_file():
            return cls(stdout=whole.read_text(encoding="utf-8"))
        parts = {ext: base / f"{name}.{ext}" for ext in ("stdout", "stderr", "rc")}
        if not any(p.is_file() for p in parts.values()):
            raise FileNotFoundError(
                f"no capture {name!r} in {base}: neither {whole.name} nor "
                f"{name}.stdout/.stderr/.rc exist"
            )

        def text(ext: str) -> str:
            p = parts[ext]
            return p.read_text(encoding="utf-8") if p.is_file() else ""

        rc = text("rc").strip()
        return cls(stdout=text("stdout"), stderr=text("stderr"), exit_status=int(rc or 0))


@dataclass(frozen=True)
class ReplayCall:
    """One recorded transport call.

    ``method`` is the Transport method (``"run"``, ``"run_script"``, ``"put"``, ``"get"``,
    ``"read_text"``, ``"write_text"``, ``"makedirs"``, ``"exists"``, ``"list_files"``,
    ``"expand"``, ``"connect"``, ``"close"``). For commands, ``argv`` is exactly what the caller
    passed (``("bash", "-s")`` for ``run_script``, whose text is ``script``) and ``command``
    is what rules match: ``argv`` without a leading ``env -u VAR ...`` and without the
    directory of the program (see :func:`normalize_argv`). For file operations ``path`` is the
    expanded remote path and ``local`` the local one (put/get)."""

    method: str
    argv: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    stdin: str | bytes | None = None
    script: str | None = None
    timeout: float | None = None
    what: str | None = None
    path: str | None = None
    local: Path | None = None


Responder = Reply | str | Callable[[ReplayCall], Reply | str]
"""A rule's answer: a :class:`Reply`, a string (stdout, exit 0), or a callable that gets the
:class:`ReplayCall` and returns either."""


@dataclass
class _Rule:
    kind: Literal["run", "script"]
    prefix: tuple[str, ...]
    has: tuple[str, ...]
    contains: tuple[str, ...]
    responder: Responder
    times: int | None
    used: int = 0

    def live(self) -> bool:
        return self.times is None or self.used < self.times

    def matches(self, call: ReplayCall) -> bool:
        if self.kind == "script":
            text = call.script or ""
            return call.method == "run_script" and all(c in text for c in self.contains)
        cmd = call.command
        if call.method != "run" or cmd[: len(self.prefix)] != self.prefix:
            return False
        return all(any(a == h or a.startswith(h) for a in cmd) for h in self.has)

    def describe(self) -> str:
        if self.kind == "script":
            what = f"script containing {list(self.contains)}" if self.contains else "any script"
        else:
            what = shlex.join(self.prefix) + (f" (with {list(self.has)})" if self.has else "")
        left = "" if self.times is None else f", used {self.used}/{self.times}"
        return what + left


_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def normalize_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """The words a :class:`ReplayTransport` rule matches: ``argv`` without a leading
    ``env`` wrapper (``-u NAME``, ``--unset=NAME``, ``-i``, ``NAME=value``, ``--``) and with
    the program reduced to its base name (``/opt/slurm/bin/squeue`` -> ``squeue``), so rules
    keep matching when commands gain an environment-scrubbing prefix or ``slurm_bin_dir``."""
    items = list(argv)
    if items and posixpath.basename(items[0]) == "env":
        i = 1
        while i < len(items):
            arg = items[i]
            if arg in ("-u", "--unset"):
                i += 2
            elif arg.startswith("--unset=") or (arg.startswith("-u") and len(arg) > 2):
                i += 1
            elif arg in ("-i", "--ignore-environment", "-") or _ENV_ASSIGNMENT.match(arg):
                i += 1
            elif arg == "--":
                i += 1
                break
            else:
                break
        items = items[i:]
    if items:
        items[0] = posixpath.basename(items[0])
    return tuple(items)


class ReplayTransport:
    """A Transport that answers commands from rules and keeps files in memory.

    Rules are tried in the order they were added; the first live one that matches answers (a
    rule with ``times=n`` retires after n answers, so ``on(p, a, times=1)`` then ``on(p, b)``
    replies a once, then b for good). No match raises :class:`UnexpectedCommand`.

    Parameters:
        data_dir: where ``file=`` names are looked up (e.g. ``tests/data/slurm/22.05``).
        home: the remote home directory ``~`` and relative paths resolve against.
        utc_offset: the answer to ``date +%z`` (how SlurmBackend learns the cluster's zone)
            when no rule of yours answers it; ``None`` leaves that command unanswered too.
        description: the ``description`` attribute (shown in error messages).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        home: str = "/home/hpcb",
        utc_offset: str | None = "+0000",
        description: str = "replay",
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.home = home
        self.description = description
        self.stats = TransportStats()
        self.calls: list[ReplayCall] = []
        self.unmatched: list[ReplayCall] = []
        self.files: dict[str, bytes] = {}  # absolute remote path -> content
        self.modes: dict[str, int] = {}
        self.dirs: set[str] = set()
        self.closed = False
        self._rules: list[_Rule] = []
        self._fallback: list[_Rule] = []
        self._failures: dict[str, list[list[Any]]] = {}
        self._lock = threading.RLock()
        if utc_offset is not None:
            self._fallback.append(_Rule("run", ("date", "+%z"), (), (), Reply(utc_offset + "\n"),
                                        None))  # fmt: skip

    # -- rules ----------------------------------------------------------------------------

    def on(
        self,
        prefix: str | Sequence[str],
        reply: Responder | None = None,
        *,
        file: str | None = None,
        stdout: str = "",
        stderr: str = "",
        exit_status: int = 0,
        raises: BaseException | None = None,
        has: Sequence[str] = (),
        times: int | None = None,
    ) -> ReplayTransport:
        """Answer ``run(argv)`` when the normalized argv starts with ``prefix`` (a string is
        split like a shell line: ``"sacct --parsable2"``) and, for each string in ``has``, some
        argument equals it or starts with it (``has=["--name="]``).

        The answer is ``reply`` (a Reply, a stdout string, or a callable), or the capture
        ``file`` under ``data_dir`` (see :meth:`Reply.from_files`), or else built from
        ``stdout``/``stderr``/``exit_status``/``raises``. Returns self, for chaining."""
        words = tuple(shlex.split(prefix)) if isinstance(prefix, str) else tuple(prefix)
        if not words:
            raise ValueError("a rule needs a non-empty argv prefix")
        rule = _Rule("run", words, tuple(has), (),
                     self._responder(reply, file, stdout, stderr, exit_status, raises), times)  # fmt: skip
        with self._lock:
            self._rules.append(rule)
        return self

    def on_script(
        self,
        reply: Responder | None = None,
        *,
        contains: str | Sequence[str] = (),
        file: str | None = None,
        stdout: str = "",
        stderr: str = "",
        exit_status: int = 0,
        raises: BaseException | None = None,
        times: int | None = None,
    ) -> ReplayTransport:
        """Answer ``run_script(script)`` when the script contains every string of ``contains``
        (none: any script). A callable ``reply`` sees the script as ``call.script``: that is
        how a test writes the bulk submission report for the tokens it submitted, or runs
        the script for real with :func:`run_locally`. Returns self."""
        needles = (contains,) if isinstance(contains, str) else tuple(contains)
        rule = _Rule("script", (), (), needles,
                     self._responder(reply, file, stdout, stderr, exit_status, raises), times)  # fmt: skip
        with self._lock:
            self._rules.append(rule)
        return self

    def fail(self, method: str, error: BaseException | None = None, *,
             times: int | None = 1) -> ReplayTransport:  # fmt: skip
        """The next ``times`` calls (None: all) of a file method (``put``, ``get``,
        ``read_text``, ``write_text``, ``makedirs``, ``exists``, ``list_files``, ``expand``)
        or of ``connect`` raise ``error`` (default: a ``TransportError``). Commands fail
        through their rules (``raises=``). Returns self."""
        if method not in _FILE_METHODS | {"connect"}:
            raise ValueError(f"fail() takes a file method or 'connect', got {method!r}; "
                             "make commands fail with on(..., raises=...)")  # fmt: skip
        exc = error or TransportError(f"{self.description}: {method} failed: connection lost")
        with self._lock:
            self._failures.setdefault(method, []).append([exc, times])
        return self

    def clear_rules(self) -> None:
        """Forget every rule (the ``date +%z`` fallback stays)."""
        with self._lock:
            self._rules.clear()

    # -- inspection -----------------------------------------------------------------------

    def commands(self) -> list[tuple[str, ...]]:
        """The normalized argv of every ``run`` call, in order."""
        return [c.command for c in self.calls if c.method == "run"]

    def calls_to(self, program: str) -> list[ReplayCall]:
        """The ``run`` calls of one program (base name, e.g. ``"sacct"``)."""
        return [c for c in self.calls if c.method == "run" and c.command[:1] == (program,)]

    @property
    def scripts(self) -> list[str]:
        """The text of every ``run_script`` call, in order."""
        return [c.script or "" for c in self.calls if c.method == "run_script"]

    def verify(self) -> None:
        """Raise :class:`UnexpectedCommand` if a call matched no rule, or a rule added with
        ``times=n`` answered fewer than n calls (call it at the end of a test)."""
        with self._lock:
            problems = [f"unanswered: {_show(c)}" for c in self.unmatched]
            problems += [f"not used up: {r.describe()}" for r in self._rules
                         if r.times is not None and r.used < r.times]  # fmt: skip
        if problems:
            raise UnexpectedCommand("ReplayTransport.verify():\n  " + "\n  ".join(problems))

    # -- Transport protocol: commands ----------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        items = check_argv(argv)  # the real transports' validation: lists, str, no NUL
        call = ReplayCall("run", argv=items, command=normalize_argv(items), stdin=stdin,
                          timeout=timeout, what=what)  # fmt: skip
        return self._answer(call, check)

    def run_script(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        argv = script_argv(False)
        call = ReplayCall("run_script", argv=argv, command=argv, script=script,
                          timeout=timeout, what=what)  # fmt: skip
        return self._answer(call, check)

    def connect(self) -> None:
        """What SSHTransport.connect does: nothing here but recording (and ``fail``)."""
        self._file_op("connect", None)

    # -- Transport protocol: files ---------------------------------------------------------

    def expand(self, remote: str) -> str:
        path = expand_path(remote, self.home)
        self._file_op("expand", path)
        return path

    def put(self, local: Path, remote: str) -> None:
        dest = expand_path(remote, self.home)
        source = Path(local)
        self._file_op("put", dest, source)
        with self._lock:
            if source.is_dir():
                self._add_dir(dest)
                for dirpath, _dirnames, filenames in os.walk(source, followlinks=True):
                    rel = Path(dirpath).relative_to(source).as_posix()
                    base = dest if rel == "." else posixpath.join(dest, rel)
                    self._add_dir(base)
                    for name in filenames:
                        self._store(posixpath.join(base, name), (Path(dirpath) / name).read_bytes())
            elif source.is_file():
                self._store(dest, source.read_bytes())
            else:
                raise RemoteFileNotFound(str(source), where="put (local source)")

    def get(self, remote: str, local: Path) -> None:
        path = expand_path(remote, self.home)
        self._file_op("get", path, Path(local))
        with self._lock:
            if path not in self.files:
                raise RemoteFileNotFound(path, where=f"get on {self.description}")
            data = self.files[path]
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def list_files(self, remote_dir: str) -> list[str]:
        root = expand_path(remote_dir, self.home).rstrip("/") or "/"
        self._file_op("list_files", root)
        with self._lock:
            if root in self.files:
                raise RemoteFileError(f"list_files on {self.description}: not a directory: {root}",
                                      path=root)  # fmt: skip
            if not self._is_dir(root):
                raise RemoteFileNotFound(root, where=f"list_files on {self.description}")
            prefix = root if root.endswith("/") else root + "/"
            return sorted(p[len(prefix):] for p in self.files if p.startswith(prefix))

    def read_text(self, remote: str, *, tail_lines: int | None = None) -> str:
        path = expand_path(remote, self.home)
        self._file_op("read_text", path)
        with self._lock:
            if path not in self.files:
                raise RemoteFileNotFound(path, where=f"read_text on {self.description}")
            data = self.files[path]
        if tail_lines is not None:
            data = tail_bytes(data, tail_lines)
        return data.decode("utf-8", errors="replace")

    def write_text(self, remote: str, text: str, *, mode: int = 0o644) -> None:
        path = expand_path(remote, self.home)
        self._file_op("write_text", path)
        with self._lock:
            self._store(path, text.encode("utf-8"), mode)

    def makedirs(self, remote: str) -> None:
        path = expand_path(remote, self.home)
        self._file_op("makedirs", path)
        with self._lock:
            if path in self.files:
                raise RemoteFileError(f"makedirs on {self.description}: file exists: {path}",
                                      path=path)  # fmt: skip
            self._add_dir(path)

    def exists(self, remote: str) -> bool:
        path = expand_path(remote, self.home)
        self._file_op("exists", path)
        with self._lock:
            return path in self.files or self._is_dir(path)

    def close(self) -> None:
        with self._lock:
            self.calls.append(ReplayCall("close"))
            self.closed = True

    # -- internals ------------------------------------------------------------------------

    def _responder(self, reply: Responder | None, file: str | None, stdout: str, stderr: str,
                   exit_status: int, raises: BaseException | None) -> Responder:  # fmt: skip
        if reply is not None and file is not None:
            raise ValueError("give either a reply or a file, not both")
        if reply is not None:
            return reply
        if file is not None:
            if self.data_dir is None:
                raise ValueError("file= needs ReplayTransport(data_dir=...)")
            return Reply.from_files(self.data_dir, file)  # read now: a typo fails at once
        return Reply(stdout, stderr, exit_status, raises)

    def _answer(self, call: ReplayCall, check: bool) -> CommandResult:
        with self._lock:
            self.calls.append(call)
            self.stats.add(round_trips=1)
            rule = next((r for r in [*self._rules, *self._fallback]
                         if r.live() and r.matches(call)), None)  # fmt: skip
            if rule is None:
                self.unmatched.append(call)
                known = "\n    ".join(r.describe() for r in self._rules) or "(none)"
                raise UnexpectedCommand(
                    f"ReplayTransport: no rule answers {_show(call)}\n  rules:\n    {known}\n"
                    "  add one with transport.on(prefix, ...) or transport.on_script(...)"
                )
            rule.used += 1
            responder = rule.responder
        answer = responder(call) if callable(responder) else responder
        reply = Reply(stdout=answer) if isinstance(answer, str) else answer
        if reply.raises is not None:
            raise reply.raises
        result = CommandResult(call.argv, reply.exit_status, reply.stdout, reply.stderr)
        if check and not result.ok:
            raise CommandFailed(call.argv, result.exit_status, result.stderr, what=call.what,
                                stdout=result.stdout)  # fmt: skip
        return result

    def _file_op(self, method: str, path: str | None, local: Path | None = None) -> None:
        with self._lock:
            self.calls.append(ReplayCall(method, path=path, local=local))
            pending = self._failures.get(method)
            if pending:
                entry = pending[0]
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        pending.pop(0)
                raise entry[0]

    def _store(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if self._is_dir(path):
            raise RemoteFileError(f"{self.description}: is a directory: {path}", path=path)
        self._add_dir(posixpath.dirname(path))
        self.files[path] = data
        self.modes[path] = mode

    def _add_dir(self, path: str) -> None:
        while path and path not in ("/", "."):
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def _is_dir(self, path: str) -> bool:
        if path == "/" or path in self.dirs:
            return True
        prefix = path.rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self.files)


_FILE_METHODS: Final = frozenset(
    {"put", "get", "read_text", "write_text", "makedirs", "exists", "list_files", "expand"}
)


def _show(call: ReplayCall) -> str:
    if call.method == "run_script":
        head = (call.script or "").strip().splitlines()[:3]
        return f"run_script (what={call.what!r}) starting {head!r}"
    if call.method == "run":
        return f"`{shlex.join(call.argv)}` (what={call.what!r})"
    return f"{call.method}({call.path!r})"


def run_locally(
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Callable[[ReplayCall], Reply]:
    """A responder that really runs the call on this machine: a script with ``bash -s``, a
    command as its argv (no shell). For the few tests that must execute hpcbridge's generated
    shell (the bulk submission script against a fake ``sbatch`` in ``slurm_bin_dir``, the
    marker reader against real marker files)::

        transport.on_script(run_locally(env={"PATH": f"{fake_bin}:/usr/bin:/bin"}))
    """

    def respond(call: ReplayCall) -> Reply:
        argv = list(script_argv(False)) if call.script is not None else list(call.argv)
        data = call.script if call.script is not None else call.stdin
        res = subprocess.run(  # noqa: S603 - argv list, no shell=True
            argv, input=data.encode() if isinstance(data, str) else data, capture_output=True,
            cwd=cwd, env=dict(env) if env is not None else None, timeout=timeout, check=False,
        )  # fmt: skip
        return Reply(res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"),
                     res.returncode)  # fmt: skip

    return respond


# ========================================================================= column helpers


def split_columns(text: str, fields: Sequence[str], *, sep: str = "|",
                  trailing_separator: bool = False) -> list[dict[str, str]]:  # fmt: skip
    """Rows of ``sep``-separated text as dicts keyed by ``fields``. ``trailing_separator``:
    each line ends with ``sep`` (squeue ``-O 'Field:|'`` output). A line with the wrong
    number of fields raises ValueError naming it."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        body = line[: -len(sep)] if trailing_separator and line.endswith(sep) else line
        values = body.split(sep)
        if len(values) != len(fields):
            raise ValueError(f"expected {len(fields)} fields {list(fields)}, got "
                             f"{len(values)} in {line!r}")  # fmt: skip
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def join_columns(rows: Sequence[Mapping[str, str]], fields: Sequence[str], *, sep: str = "|",
                 trailing_separator: bool = False) -> str:  # fmt: skip
    """The inverse of :func:`split_columns`: one line per row, ``fields`` in order. A field
    a row lacks raises KeyError naming it (captures must not silently lose columns)."""
    lines = []
    for row in rows:
        missing = [f for f in fields if f not in row]
        if missing:
            raise KeyError(f"row has no field(s) {missing}; it has {sorted(row)}")
        line = sep.join(row[f] for f in fields)
        lines.append(line + sep if trailing_separator else line)
    return "".join(line + "\n" for line in lines)


def reorder_columns(
    text: str,
    have: Sequence[str],
    want: Sequence[str],
    *,
    sep: str = "|",
    trailing_separator: bool = False,
    edit: Callable[[dict[str, str]], object] | None = None,
) -> str:
    """Captured rows in field order ``have`` as lines in order ``want`` (no trailing
    separator: the shape of hpcbridge's own squeue/sacct queries). ``edit`` may change each
    row (a dict) first, e.g. give a lab job the ``hpcb:<token>`` comment of an hpcbridge job.
    Extra captured fields are dropped; a wanted field the capture lacks raises KeyError."""
    rows = split_columns(text, have, sep=sep, trailing_separator=trailing_separator)
    if edit is not None:
        for row in rows:
            edit(row)
    return join_columns(rows, want, sep=sep)


if TYPE_CHECKING:
    # mypy proves the fakes satisfy the protocols: a missing or mistyped member fails here.
    from .backends.base import Backend
    from .transport.base import Transport

    _backend_check: Backend = FakeBackend()
    _transport_check: Transport = ReplayTransport()
