"""The registry's read queries that filter and aggregate, as SQL text plus parameters.

Pure: no connection here (``registry.py`` runs them). Kept apart so the registry module
stays about transactions and compare-and-set writes.

* ``task_filter``: the ``WHERE`` of ``list_tasks`` (states, cluster, project, metadata).
  Metadata is matched through the ``task_meta`` table (one row per key, indexed on
  ``(key, value, task_id)``), never by parsing each task's JSON.
* ``task_select``: the whole ``SELECT`` of a listing (that filter, newest first, a limit),
  which ``Registry`` and the read-only ``RegistryReader`` of ``tasks list`` both run.
* ``current_attempts``: the current attempt of each of some tasks (its columns chosen).
* ``PROJECT_COUNTS``: tasks per project and state, from the ``(project, state)`` index.
* ``project_requests``: per project, cluster and request (CPUs, time limit), how many tasks
  in the given states asked for it (what committed core-hours are computed from).
* ``project_usage``: per project and cluster, the core-hours recorded in the usage of ended
  attempts, how many ended attempts have it, and how many ended with a job but without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .states import TaskState

S = TaskState

# The attempt states of a job that ended (its usage can be asked from accounting).
ENDED_ATTEMPT_STATES: tuple[str, ...] = tuple(s.value for s in (
    S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.NODE_FAILED, S.PREEMPTED))  # fmt: skip


def marks(n: int) -> str:
    """``?, ?, ?`` for ``n`` parameters."""
    return ", ".join("?" * n)


def task_filter(*, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                project: str | None = None,
                metadata: Mapping[str, str | None] | None = None) -> tuple[str, list[Any]] | None:  # fmt: skip
    """``(" WHERE ...", params)`` for the tasks table (``""`` when nothing filters), or None
    when the filter can match nothing (an empty list of states). ``metadata`` maps a key to
    its exact value, or to None for "has the key"; every pair must hold."""
    where: list[str] = []
    params: list[Any] = []
    if states is not None:
        values = [s.value for s in states]
        if not values:
            return None
        where.append(f"state IN ({marks(len(values))})")
        params.extend(values)
    if cluster is not None:
        where.append("cluster = ?")
        params.append(cluster)
    if project is not None:
        where.append("project = ?")
        params.append(project)
    for key, value in (metadata or {}).items():
        if value is None:
            where.append("id IN (SELECT task_id FROM task_meta WHERE key = ?)")
            params.append(key)
        else:
            where.append("id IN (SELECT task_id FROM task_meta WHERE key = ? AND value = ?)")
            params.extend((key, value))
    return (" WHERE " + " AND ".join(where) if where else ""), params


def task_select(cols: str, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                project: str | None = None, metadata: Mapping[str, str | None] | None = None,
                limit: int | None = None, newest_first: bool = True) -> tuple[str, list[Any]] | None:  # fmt: skip
    """``(sql, params)`` selecting ``cols`` of the tasks ``task_filter`` keeps, by id (creation
    order; newest first by default), at most ``limit``; None when nothing can match."""
    found = task_filter(states=states, cluster=cluster, project=project, metadata=metadata)
    if found is None:
        return None
    where, params = found
    sql = f"SELECT {cols} FROM tasks{where} ORDER BY id " + ("DESC" if newest_first else "ASC")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return sql, params


def current_attempts(cols: str, n: int) -> str:
    """Columns ``cols`` (of ``a``, the attempts table) of the current attempt (number =
    the task's attempt count) of ``n`` tasks given as parameters."""
    return (f"SELECT {cols} FROM attempts a JOIN tasks t ON t.id = a.task_id AND a.number = t.attempt_count"
            f" WHERE a.task_id IN ({marks(n)})")  # fmt: skip


PROJECT_COUNTS = ("SELECT project, state, COUNT(*) FROM tasks WHERE project IS NOT NULL"
                  " GROUP BY project, state")  # fmt: skip


def project_counts(project: str | None = None) -> tuple[str, list[Any]]:
    """Tasks per (project, state), of every project or one."""
    if project is None:
        return PROJECT_COUNTS, []
    return "SELECT project, state, COUNT(*) FROM tasks WHERE project = ? GROUP BY project, state", [project]


def project_usage(project: str | None = None) -> tuple[str, list[Any]]:
    """Rows ``(project, cluster, core_hours, with_usage, without_usage)``: the core-hours in
    the recorded usage of attempts (recorded once a job ended), how many attempts have their
    usage recorded, and how many ended with a job but have none (yet)."""
    ended = marks(len(ENDED_ATTEMPT_STATES))
    sql = (
        "SELECT t.project, t.cluster,"
        " SUM(CASE WHEN a.usage IS NOT NULL THEN json_extract(a.usage, '$.core_hours') END),"
        " SUM(a.usage IS NOT NULL), SUM(a.usage IS NULL AND a.job_id IS NOT NULL)"
        " FROM tasks t JOIN attempts a ON a.task_id = t.id"
        f" WHERE (a.usage IS NOT NULL OR a.state IN ({ended})) AND "
    )
    params: list[Any] = list(ENDED_ATTEMPT_STATES)
    if project is None:
        sql += "t.project IS NOT NULL"
    else:
        sql += "t.project = ?"
        params.append(project)
    return sql + " GROUP BY t.project, t.cluster", params


def project_requests(states: Iterable[TaskState], project: str | None = None) -> tuple[str, list[Any]]:
    """Rows ``(project, cluster, cpus, time, tasks)``: what the tasks in ``states`` asked for,
    grouped (a sweep's tasks share one request, so this is a handful of rows), read from
    the spec JSON of those tasks only."""
    values = [s.value for s in states]
    sql = ("SELECT project, cluster, json_extract(spec, '$.resources.cpus'),"
           " json_extract(spec, '$.resources.time'), COUNT(*) FROM tasks"
           f" WHERE state IN ({marks(len(values))}) AND ")  # fmt: skip
    params: list[Any] = list(values)
    if project is None:
        # `+project`: keep the planner on the state index (the few in-flight tasks), not a
        # walk of every task with a project (measured at 100k tasks: 0.04 s instead of 0.3 s).
        sql += "+project IS NOT NULL"
    else:
        sql += "project = ?"
        params.append(project)
    return sql + " GROUP BY 1, 2, 3, 4", params


# ``hpcbridge top``: every task as one narrow row with its current attempt (raw JSON of the
# attempt's queue insight and usage, parsed only for rows that changed), no spec JSON.
TOP_ROWS = (
    "SELECT t.id, t.name, t.cluster, t.project, t.state, t.attempt_count, t.created_at,"
    " t.started_at, t.ended_at, t.reason, a.job_id, a.started_at, a.queue, a.usage"
    " FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id AND a.number = t.attempt_count"
)

# The same rows, only of tasks written since a time (every task write sets updated_at) or whose
# current attempt a sync touched since then (every poll sets last_seen_at).
TOP_ROWS_SINCE = (TOP_ROWS + " WHERE t.updated_at >= ? OR t.id IN"
                  " (SELECT task_id FROM attempts WHERE last_seen_at >= ?)")  # fmt: skip

# The newest event of each task among those after an event id (0: all). SQLite takes the bare
# columns of a MAX() aggregate from the row holding the maximum.
TOP_EVENTS = (
    "SELECT MAX(id), task_id, at, kind, from_state, to_state, detail FROM events"
    " WHERE id > ? GROUP BY task_id"
)

# The last time a sync saw each cluster's jobs (the scheduler reported on an attempt).
LAST_SEEN = ("SELECT t.cluster, MAX(a.last_seen_at) FROM attempts a JOIN tasks t ON t.id = a.task_id"
             " GROUP BY t.cluster")  # fmt: skip


__all__ = ["ENDED_ATTEMPT_STATES", "LAST_SEEN", "PROJECT_COUNTS", "TOP_EVENTS", "TOP_ROWS",
           "TOP_ROWS_SINCE", "current_attempts", "marks",
           "project_counts", "project_requests", "project_usage", "task_filter", "task_select"]  # fmt: skip
