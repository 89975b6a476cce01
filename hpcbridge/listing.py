"""The reads a listing makes, over a ``Registry`` alone: tasks filtered (states, cluster,
project, metadata) and the recorded usage of their current attempts.

``tasks list`` runs on these with just the config and the registry open (``Runtime``),
never importing the service, the sync cycle or the slurm package: a command that only
reads starts in about the time its dependencies take to import (benchmarks/bench_startup.py).
``projects.find_tasks`` and ``Service.usage_of`` are these same calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .lifecycle import TaskState
    from .models import Task
    from .registry import Registry


def check_filter(metadata: Mapping[str, str | None] | None) -> None:
    """UsageError unless ``metadata`` maps non-empty str keys to str (or None: has the key)."""
    if metadata is not None and (not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and k and (v is None or isinstance(v, str)) for k, v in metadata.items())):  # fmt: skip
        raise UsageError(f"a metadata filter maps keys to str (or None: has the key), got {metadata!r}")


def find_tasks(registry: Registry, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
               limit: int | None = None, project: str | None = None,
               metadata: Mapping[str, str | None] | None = None) -> list[Task]:  # fmt: skip
    """Tasks, newest first, filtered by state(s), cluster, project and metadata (a key to its
    exact value, or to None for "has the key"; every pair must hold; indexed look-ups)."""
    check_filter(metadata)
    return registry.list_tasks(states=states, cluster=cluster, limit=limit, project=project, metadata=metadata)


def usage_of(registry: Registry, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The recorded usage of each task's current attempt (one query), by task id."""
    return {tid: att.usage for tid, att in registry.current_attempts(list(task_ids)).items() if att.usage}
