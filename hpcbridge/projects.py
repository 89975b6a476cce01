"""Use cases over groups of tasks: projects (counts, core-hours, cost, wait, kill, download)
and sweeps (one command template over many parameter sets).

A *project* is a name on tasks (``--project``, or the config's ``default_project``), fixed
at submission and stored in an indexed column: it has no record of its own, it exists while
tasks carry it. Everything here works through ``Service`` (one layer below), so a project's
wait drives the same sync cycles and its kill the same cancels as a task's.

Core-hours *used* are what accounting recorded for ended attempts (``usage.core_hours``:
elapsed x allocated CPUs, from sacct; the local backend records none); *committed* are
what the tasks now queued or running asked for (CPUs x time limit, with the cluster's
defaults). A cluster's ``price_per_core_hour`` (in its ``currency``) turns both into an
estimated cost.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import listing
from .errors import HpcBridgeError, UsageError
from .lifecycle import TaskState
from .models import Task

if TYPE_CHECKING:  # the service is passed in; options and sweeps are imported when used
    from .options import SubmitOptions
    from .service import KillResult, Service

S = TaskState


def time_limit_seconds(text: str | None) -> float | None:
    """A Slurm time limit in seconds (``slurm.usage.time_limit_seconds``, imported when used)."""
    from .slurm.usage import time_limit_seconds as parse

    return parse(text)

# What "queued and running" means for committed core-hours: the job is (or may be) at the
# scheduler and not over.
COMMITTED_STATES = frozenset({S.SUBMITTING, S.QUEUED, S.HELD, S.RUNNING, S.SUSPENDED})

@dataclass(frozen=True)
class ProjectSummary:
    """One project in numbers (what ``projects list`` shows per line)."""

    name: str
    counts: Mapping[str, int]  # state -> number of tasks
    tasks: int
    active: int  # tasks not finished
    core_hours_used: float  # from the recorded usage of ended attempts
    attempts_accounted: int  # attempts whose usage is recorded
    attempts_unaccounted: int  # ended with a job, no usage recorded (yet: sacct lags)
    core_hours_committed: float  # CPUs x time limit of the tasks queued or running now
    committed_unknown: int  # queued/running tasks without a known time limit
    cost_used: Mapping[str, float] = field(default_factory=dict)  # currency -> estimate
    cost_committed: Mapping[str, float] = field(default_factory=dict)
    unpriced: bool = False  # some of its core-hours are on a cluster without a price

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the ``--json`` of ``projects list/show``)."""
        return asdict(self)


def _known_projects(svc: Service) -> list[str]:
    return sorted(svc.registry.project_counts())


def _check(svc: Service, name: str) -> str:
    if not isinstance(name, str) or not name:
        raise UsageError(f"a project name must be a non-empty string, got {name!r}")
    if not svc.registry.project_counts(name):
        known = _known_projects(svc)
        raise UsageError(f"no task belongs to project {name!r}",
                         hint=f"projects: {', '.join(known)}" if known else
                         "submit with --project NAME (or set default_project in the config)")  # fmt: skip
    return name


def summaries(svc: Service, project: str | None = None) -> list[ProjectSummary]:
    """Every project (or one), by name: counts by state, core-hours used and committed, and
    the estimated cost where the clusters have a price."""
    counts = svc.registry.project_counts(project)
    used: dict[str, list[tuple[str, float, int, int]]] = {}
    for name, cluster, hours, with_usage, without in svc.registry.project_usage(project):
        used.setdefault(name, []).append((cluster, hours, with_usage, without))
    asked: dict[str, list[tuple[str, Any, Any, int]]] = {}
    for name, cluster, cpus, limit, n in svc.registry.project_requests(COMMITTED_STATES, project):
        asked.setdefault(name, []).append((cluster, cpus, limit, n))
    out = []
    for name in sorted(counts):
        committed: dict[str, float] = {}
        unknown = 0
        for cluster, cpus, limit, n in asked.get(name, []):
            each = request_core_hours(svc, cluster, cpus, limit)
            if each is None:
                unknown += n
            else:
                committed[cluster] = committed.get(cluster, 0.0) + n * each
        rows = used.get(name, [])
        cost_used, unpriced_u = _cost(svc, {c: h for c, h, _, _ in rows})
        cost_committed, unpriced_c = _cost(svc, committed)
        by_state = counts[name]
        out.append(ProjectSummary(
            name=name, counts=dict(sorted(by_state.items())), tasks=sum(by_state.values()),
            active=sum(n for s, n in by_state.items() if not TaskState(s).terminal),
            core_hours_used=sum(h for _, h, _, _ in rows),
            attempts_accounted=sum(w for _, _, w, _ in rows),
            attempts_unaccounted=sum(m for c, _, _, m in rows if not _local(svc, c)),
            core_hours_committed=sum(committed.values()), committed_unknown=unknown,
            cost_used=cost_used, cost_committed=cost_committed, unpriced=unpriced_u or unpriced_c,
        ))  # fmt: skip
    return out


