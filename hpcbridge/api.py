"""The public Python API: ``submit``, ``submit_many``, ``Task(id)``, ``list_tasks``, ``sync``.

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

    def __repr__(self) -> str:
        return f"Task({self.id!r})"

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
    sbatch_options, signal, env, max_attempts, retry_on, requeue, exclude_failed_nodes,
    require_outputs); an unknown or mistyped one raises UsageError."""
    spec = dict(command=command, script=script, cluster=cluster, name=name,
                inputs=inputs, outputs=outputs, metadata=metadata, **options)  # fmt: skip
    svc = _service()
    return Task(svc.submit(**spec).id)


def submit_many(specs: Iterable[Mapping[str, Any]]) -> list[Task]:
    """Submit many tasks in one go (one submission round trip per cluster). Each spec takes
    the keywords of ``submit``. All specs are validated before anything is registered."""
    svc = _service()
    return [Task(t.id) for t in svc.submit_many(list(specs))]


def list_tasks(state: str | TaskState | Iterable[str | TaskState] | None = None, *,
               cluster: str | None = None, limit: int | None = None) -> list[Task]:  # fmt: skip
    """Tasks, newest first, optionally filtered by state(s) and cluster."""
    svc = _service()
    states = None
    if state is not None:
        items = [state] if isinstance(state, (str, TaskState)) else list(state)
        try:
            states = [TaskState(s) for s in items]
        except ValueError as exc:
            raise UsageError(f"unknown task state: {exc}",
                             hint=f"states: {', '.join(s.value for s in TaskState)}") from None  # fmt: skip
    return [Task(t.id) for t in svc.list_tasks(states=states, cluster=cluster, limit=limit)]


def wait_all(tasks: Iterable[Task | str], timeout: float | None = None) -> list[TaskState]:
    """Wait for several tasks at once (one sync per cluster per round, not per task)."""
    svc = _service()
    ids = [t.id if isinstance(t, Task) else t for t in tasks]
    return [t.state for t in svc.wait(ids, timeout=timeout)]


def sync(cluster: str | None = None) -> list[SyncReport]:
    """Run one sync cycle (all clusters with active tasks, or one); one report per cluster."""
    return _service().sync([cluster] if cluster else None)
