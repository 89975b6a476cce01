"""Gathering a report: the tasks of a project (or given ids, or all), their attempts and
events from the registry, and each cluster's efficiency thresholds, handed to the pure
``report_data.build_report``. No scheduler command runs: the registry, which the sync keeps
true, has everything."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import projects
from .errors import UsageError
from .report_data import build_report

if TYPE_CHECKING:
    from .models import Task
    from .service import Service
    from .slurm.usage import Thresholds


def thresholds(svc: Service) -> dict[str, Thresholds]:
    """Each configured cluster's efficiency thresholds (its ``warn_*`` settings)."""
    from .slurm.usage import Thresholds

    return {name: Thresholds(min_cpu_efficiency=c.warn_cpu_efficiency_below,
                             min_mem_efficiency=c.warn_memory_efficiency_below,
                             max_mem_efficiency=c.warn_memory_peak_above)
            for name, c in svc.config.clusters.items()}  # fmt: skip


def select(svc: Service, *, project: str | None = None, ids: Sequence[str] = ()) -> list[Task]:
    """The tasks a report covers, oldest first: the given ids (prefixes, ``last``), else the
    project's, else every task."""
    if project and ids:
        raise UsageError("give a project or task ids, not both")
    if ids:
        seen: dict[str, Task] = {}
        for i in ids:
            t = svc.get(i)
            seen.setdefault(t.id, t)
        return sorted(seen.values(), key=lambda t: (t.created_at, t.id))
    if project:
        return projects.tasks(svc, project)
    return svc.registry.list_tasks(newest_first=False)


def collect(svc: Service, *, project: str | None = None, ids: Sequence[str] = (),
            lines: int = 10, now: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The report's data (``report_data.build_report``) for a project, some tasks, or all."""
    tasks = select(svc, project=project, ids=ids)
    if not tasks:
        raise UsageError("no tasks to report on", hint="submit some with `hpcbridge submit`")
    title = f"hpcbridge report: {project}" if project else "hpcbridge report"
    scope = {"project": project, "ids": [t.id for t in tasks] if ids else None}
    return build_report(tasks, {t.id: svc.registry.attempts(t.id) for t in tasks},
                        {t.id: svc.registry.events(t.id) for t in tasks},
                        now=time.time() if now is None else now, title=title, scope=scope,
                        thresholds=thresholds(svc), lines=lines)  # fmt: skip