def summary(svc: Service, name: str) -> ProjectSummary:
    """One project (UsageError when no task carries the name)."""
    return summaries(svc, _check(svc, name))[0]


def _local(svc: Service, cluster: str) -> bool:
    """Whether the cluster's backend keeps no accounting (its attempts never get usage)."""
    cfg = svc.config.clusters.get(cluster)
    return cfg is not None and cfg.backend == "local"


def request_core_hours(svc: Service, cluster: str, cpus: int | None, time: str | None) -> float | None:
    """CPUs x time limit of one request on ``cluster`` (its defaults filling in), in hours;
    None when no time limit is known (the partition's default applies)."""
    cfg = svc.config.clusters.get(cluster)
    defaults = cfg.defaults if cfg is not None else None
    n = cpus or (defaults.cpus if defaults else None) or 1
    limit = time_limit_seconds(time or (defaults.time if defaults else None))
    return None if limit is None else n * limit / 3600.0


def requested_core_hours(svc: Service, task: Task) -> float | None:
    """CPUs x time limit of the task's request, in hours (see ``request_core_hours``)."""
    res = task.spec.resources
    return request_core_hours(svc, task.cluster, res.cpus, res.time)


def _cost(svc: Service, hours_by_cluster: Mapping[str, float]) -> tuple[dict[str, float], bool]:
    cost: dict[str, float] = {}
    unpriced = False
    for cluster, hours in hours_by_cluster.items():
        cfg = svc.config.clusters.get(cluster)
        if cfg is None or cfg.price_per_core_hour is None:
            unpriced = unpriced or hours > 0
            continue
        cost[cfg.currency] = cost.get(cfg.currency, 0.0) + hours * cfg.price_per_core_hour
    return cost, unpriced


def find_tasks(svc: Service, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
               limit: int | None = None, project: str | None = None,
               metadata: Mapping[str, str | None] | None = None) -> list[Task]:  # fmt: skip
    """Tasks, newest first, filtered by state(s), cluster, project and metadata (a key to its
    exact value, or to None for "has the key"; every pair must hold; indexed look-ups)."""
    return listing.find_tasks(svc.registry, states=states, cluster=cluster, limit=limit, project=project,
                              metadata=metadata)  # fmt: skip


def find_task_ids(svc: Service, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                  limit: int | None = None, project: str | None = None,
                  metadata: Mapping[str, str | None] | None = None, newest_first: bool = True) -> list[str]:  # fmt: skip
    """The ids ``find_tasks`` would return (no records built)."""
    listing.check_filter(metadata)
    return svc.registry.task_ids(states=states, cluster=cluster, limit=limit, project=project,
                                 metadata=metadata, newest_first=newest_first)  # fmt: skip


def tasks(svc: Service, name: str, *, states: Iterable[TaskState] | None = None,
          limit: int | None = None, newest_first: bool = False) -> list[Task]:  # fmt: skip
    """The project's tasks, oldest first (sweep order) unless ``newest_first``."""
    return svc.registry.list_tasks(project=_check(svc, name), states=states, limit=limit,
                                   newest_first=newest_first)  # fmt: skip


def parameter_names(task_list: Sequence[Task]) -> list[str]:
    """The metadata keys of these tasks, in order of first appearance (a sweep's parameters
    come in the order they were given): the columns of ``projects show``."""
    seen: dict[str, None] = {}
    for t in task_list:
        for key in t.metadata:
            seen.setdefault(key, None)
    return list(seen)


