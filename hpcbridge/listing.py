"""The reads a listing makes: tasks filtered (states, cluster, project, metadata) and the
recorded usage of their current attempts, over a ``Registry`` or, for ``tasks list``, the
read-only ``RegistryReader`` (``open_source``).

``tasks list`` runs on these with neither the config nor the model's dataclasses
imported: a registry file of the current schema is read into ``TaskRow``s
(``registry_read``); any other file goes through the full ``Registry`` (which migrates an
older one) and gives ``models.Task``s, which the formatters take alike (``ListedTask``).
``projects.find_tasks`` and ``Service.usage_of`` are these same calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .models import Task
    from .registry import Registry
    from .registry_read import RegistryReader
    from .states import TaskState
    from .task_rows import ListedTask


def check_filter(metadata: Mapping[str, str | None] | None) -> None:
    """UsageError unless ``metadata`` maps non-empty str keys to str (or None: has the key)."""
    if metadata is not None and (not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and k and (v is None or isinstance(v, str)) for k, v in metadata.items())):  # fmt: skip
        raise UsageError(f"a metadata filter maps keys to str (or None: has the key), got {metadata!r}")


def open_source(path: str) -> RegistryReader | Registry:
    """What a listing of the registry file at ``path`` reads: the cheap ``RegistryReader``
    when the file has the current schema (or does not exist: nothing is created), else the
    full ``Registry`` (it migrates an older file, or raises RegistryError with a hint)."""
    from .registry_read import RegistryReader

    reader = RegistryReader.open(path)
    if reader is not None:
        return reader
    from .registry import Registry

    return Registry(path)


def find_tasks(registry: Registry, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
               limit: int | None = None, project: str | None = None,
               metadata: Mapping[str, str | None] | None = None) -> list[Task]:  # fmt: skip
    """Tasks, newest first, filtered by state(s), cluster, project and metadata (a key to its
    exact value, or to None for "has the key"; every pair must hold; indexed look-ups)."""
    check_filter(metadata)
    return registry.list_tasks(states=states, cluster=cluster, limit=limit, project=project, metadata=metadata)


def find_listed(source: RegistryReader | Registry, *, states: Iterable[TaskState] | None = None,
                cluster: str | None = None, limit: int | None = None, project: str | None = None,
                metadata: Mapping[str, str | None] | None = None) -> Sequence[ListedTask]:  # fmt: skip
    """``find_tasks`` over either source (``open_source``): what a listing shows."""
    check_filter(metadata)
    return source.list_tasks(states=states, cluster=cluster, limit=limit, project=project, metadata=metadata)


def usage_of(registry: RegistryReader | Registry, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The recorded usage of each task's current attempt (one query), by task id."""
    return registry.current_usage(list(task_ids))
