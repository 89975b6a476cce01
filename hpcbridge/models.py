"""Plain, frozen data passed between layers. No I/O here."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .lifecycle import RetryPolicy, TaskState
from .task_rows import Timings

# What backends and transports report (a job's state, a command's result, a file listed)
# lives in ``records`` and is importable from here as before: bound on first use (PEP 562),
# so a command that only reads the registry never builds those classes.
if TYPE_CHECKING:
    from .records import CommandResult as CommandResult
    from .records import FileInfo as FileInfo
    from .records import JobInfo as JobInfo

_RECORDS = ("CommandResult", "FileInfo", "JobInfo")


def __getattr__(name: str) -> Any:
    if name in _RECORDS:
        from . import records

        value = getattr(records, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


_last_id: list[int] = [0, 0]  # (ms, random) of the last id made in this process


def new_task_id(now: float | None = None) -> str:
    """A 13-character id, sortable by creation time: 9 base32 digits of milliseconds since the
    epoch (good until year 2527) and 4 random ones (20 bits).

    Within one process ids are strictly increasing (a batch made in the same millisecond
    counts the random part up instead of drawing again, as ULID's monotonic mode does), so a
    ``submit_many`` of thousands never collides with itself; across processes the registry's
    primary key catches the rare collision and the caller draws again."""
    import secrets  # here, not at the top: ~10% of a read-only CLI command's start-up

    ms = int((time.time() if now is None else now) * 1000)
    last_ms, last_rand = _last_id
    if ms <= last_ms:
        ms, rand = last_ms, last_rand + 1
        if rand >= 1 << 20:
            ms, rand = last_ms + 1, secrets.randbits(19)
    else:
        rand = secrets.randbits(19)  # headroom for counting up within the millisecond
    _last_id[:] = [ms, rand]
    digits = []
    for _ in range(9):
        digits.append(_CROCKFORD[ms & 31])
        ms >>= 5
    tail = []
    for _ in range(4):
        tail.append(_CROCKFORD[rand & 31])
        rand >>= 5
    return "".join(reversed(digits)) + "".join(reversed(tail))


def new_token() -> str:
    """Write-ahead submission token; rides in the Slurm job's comment to find it again."""
    import secrets

    return secrets.token_hex(8)


def _clean_str_map(data: Mapping[Any, Any] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(f"{what} must map str to str, got {key!r}: {value!r}")
        if "\x00" in key or "\x00" in value:
            raise UsageError(f"{what} may not contain NUL bytes ({key!r})")
        out[key] = value
    return out


@dataclass(frozen=True)
class Resources:
    """What the job asks the scheduler for. None means the cluster default."""

    time: str | None = None  # Slurm time syntax, e.g. "10", "01:00:00", "1-00:00:00"
    cpus: int | None = None
    mem: str | None = None  # e.g. "500M", "2G"
    gres: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_options: tuple[str, ...] = ()  # extra "--opt=value" items, passed as given
    signal: str | None = None  # e.g. "B:USR1@60": signal before the time limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "cpus": self.cpus,
            "mem": self.mem,
            "gres": self.gres,
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "sbatch_options": list(self.sbatch_options),
            "signal": self.signal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resources:
        d = dict(data)
        d["sbatch_options"] = tuple(d.get("sbatch_options") or ())
        return cls(**d)


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to run a task, fixed at submission."""

    command: tuple[str, ...] = ()  # argv; run without a shell
    script: str | None = None  # or a shell script body (the user asked for a shell)
    name: str = ""
    cluster: str = "local"
    inputs: tuple[str, ...] = ()  # absolute local paths, copied into the work dir
    outputs: tuple[str, ...] = ()  # glob patterns relative to the work dir
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    require_outputs: bool = False  # a success whose outputs matched nothing is a failure
    project: str | None = None  # the project it counts towards (projects list/show/wait/kill)
    array: bool = True  # may share a Slurm job array with tasks asking for the same resources
    max_running: int | None = None  # at most this many of its array run at once (%K)
    after: tuple[str, ...] = ()  # dependencies "TASKID:ok|any|notok": start only once met
    # Events (issue 12): the task's own notification URLs, its stall threshold (seconds) and
    # action (None: the cluster's), and the files it watches (PATH or PATH:REGEX).
    notify: tuple[str, ...] = ()
    stall_after: float | None = None
    on_stall: str | None = None
    watch_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.script):
            raise UsageError("a task needs exactly one of a command (argv list) or a script")
        for arg in self.command:
            if not isinstance(arg, str):
                raise UsageError(f"command arguments must be strings, got {arg!r}")
            if "\x00" in arg:
                raise UsageError("command arguments may not contain NUL bytes")
        if "\x00" in self.name or "\n" in self.name:
            raise UsageError("task names may not contain NUL or newline characters")
        for pattern in self.outputs:
            if os.path.isabs(pattern) or ".." in pattern.replace("\\", "/").split("/"):
                raise UsageError(
                    f"output pattern {pattern!r} must be relative to the work dir, without '..'"
                )
        object.__setattr__(self, "env", _clean_str_map(self.env, "env"))
        for key in self.env:
            if not key or not (key[0].isalpha() or key[0] == "_") or not all(
                c.isalnum() or c == "_" for c in key
            ):
                raise UsageError(f"invalid environment variable name {key!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "script": self.script,
            "name": self.name,
            "cluster": self.cluster,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "env": dict(self.env),
            "resources": self.resources.to_dict(),
            "retry": self.retry.to_dict(),
            "require_outputs": self.require_outputs,
            "project": self.project,
            "array": self.array,
            "max_running": self.max_running,
            "after": list(self.after),
            **({"notify": list(self.notify)} if self.notify else {}),
            **({"stall_after": self.stall_after} if self.stall_after is not None else {}),
            **({"on_stall": self.on_stall} if self.on_stall else {}),
            **({"watch_files": list(self.watch_files)} if self.watch_files else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        return cls(
            command=tuple(data.get("command") or ()),
            script=data.get("script"),
            name=data.get("name", ""),
            cluster=data.get("cluster", "local"),
            inputs=tuple(data.get("inputs") or ()),
            outputs=tuple(data.get("outputs") or ()),
            env=dict(data.get("env") or {}),
            resources=Resources.from_dict(data.get("resources") or {}),
            retry=RetryPolicy.from_dict(data.get("retry") or {}, strict=False),
            require_outputs=bool(data.get("require_outputs", False)),
            project=data.get("project"),
            array=bool(data.get("array", True)),
            max_running=data.get("max_running"),
            after=tuple(data.get("after") or ()),
            notify=tuple(data.get("notify") or ()),
            stall_after=data.get("stall_after"),
            on_stall=data.get("on_stall"),
            watch_files=tuple(data.get("watch_files") or ()),
        )


@dataclass(frozen=True)
class Attempt:
    """One scheduler job for a task. A Slurm requeue (same job id) stays in one attempt."""

    task_id: str
    number: int  # 1-based
    token: str
    state: TaskState
    job_id: str | None = None
    created_at: float | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    last_seen_at: float | None = None  # last time the scheduler (or markers) showed the job
    exit_code: int | None = None
    signal: int | None = None
    nodes: str | None = None
    partition: str | None = None
    reason: str | None = None  # pending reason while queued, end reason when over
    restarts: int = 0
    backend_ref: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, Any] | None = None  # resources used, from accounting, once it ended
    queue: Mapping[str, Any] | None = None  # why it waits: reason, explanation, position, start
    stderr_tail: str | None = None  # last lines of its logs, kept when it ended badly
    stdout_tail: str | None = None
    eligible_at: float | None = None  # when the scheduler would have let it start
    watch: Mapping[str, Any] | None = None  # stall readings, walltime warned, files seen


@dataclass(frozen=True)
class Task(Timings):
    """A task record as stored in the registry (a snapshot; re-read for fresh state)."""

    id: str
    spec: TaskSpec
    state: TaskState
    metadata: Mapping[str, str]
    created_at: float
    updated_at: float
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    fetched_at: float | None = None
    attempt_count: int = 0
    exit_code: int | None = None
    reason: str | None = None
    next_attempt_at: float | None = None
    work_dir: str | None = None  # where the job runs (remote for a remote cluster)
    output_dir: str | None = None  # local directory outputs were fetched to
    excluded_nodes: tuple[str, ...] = ()
    cancel_requested: bool = False
    lease: str | None = None  # the lease of the process working on it (see leases.py)
    lease_lost_at: float | None = None  # when a sync first found that process gone

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cluster(self) -> str:
        return self.spec.cluster

    @property
    def project(self) -> str | None:
        """The project the task belongs to (None: none), fixed at submission."""
        return self.spec.project


@dataclass(frozen=True)
class Event:
    """One entry of a task's history: a state change, a submission, a metadata edit or a note."""

    id: int
    task_id: str
    at: float
    kind: str  # "state", "submit", "metadata", "info", "warning", "error"
    source: str  # "api", "cli", "sync", "daemon", "backend"
    from_state: str | None
    to_state: str | None
    attempt: int | None
    detail: str
