"""The public Python API: ``submit``, ``submit_many``, ``sweep``, ``Task(id)``,
``Project(name)``, ``list_tasks``, ``sync``.

Every call reads the registry afresh, so ``Task(id)`` in a new process (or tomorrow) sees the
same state, metadata and history as the process that submitted it. Config and registry come
from ``$HPCBRIDGE_CONFIG`` / ``$HPCBRIDGE_DB`` (or their defaults) unless ``configure`` was
called.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from . import projects as _projects
from .cycle import SyncReport
from .errors import UsageError
from .lifecycle import TaskState
from .models import Attempt, Event
from .models import Task as TaskRecord
from .service import Service

_lock = threading.Lock()
_explicit: dict[str, str | None] = {}
# One Service per thread and (config, registry): an SQLite connection belongs to the thread
# that opened it, and a Task handle may be used from any thread.
_local = threading.local()


def configure(*, config: str | os.PathLike[str] | None = None,
              db: str | os.PathLike[str] | None = None) -> None:  # fmt: skip
    """Use this config file / registry for the API calls of this process (every thread)."""
    with _lock:
        _explicit["config"] = str(config) if config else None
        _explicit["db"] = str(db) if db else None


def _service() -> Service:
    with _lock:
        key = (
            _explicit.get("config") or os.environ.get("HPCBRIDGE_CONFIG"),
            _explicit.get("db") or os.environ.get("HPCBRIDGE_DB"),
        )
    services: dict[tuple[str | None, str | None], Service] = _local.__dict__.setdefault("services", {})
    svc = services.get(key)
    if svc is None:
        svc = services[key] = Service.open(key[0], key[1], source="api")
    return svc


class _Metadata(MutableMapping[str, str]):
    """Live view of a task's metadata: reads hit the registry, writes are atomic merges."""

    def __init__(self, task: Task) -> None:
        self._task = task

    def _data(self) -> Mapping[str, str]:
        return self._task.record().metadata

    def __getitem__(self, key: str) -> str:
        return self._data()[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._task._svc.set_metadata(self._task.id, {key: value})

    def __delitem__(self, key: str) -> None:
        if key not in self._data():
            raise KeyError(key)
        self._task._svc.set_metadata(self._task.id, {key: None})

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._data()))

    def __len__(self) -> int:
        return len(self._data())

    def update(self, *args: Any, **kwargs: str) -> None:
        """Set several keys in one transaction."""
        self._task._svc.set_metadata(self._task.id, dict(*args, **kwargs))

    def __repr__(self) -> str:
        return repr(dict(self._data()))


class Task:
    """A handle on one task by id (a unique prefix is accepted). Cheap; holds no state."""

    def __init__(self, task_id: str, *, service: Service | None = None) -> None:
        self._own = service
        self.id = self._svc.resolve(task_id)

    @property
    def _svc(self) -> Service:
        # The calling thread's service unless one was given: the handle works from any thread.
        return self._own if self._own is not None else _service()

    @classmethod
    def _known(cls, task_id: str) -> Task:
        """A handle on an id just read from the registry (no look-up to resolve it)."""
        task = cls.__new__(cls)
        task._own = None
        task.id = task_id
        return task

    def __repr__(self) -> str:
        return f"Task({self.id!r})"

    def _repr_html_(self) -> str:
        # Jupyter's rich display: a compact card (state, timings, usage, metadata, failure),
        # every value escaped.
        from .report_html import task_html

        return task_html(self.info())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> TaskRecord:
        """A fresh snapshot of the stored task."""
        return self._svc.registry.get_task(self.id)

    @property
    def status(self) -> TaskState:
        """The current state, read from the registry (call ``wait`` or ``sync`` to refresh it
        from the scheduler)."""
        return self.record().state

    @property
    def name(self) -> str:
        """The name given at submission ("" when none)."""
        return self.record().name

    @property
    def metadata(self) -> _Metadata:
        """Free-form ``str -> str`` metadata as a live mapping: ``task.metadata["k"] = "v"``
        writes to the registry at once; assigning a dict replaces all of it."""
        return _Metadata(self)

    @metadata.setter
    def metadata(self, values: Mapping[str, str]) -> None:
        current = self.record().metadata
        updates: dict[str, str | None] = {k: None for k in current if k not in values}
        updates.update(values)
        self._svc.set_metadata(self.id, updates)

    def info(self) -> dict[str, Any]:
        """Everything known: state, spec, timings, metadata, attempts and events."""
        return self._svc.info(self.id)

    def attempts(self) -> list[Attempt]:
        """Every attempt (one scheduler job each: job id, nodes, exit code, timings), oldest first."""
        return self._svc.registry.attempts(self.id)

    def events(self) -> list[Event]:
        """The task's history (state changes, metadata edits, warnings), oldest first."""
        return self._svc.registry.events(self.id)

    def wait(self, timeout: float | None = None) -> TaskState:
        """Block until the task ends; return its final state. Raises WaitTimeout (a
        TimeoutError) if it does not end within ``timeout`` seconds."""
        return self._svc.wait([self.id], timeout=timeout)[0].state

    def kill(self) -> TaskState:
        """Cancel the task; returns the state right after asking (``cancelled`` once the
        scheduler confirms, which ``wait`` or ``sync`` will see)."""
        return self._svc.kill([self.id])[0].task.state

    def logs(self, stream: str = "stdout", tail: int | None = None) -> str:
        """The latest attempt's ``"stdout"`` or ``"stderr"`` text (only the last ``tail`` lines
        when given), read where the job runs."""
        return self._svc.logs(self.id, stream=stream, tail=tail)

    def download_outputs(self, dest: str | os.PathLike[str] | None = None) -> list[Path]:
        """Copy the declared outputs into ``dest`` (default ``./<task id>``); return the files."""
        return self._svc.download(self.id, dest)