def wait(svc: Service, name: str, *, timeout: float | None = None,
         on_progress: Callable[[list[Task]], None] | None = None) -> list[Task]:  # fmt: skip
    """Block until every task of the project (as of now) has ended; return them. Raises
    WaitTimeout when ``timeout`` passes first (the tasks keep running)."""
    ids = [t.id for t in tasks(svc, name)]
    return svc.wait(ids, timeout=timeout, on_progress=on_progress)


def kill(svc: Service, name: str) -> list[KillResult]:
    """Cancel every unfinished task of the project (one cancel call per cluster)."""
    active = [t.id for t in tasks(svc, name) if not t.state.terminal]
    return svc.kill(active) if active else []


@dataclass(frozen=True)
class Download:
    """What ``download`` did for one task."""

    task: Task
    files: list[Path]
    skipped: str = ""  # why nothing was copied (not succeeded, or the error)


def download(svc: Service, name: str, dest: str | os.PathLike[str] | None = None) -> list[Download]:
    """Copy the outputs of every succeeded task of the project into ``dest/<task id>/``
    (default ``./<project>``), and write ``dest/tasks.json``: each task's id, name, state,
    metadata (the sweep's parameters) and files, so a study's results can be read back by
    parameter. A task that failed to copy is reported, not raised: the others still come."""
    task_list = tasks(svc, name)
    root = Path(dest) if dest is not None else Path.cwd() / name
    root.mkdir(parents=True, exist_ok=True)
    done: list[Download] = []
    for t in task_list:
        if t.state != S.SUCCEEDED:
            done.append(Download(t, [], skipped=f"state {t.state.value}"))
            continue
        try:
            done.append(Download(t, svc.download(t.id, root / t.id)))
        except (HpcBridgeError, OSError) as exc:
            done.append(Download(t, [], skipped=getattr(exc, "message", None) or str(exc)))
    index = [{"id": d.task.id, "name": d.task.name, "state": d.task.state.value,
              "metadata": dict(d.task.metadata), "skipped": d.skipped or None,
              "files": [str(p.relative_to(root)) for p in d.files]} for d in done]  # fmt: skip
    (root / "tasks.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return done


def sweep_options(command: Sequence[str], *, grid: Mapping[str, Iterable[Any]] | None = None,
                  zip: Mapping[str, Iterable[Any]] | None = None,
                  params: Iterable[Mapping[str, Any]] | None = None,
                  **options: Any) -> list[SubmitOptions]:  # fmt: skip
    """The options of every task of a sweep (nothing is registered): ``command`` is the
    template (``{name}`` placeholders, see ``hpcbridge.sweep``), ``options`` what every task
    shares (SubmitOptions' fields). Each task's parameters join its metadata."""
    from .options import SubmitOptions
    from .sweep import check_template, expand, render

    if options.get("script") is not None:
        raise UsageError("a sweep runs a command template, not a script",
                         hint="put the parameters in the command: -- python3 sim.py --alpha {alpha}")  # fmt: skip
    if "command" in options:
        raise UsageError("give the sweep's command template once, as its first argument")
    sets = expand(grid, zip, params)
    check_template(list(command), sets[0])
    base = SubmitOptions.from_mapping(dict(options, command=list(command)))
    clash = sorted(set(base.metadata) & set(sets[0]))
    if clash:
        raise UsageError(f"metadata key(s) {clash} are also sweep parameters",
                         hint="each task's parameters become its metadata; drop them from --meta")  # fmt: skip
    return [dataclasses.replace(base, command=render(command, values), metadata={**values, **base.metadata})
            for values in sets]


def sweep(svc: Service, command: Sequence[str], *, grid: Mapping[str, Iterable[Any]] | None = None,
          zip: Mapping[str, Iterable[Any]] | None = None,
          params: Iterable[Mapping[str, Any]] | None = None, **options: Any) -> list[Task]:  # fmt: skip
    """Submit one task per parameter set, all in one ``submit_many`` (one submission round
    trip per cluster); see ``sweep_options``."""
    return svc.submit_many(sweep_options(command, grid=grid, zip=zip, params=params, **options))


__all__ = ["COMMITTED_STATES", "Download", "ProjectSummary", "download", "find_task_ids", "find_tasks", "kill", "parameter_names",
           "request_core_hours", "requested_core_hours", "summaries", "summary", "sweep", "sweep_options", "tasks",
           "time_limit_seconds", "wait"]  # fmt: skip
