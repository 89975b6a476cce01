"""The registry's schema: named, ordered migrations and the row <-> record mapping.

Migrations run once each, in order, recorded in ``_migrations``; a new one is appended, never
edited, so an older registry file upgrades in place. Pure functions of rows and records, no
connection handling (that is ``registry.py``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from .lifecycle import TaskState
from .models import Attempt, Event, Task, TaskSpec
from .registry_file import MIGRATION_NAMES


def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("tasks").create(
        {
            "id": str,
            "name": str,
            "cluster": str,
            "state": str,
            "spec": str,  # JSON of TaskSpec
            "metadata": str,  # JSON str -> str
            "created_at": float,
            "updated_at": float,
            "submitted_at": float,
            "started_at": float,
            "ended_at": float,
            "fetched_at": float,
            "attempt_count": int,
            "exit_code": int,
            "reason": str,
            "next_attempt_at": float,
            "work_dir": str,
            "output_dir": str,
            "excluded_nodes": str,  # JSON list
            "cancel_requested": int,
        },
        pk="id",
        not_null={"name", "cluster", "state", "spec", "metadata", "created_at", "updated_at"},
        defaults={"attempt_count": 0, "cancel_requested": 0, "metadata": "{}", "excluded_nodes": "[]"},
    )
    db.table("attempts").create(
        {
            "task_id": str,
            "number": int,
            "token": str,
            "state": str,
            "job_id": str,
            "created_at": float,
            "submitted_at": float,
            "started_at": float,
            "ended_at": float,
            "last_seen_at": float,
            "exit_code": int,
            "signal": int,
            "nodes": str,
            "partition": str,
            "reason": str,
            "restarts": int,
            "backend_ref": str,  # JSON
        },
        pk=("task_id", "number"),
        foreign_keys=[("task_id", "tasks", "id")],
        defaults={"restarts": 0, "backend_ref": "{}"},
    )
    db.table("events").create(
        {
            "id": int,
            "task_id": str,
            "at": float,
            "kind": str,
            "source": str,
            "from_state": str,
            "to_state": str,
            "attempt": int,
            "detail": str,
        },
        pk="id",
        foreign_keys=[("task_id", "tasks", "id")],
    )
    db.table("tasks").create_index(["state", "cluster"])
    db.table("tasks").create_index(["cluster", "state"])
    db.table("tasks").create_index(["created_at"])
    db.table("attempts").create_index(["token"], unique=True)
    db.table("attempts").create_index(["job_id"])
    db.table("events").create_index(["task_id", "id"])


def m002_scheduler_budget(db: sqlite_utils.Database) -> None:
    # A token bucket per cluster shared by every process (CLI, daemon, API): login-node politeness.
    db.table("budget").create({"cluster": str, "tokens": float, "updated_at": float}, pk="cluster")


def m003_ordered_indexes(db: sqlite_utils.Database) -> None:
    # Queries filter by state (and cluster) and order by id (= creation time): with id last
    # in the index SQLite walks it in order instead of scanning the table and sorting
    # (measured at 100k tasks: `tasks list --state` and the sync's active-task query).
    db.execute("DROP INDEX IF EXISTS idx_tasks_state_cluster")
    db.execute("DROP INDEX IF EXISTS idx_tasks_cluster_state")
    db.table("tasks").create_index(["state", "id"], if_not_exists=True)
    db.table("tasks").create_index(["cluster", "state", "id"], if_not_exists=True)


def m004_leases(db: sqlite_utils.Database) -> None:
    # The submitter's lease (a file it holds an flock on while it works on the task) and the
    # moment a sync first found that lease dead: grace periods for an unfinished submission
    # count from then, never while its submitter may still be inside sbatch.
    have = db.table("tasks").columns_dict
    for name, kind in (("lease", str), ("lease_lost_at", float)):
        if name not in have:
            db.table("tasks").add_column(name, kind)


def m005_monitoring(db: sqlite_utils.Database) -> None:
    # What monitoring keeps per attempt: resource usage and efficiency from accounting (JSON),
    # why it waits (JSON: reason, explanation, position, estimated start), the tails of its
    # logs fetched once when it ended badly (so they are there when the cluster is not), and
    # when it became eligible to run (queue time counts from there, not from submission).
    have = db.table("attempts").columns_dict
    for name, kind in (("usage", str), ("queue", str), ("stderr_tail", str),
                       ("stdout_tail", str), ("eligible_at", float)):  # fmt: skip
        if name not in have:
            db.table("attempts").add_column(name, kind)


def m006_projects_metadata(db: sqlite_utils.Database) -> None:
    # A task's project as a column (also in its spec, as name and cluster are) for the
    # per-project counts and lists, and its metadata as rows of an indexed table (the JSON
    # column stays the record; this is its index): `tasks list --meta k=v` and
    # `list_tasks(metadata=...)` look keys and values up instead of parsing every task's JSON.
    # Both backfilled from the existing rows; every statement is safe to run twice.
    if "project" not in db.table("tasks").columns_dict:
        db.table("tasks").add_column("project", str)
    db.execute("UPDATE tasks SET project = json_extract(spec, '$.project')"
               " WHERE project IS NULL AND json_extract(spec, '$.project') IS NOT NULL")  # fmt: skip
    db.execute("CREATE INDEX IF NOT EXISTS idx_tasks_project_state ON tasks (project, state)")
    # (project, id) orders a project's tasks; cluster rides along so the core-hours sum
    # (attempts joined to their task's project and cluster) reads no task rows.
    db.execute("CREATE INDEX IF NOT EXISTS idx_tasks_project_id_cluster ON tasks (project, id, cluster)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS task_meta (task_id TEXT NOT NULL REFERENCES tasks(id),"
        " key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (task_id, key)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_task_meta_key_value ON task_meta (key, value, task_id)")
    db.execute("INSERT OR IGNORE INTO task_meta (task_id, key, value)"
               " SELECT t.id, j.key, j.value FROM tasks t, json_each(t.metadata) j"
               " WHERE j.type = 'text'")  # fmt: skip


def m007_events_outbox(db: sqlite_utils.Database) -> None:
    # Issue 12: the outbox. A row per notifiable event, written in the transaction of the
    # transition (or notice) that caused it; delivery after the commit marks each rule
    # target done (`done`, JSON list), retries with backoff (`tries`, `next_try_at`) and
    # gives up after a bound (status 'given_up', the last error kept). The attempt's watch
    # state (stall readings, walltime warned, files seen) rides on the attempt as JSON.
    db.execute(
        "CREATE TABLE IF NOT EXISTS outbox (event_id INTEGER PRIMARY KEY REFERENCES events(id),"
        " task_id TEXT NOT NULL REFERENCES tasks(id), status TEXT NOT NULL DEFAULT 'pending',"
        " tries INTEGER NOT NULL DEFAULT 0, next_try_at REAL NOT NULL, done TEXT NOT NULL DEFAULT '[]',"
        " last_error TEXT, created_at REAL NOT NULL, delivered_at REAL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_outbox_status_next ON outbox (status, next_try_at)")
    if "watch" not in db.table("attempts").columns_dict:
        db.table("attempts").add_column("watch", str)


# The names are registry_file.MIGRATION_NAMES (where `tasks list` checks a file's schema
# without importing this module); a new migration is appended to both.
MIGRATIONS: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]] = tuple(zip(
    MIGRATION_NAMES,
    (m001_initial, m002_scheduler_budget, m003_ordered_indexes, m004_leases, m005_monitoring,
     m006_projects_metadata, m007_events_outbox),
    strict=True,
))  # fmt: skip

TASK_COLUMNS = (
    "id, name, cluster, state, spec, metadata, created_at, updated_at, submitted_at, started_at,"
    " ended_at, fetched_at, attempt_count, exit_code, reason, next_attempt_at, work_dir,"
    " output_dir, excluded_nodes, cancel_requested, lease, lease_lost_at, project"
)
TASK_COLUMN_COUNT = TASK_COLUMNS.count(",") + 1


def row_to_task(row: sqlite3.Row, spec: TaskSpec | None = None) -> Task:
    """The task of a row; ``spec``, when the caller holds the task's spec already (fixed at
    submission: see ``encode_task_fields``), saves parsing it again."""
    return Task(
        id=row["id"],
        spec=spec if spec is not None else TaskSpec.from_dict(json.loads(row["spec"])),
        state=TaskState(row["state"]),
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        fetched_at=row["fetched_at"],
        attempt_count=row["attempt_count"] or 0,
        exit_code=row["exit_code"],
        reason=row["reason"],
        next_attempt_at=row["next_attempt_at"],
        work_dir=row["work_dir"],
        output_dir=row["output_dir"],
        excluded_nodes=tuple(json.loads(row["excluded_nodes"] or "[]")),
        cancel_requested=bool(row["cancel_requested"]),
        lease=row["lease"],
        lease_lost_at=row["lease_lost_at"],
    )


def row_to_attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        task_id=row["task_id"],
        number=row["number"],
        token=row["token"],
        state=TaskState(row["state"]),
        job_id=row["job_id"],
        created_at=row["created_at"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        last_seen_at=row["last_seen_at"],
        exit_code=row["exit_code"],
        signal=row["signal"],
        nodes=row["nodes"],
        partition=row["partition"],
        reason=row["reason"],
        restarts=row["restarts"] or 0,
        backend_ref=json.loads(row["backend_ref"] or "{}"),
        usage=_json_or_none(row, "usage"),
        queue=_json_or_none(row, "queue"),
        stderr_tail=_col(row, "stderr_tail"),
        stdout_tail=_col(row, "stdout_tail"),
        eligible_at=_col(row, "eligible_at"),
        watch=_json_or_none(row, "watch"),
    )


def row_to_event(r: sqlite3.Row) -> Event:
    return Event(id=r["id"], task_id=r["task_id"], at=r["at"], kind=r["kind"], source=r["source"],
                 from_state=r["from_state"], to_state=r["to_state"], attempt=r["attempt"],
                 detail=r["detail"] or "")  # fmt: skip


def _col(row: sqlite3.Row, name: str) -> Any:
    return row[name] if name in row.keys() else None


def _json_or_none(row: sqlite3.Row, name: str) -> Any:
    value = _col(row, name)
    return json.loads(value) if value else None


# Attempt columns stored as JSON text.
JSON_ATTEMPT_FIELDS = frozenset({"backend_ref", "usage", "queue", "watch"})


JSON_TASK_FIELDS = {"metadata", "spec"}


def encode_task_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ("id", "state"):
            raise ValueError(f"{key} is not updated through fields")
        if key in ("metadata", "project", "spec"):
            # metadata is mirrored in task_meta (update_metadata keeps both in step); the
            # project and the spec are fixed at submission.
            raise ValueError(f"{key} is not updated through fields")
        if key == "excluded_nodes":
            value = json.dumps(list(value))
        elif key in JSON_TASK_FIELDS:
            value = json.dumps(value)
        elif key == "cancel_requested":
            value = int(bool(value))
        out[key] = value
    return out