def get_task(task_id: str) -> Task:
    """The task with this id (or unique id prefix); raises TaskNotFound otherwise."""
    return Task(task_id)


def submit(command: Sequence[str] | None = None, *, script: str | None = None,
           cluster: str | None = None, name: str | None = None,
           inputs: Sequence[str | os.PathLike[str]] = (), outputs: Sequence[str] = (),
           metadata: Mapping[str, str] | None = None, **options: Any) -> Task:  # fmt: skip
    """Submit one task and return at once. ``command`` is an argument list, run without a
    shell; pass ``script="..."`` instead to run a bash script. ``options`` are the other
    fields of ``SubmitOptions`` (time, cpus, mem, gres, partition, account, qos,
    sbatch_options, signal, env, project, max_attempts, retry_on, requeue,
    exclude_failed_nodes, require_outputs); an unknown or mistyped one raises UsageError."""
    spec = dict(command=command, script=script, cluster=cluster, name=name,
                inputs=inputs, outputs=outputs, metadata=metadata, **options)  # fmt: skip
    svc = _service()
    return Task(svc.submit(**spec).id)


def submit_many(specs: Iterable[Mapping[str, Any]]) -> list[Task]:
    """Submit many tasks in one go (one submission round trip per cluster). Each spec takes
    the keywords of ``submit``. All specs are validated before anything is registered."""
    svc = _service()
    return [Task(t.id) for t in svc.submit_many(list(specs))]


def _states(state: str | TaskState | Iterable[str | TaskState] | None) -> list[TaskState] | None:
    if state is None:
        return None
    items = [state] if isinstance(state, (str, TaskState)) else list(state)
    try:
        return [TaskState(s) for s in items]
    except ValueError as exc:
        raise UsageError(f"unknown task state: {exc}",
                         hint=f"states: {', '.join(s.value for s in TaskState)}") from None  # fmt: skip


def list_tasks(state: str | TaskState | Iterable[str | TaskState] | None = None, *,
               cluster: str | None = None, limit: int | None = None, project: str | None = None,
               metadata: Mapping[str, str | None] | None = None) -> list[Task]:  # fmt: skip
    """Tasks, newest first, optionally filtered by state(s), cluster, project and metadata:
    ``metadata={"alpha": "0.1", "nx": None}`` keeps the tasks whose ``alpha`` is exactly
    ``"0.1"`` and that have an ``nx`` key (an indexed look-up, not a scan)."""
    ids = _projects.find_task_ids(_service(), states=_states(state), cluster=cluster, limit=limit,
                                  project=project, metadata=metadata)  # fmt: skip
    return [Task._known(i) for i in ids]


def to_records(tasks: Iterable[Task | str]) -> list[dict[str, Any]]:
    """The tasks as flat dicts, one per task, in the order given: what ``tasks list`` shows
    (id, name, state, cluster, project, attempts, timestamps, queue/run seconds, exit code,
    reason), the current attempt's ``cpu_efficiency``, ``mem_efficiency``, ``core_hours``,
    and one column per metadata key (``None`` where a task lacks it; ``meta.<key>`` for a
    key that clashes with a fixed column). ``pandas.DataFrame(to_records(...))`` takes
    them as is."""
    from .report_data import task_records

    svc = _service()
    ids = [t.id if isinstance(t, Task) else svc.resolve(t) for t in tasks]
    return task_records([svc.registry.get_task(i) for i in ids], svc.usage_of(ids))


def sweep(command_template: Sequence[str], *, grid: Mapping[str, Iterable[Any]] | None = None,
          zip: Mapping[str, Iterable[Any]] | None = None,
          params: Iterable[Mapping[str, Any]] | str | os.PathLike[str] | None = None,
          **submit_options: Any) -> list[Task]:  # fmt: skip
    """Submit one task per parameter set and return them, in order (one submission round
    trip per cluster). ``command_template`` is an argument list whose ``{name}``
    placeholders are filled per task, inside each argument, never through a shell (``{{``
    and ``}}`` are literal braces). The sets: ``grid={"alpha": [0.1, 0.2], "nx": [32, 64]}``
    (every combination), ``zip={...}`` (equal-length lists, paired), ``params=[{...}, ...]``
    or the path of a JSON-lines file of sets; given together they combine as a product.
    Each task's parameters become its metadata (``list_tasks(metadata=...)`` finds them);
    ``submit_options`` are ``submit``'s keywords, shared by every task (e.g. ``project=``)."""
    if isinstance(params, str | os.PathLike):
        from .sweep import parse_params_lines

        path = Path(params)
        try:
            params = parse_params_lines(path.read_text(encoding="utf-8"), where=str(path))
        except OSError as exc:
            raise UsageError(f"cannot read parameter file {path}: {exc.strerror}") from None
    tasks = _projects.sweep(_service(), list(command_template), grid=grid, zip=zip, params=params,
                            **submit_options)  # fmt: skip
    return [Task(t.id) for t in tasks]


class Project:
    """A handle on the tasks submitted with ``project=name``: counts, core-hours, wait,
    kill, download. Cheap; holds no state (a project exists while tasks carry its name)."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError(f"a project name must be a non-empty string, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"Project({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Project) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("project", self.name))

    @staticmethod
    def all() -> list[Project]:
        """Every project some task belongs to, by name."""
        return [Project(s.name) for s in _projects.summaries(_service())]

    def tasks(self, state: str | TaskState | Iterable[str | TaskState] | None = None) -> list[Task]:
        """The project's tasks, oldest first (a sweep's order), optionally in these states."""
        ids = _projects.find_task_ids(_service(), project=self.name, states=_states(state), newest_first=False)
        return [Task._known(i) for i in ids]

    def to_records(self) -> list[dict[str, Any]]:
        """The project's tasks as flat dicts, oldest first (``hpcbridge.to_records``)."""
        return to_records(self.tasks())

    def counts(self) -> dict[str, int]:
        """Tasks by state, e.g. ``{"running": 2, "succeeded": 10}`` (empty: no tasks)."""
        return _service().registry.project_counts(self.name).get(self.name, {})

    def summary(self) -> _projects.ProjectSummary:
        """Counts, core-hours used and committed, and the estimated cost, in one record."""
        return _projects.summary(_service(), self.name)

    def core_hours(self) -> dict[str, float]:
        """``{"used": ..., "committed": ...}``: core-hours accounting recorded for ended
        attempts, and CPUs x time limit of the tasks queued or running now."""
        s = self.summary()
        return {"used": s.core_hours_used, "committed": s.core_hours_committed}

    def submit(self, command: Sequence[str] | None = None, **options: Any) -> Task:
        """``hpcbridge.submit`` with ``project`` set to this project."""
        return submit(command, **{**options, "project": self.name})

    def sweep(self, command_template: Sequence[str], **options: Any) -> list[Task]:
        """``hpcbridge.sweep`` with ``project`` set to this project."""
        return sweep(command_template, **{**options, "project": self.name})

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        """Block until every task of the project has ended; return the counts by final
        state. Raises WaitTimeout (a TimeoutError) if they do not within ``timeout`` s."""
        done = _projects.wait(_service(), self.name, timeout=timeout)
        out: dict[str, int] = {}
        for t in done:
            out[t.state.value] = out.get(t.state.value, 0) + 1
        return out

    def kill(self) -> int:
        """Cancel every unfinished task of the project; return how many were asked to stop
        (they become ``cancelled`` once the scheduler confirms)."""
        return sum(r.recorded for r in _projects.kill(_service(), self.name))

    def download(self, dest: str | os.PathLike[str] | None = None) -> dict[str, list[Path]]:
        """Copy every succeeded task's outputs into ``dest/<task id>/`` (default
        ``./<project>``) with an index ``dest/tasks.json`` (ids, states, parameters, files);
        return the files by task id."""
        return {d.task.id: d.files for d in _projects.download(_service(), self.name, dest)}


def wait_all(tasks: Iterable[Task | str], timeout: float | None = None) -> list[TaskState]:
    """Wait for several tasks at once (one sync per cluster per round, not per task)."""
    svc = _service()
    ids = [t.id if isinstance(t, Task) else t for t in tasks]
    return [t.state for t in svc.wait(ids, timeout=timeout)]


def sync(cluster: str | None = None) -> list[SyncReport]:
    """Run one sync cycle (all clusters with active tasks, or one); one report per cluster."""
    return _service().sync([cluster] if cluster else None)
