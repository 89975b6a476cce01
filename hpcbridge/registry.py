"""The SQLite task registry: the source of truth.

Conventions: every write is a short ``BEGIN IMMEDIATE`` transaction; state changes are
compare-and-set (``UPDATE ... WHERE id=? AND state=?``) and append an event in the same
transaction; the schema is built by named, ordered migrations recorded in the database.
sqlite-utils builds tables and indexes; hot paths use plain SQL on the same connection.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from .errors import AmbiguousTaskId, ConflictError, RegistryBusy, RegistryError, TaskNotFound
from .lifecycle import TaskState, check_transition
from .models import Attempt, Event, Task, TaskSpec

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000


def _m001_initial(db: sqlite_utils.Database) -> None:
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


def _m002_scheduler_budget(db: sqlite_utils.Database) -> None:
    # A token bucket per cluster shared by every process (CLI, daemon, API): login-node politeness.
    db.table("budget").create({"cluster": str, "tokens": float, "updated_at": float}, pk="cluster")


def _m003_ordered_indexes(db: sqlite_utils.Database) -> None:
    # Queries filter by state (and cluster) and order by id (= creation time): with id last
    # in the index SQLite walks it in order instead of scanning the table and sorting
    # (measured at 100k tasks: `tasks list --state` and the sync's active-task query).
    db.execute("DROP INDEX IF EXISTS idx_tasks_state_cluster")
    db.execute("DROP INDEX IF EXISTS idx_tasks_cluster_state")
    db.table("tasks").create_index(["state", "id"], if_not_exists=True)
    db.table("tasks").create_index(["cluster", "state", "id"], if_not_exists=True)


MIGRATIONS: Sequence[tuple[str, Callable[[sqlite_utils.Database], None]]] = (
    ("001_initial", _m001_initial),
    ("002_scheduler_budget", _m002_scheduler_budget),
    ("003_ordered_indexes", _m003_ordered_indexes),
)

_TASK_COLUMNS = (
    "id, name, cluster, state, spec, metadata, created_at, updated_at, submitted_at, started_at,"
    " ended_at, fetched_at, attempt_count, exit_code, reason, next_attempt_at, work_dir,"
    " output_dir, excluded_nodes, cancel_requested"
)


def _row_to_task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        spec=TaskSpec.from_dict(json.loads(row["spec"])),
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
    )


def _row_to_attempt(row: sqlite3.Row) -> Attempt:
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
    )


class Registry:
    """A connection to one registry file. Not shared between threads; cheap to open."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file 0600 before SQLite does (it would use the umask): task specs and
            # metadata can hold paths and parameters the user considers private.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self.conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(
                f"cannot open registry {self.path}: {exc}",
                hint="check the path (--db / HPCBRIDGE_DB) and its permissions",
            ) from None
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path} is not an hpcbridge registry: {exc}") from None
        if mode != "wal":  # e.g. some network filesystems; rollback journal still works
            log.info("registry %s: WAL unavailable, journal_mode=%s", self.path, mode)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._db: sqlite_utils.Database | None = None
        # Committed state changes made through this connection, (task, from, to), in order:
        # what a sync cycle reports and the daemon logs. Consumers take and clear it.
        self.journal: list[tuple[str, str, str]] = []
        self.migrate()

    # -- infrastructure ------------------------------------------------------------------
    def close(self) -> None:
        try:  # SQLite's advice for connections that ran queries: refresh planner statistics
            self.conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: take the write lock up front so two writers never deadlock
        upgrading read locks; the busy timeout makes the second one wait its turn."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise RegistryBusy(
                f"registry {self.path} is locked: {exc}",
                hint="another hpcbridge process holds it for too long; try again",
            ) from None
        mark = len(self.journal)
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            del self.journal[mark:]  # those changes never happened
            raise
        else:
            self.conn.execute("COMMIT")

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils' view of the connection (schema work). Imported on first use: it is
        most of hpcbridge's import time and memory, and only migrations need it."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; return their names."""
        applied: list[str] = []
        try:
            done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
            if all(name in done for name, _ in MIGRATIONS):
                return applied  # the common case: nothing to do, no sqlite-utils import
        except sqlite3.OperationalError:
            pass  # a new registry: no _migrations table yet
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)"
            )
            done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
            for name, fn in MIGRATIONS:
                if name in done:
                    continue
                fn(self.db)
                self.conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time())
                )
                applied.append(name)
        for name in applied:
            log.debug("registry %s: applied migration %s", self.path, name)
        return applied

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM _migrations ORDER BY name")]

    # -- tasks ----------------------------------------------------------------------------
    def insert_task(self, task: Task, *, source: str, detail: str = "") -> None:
        self.insert_tasks([task], source=source, detail=detail)

    def insert_tasks(self, tasks: Sequence[Task], *, source: str, detail: str = "") -> None:
        """Register tasks (all or none) in one transaction."""
        with self.transaction() as c:
            for task in tasks:
                self._insert(c, task, source, detail)

    def _insert(self, c: sqlite3.Connection, task: Task, source: str, detail: str) -> None:
        c.execute(
            f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 20)})",
            (
                task.id,
                task.spec.name,
                task.spec.cluster,
                task.state.value,
                json.dumps(task.spec.to_dict()),
                json.dumps(dict(task.metadata)),
                task.created_at,
                task.updated_at,
                task.submitted_at,
                task.started_at,
                task.ended_at,
                task.fetched_at,
                task.attempt_count,
                task.exit_code,
                task.reason,
                task.next_attempt_at,
                task.work_dir,
                task.output_dir,
                json.dumps(list(task.excluded_nodes)),
                int(task.cancel_requested),
            ),
        )
        self._event(c, task.id, "state", source, None, task.state.value, None, detail)

    def get_task(self, task_id: str) -> Task:
        row = self.conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}", hint="list tasks with `hpcbridge tasks list`")
        return _row_to_task(row)

    def resolve_id(self, prefix: str) -> str:
        """A full id, or a unique prefix of one."""
        prefix = prefix.strip()
        if not prefix:
            raise TaskNotFound("empty task id")
        if self.conn.execute("SELECT 1 FROM tasks WHERE id = ?", (prefix,)).fetchone():
            return prefix
        # Range scan on the primary key instead of LIKE: ids are plain base32, and a LIKE
        # pattern would treat '%' and '_' in a hostile "id" as wildcards.
        rows = self.conn.execute(
            "SELECT id FROM tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT 6",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        if not rows:
            raise TaskNotFound(
                f"no task with id or id prefix {prefix!r}",
                hint="list tasks with `hpcbridge tasks list`",
            )
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:5])
            raise AmbiguousTaskId(
                f"task id prefix {prefix!r} matches several tasks: {shown}"
                + (" ..." if len(rows) > 5 else ""),
                hint="give more characters of the id",
            )
        return str(rows[0][0])

    def list_tasks(
        self,
        *,
        states: Iterable[TaskState] | None = None,
        cluster: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        if states is not None:
            values = [s.value for s in states]
            if not values:
                return []
            where.append(f"state IN ({', '.join('?' * len(values))})")
            params.extend(values)
        if cluster is not None:
            where.append("cluster = ?")
            params.append(cluster)
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_row_to_task(r) for r in self.conn.execute(sql, params)]

    def clusters_with_active_tasks(self, active: Iterable[TaskState]) -> list[str]:
        values = [s.value for s in active]
        rows = self.conn.execute(
            f"SELECT DISTINCT cluster FROM tasks WHERE state IN ({', '.join('?' * len(values))})",
            values,
        )
        return sorted(r[0] for r in rows)

    def transition(
        self,
        task_id: str,
        expected: TaskState,
        new: TaskState,
        *,
        source: str,
        detail: str = "",
        attempt: int | None = None,
        fields: Mapping[str, Any] | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        """Compare-and-set ``expected -> new`` plus an event, atomically.

        Raises ConflictError when the task is no longer in ``expected`` (another process moved
        it first); nothing is written then. Pass ``conn`` to join an open transaction.
        """
        check_transition(expected, new)
        if conn is None:
            with self.transaction() as c:
                self._transition(c, task_id, expected, new, source, detail, attempt, fields)
        else:
            self._transition(conn, task_id, expected, new, source, detail, attempt, fields)

    def _transition(
        self,
        c: sqlite3.Connection,
        task_id: str,
        expected: TaskState,
        new: TaskState,
        source: str,
        detail: str,
        attempt: int | None,
        fields: Mapping[str, Any] | None,
    ) -> None:
        now = time.time()
        sets = {"state": new.value, "updated_at": now, **_encode_task_fields(fields or {})}
        assignments = ", ".join(f"{k} = ?" for k in sets)
        cur = c.execute(
            f"UPDATE tasks SET {assignments} WHERE id = ? AND state = ?",
            (*sets.values(), task_id, expected.value),
        )
        if cur.rowcount != 1:
            row = c.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            raise ConflictError(
                f"task {task_id}: expected state {expected.value}, found {row[0]}; "
                f"{expected.value} -> {new.value} not applied"
            )
        self._event(c, task_id, "state", source, expected.value, new.value, attempt, detail, now)
        self.journal.append((task_id, expected.value, new.value))

    def update_task(
        self,
        task_id: str,
        fields: Mapping[str, Any],
        *,
        expected: TaskState | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        """Set non-state columns (optionally only while the task is in ``expected``)."""
        sets = {"updated_at": time.time(), **_encode_task_fields(fields)}
        sql = f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?"
        params: list[Any] = [*sets.values(), task_id]
        if expected is not None:
            sql += " AND state = ?"
            params.append(expected.value)

        def run(c: sqlite3.Connection) -> None:
            if c.execute(sql, params).rowcount != 1:
                self.get_task(task_id)  # raises TaskNotFound
                raise ConflictError(f"task {task_id} changed state; update not applied")

        if conn is None:
            with self.transaction() as c:
                run(c)
        else:
            run(conn)

    def update_metadata(self, task_id: str, updates: Mapping[str, str | None]) -> dict[str, str]:
        """Merge ``updates`` into the metadata (None deletes a key), atomically."""
        with self.transaction() as c:
            row = c.execute("SELECT metadata FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            meta: dict[str, str] = json.loads(row[0])
            for key, value in updates.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            c.execute(
                "UPDATE tasks SET metadata = ?, updated_at = ? WHERE id = ?",
                (json.dumps(meta), time.time(), task_id),
            )
            detail = ", ".join(
                f"{k}={'(deleted)' if v is None else v}" for k, v in sorted(updates.items())
            )
            self._event(c, task_id, "metadata", "api", None, None, None, detail)
        return meta

    # -- attempts -------------------------------------------------------------------------
    def add_attempt(self, attempt: Attempt, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO attempts (task_id, number, token, state, job_id, created_at, backend_ref)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                attempt.task_id,
                attempt.number,
                attempt.token,
                attempt.state.value,
                attempt.job_id,
                attempt.created_at,
                json.dumps(dict(attempt.backend_ref)),
            ),
        )

    def update_attempt(
        self,
        task_id: str,
        number: int,
        fields: Mapping[str, Any],
        conn: sqlite3.Connection | None = None,
    ) -> None:
        enc = {
            k: (json.dumps(dict(v)) if k == "backend_ref" else v.value if isinstance(v, TaskState) else v)
            for k, v in fields.items()
        }
        if not enc:
            return
        sql = f"UPDATE attempts SET {', '.join(f'{k} = ?' for k in enc)} WHERE task_id = ? AND number = ?"
        if conn is None:
            with self.transaction() as c:
                c.execute(sql, (*enc.values(), task_id, number))
        else:
            conn.execute(sql, (*enc.values(), task_id, number))

    def attempts(self, task_id: str) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE task_id = ? ORDER BY number", (task_id,)
        )
        return [_row_to_attempt(r) for r in rows]

    def current_attempts(self, task_ids: Sequence[str]) -> dict[str, Attempt]:
        """The latest attempt of each task, in one query (chunked under SQLite's limits)."""
        out: dict[str, Attempt] = {}
        for i in range(0, len(task_ids), 500):
            chunk = task_ids[i : i + 500]
            rows = self.conn.execute(
                "SELECT a.* FROM attempts a JOIN tasks t ON t.id = a.task_id"
                " AND a.number = t.attempt_count"
                f" WHERE a.task_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for r in rows:
                out[r["task_id"]] = _row_to_attempt(r)
        return out

    # -- events ---------------------------------------------------------------------------
    def add_event(
        self,
        task_id: str,
        kind: str,
        detail: str,
        *,
        source: str,
        attempt: int | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        if conn is None:
            with self.transaction() as c:
                self._event(c, task_id, kind, source, None, None, attempt, detail)
        else:
            self._event(conn, task_id, kind, source, None, None, attempt, detail)

    def _event(
        self,
        c: sqlite3.Connection,
        task_id: str,
        kind: str,
        source: str,
        from_state: str | None,
        to_state: str | None,
        attempt: int | None,
        detail: str,
        at: float | None = None,
    ) -> None:
        c.execute(
            "INSERT INTO events (task_id, at, kind, source, from_state, to_state, attempt, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, at or time.time(), kind, source, from_state, to_state, attempt, detail),
        )

    def events(self, task_id: str) -> list[Event]:
        rows = self.conn.execute(
            "SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,)
        )
        return [
            Event(
                id=r["id"],
                task_id=r["task_id"],
                at=r["at"],
                kind=r["kind"],
                source=r["source"],
                from_state=r["from_state"],
                to_state=r["to_state"],
                attempt=r["attempt"],
                detail=r["detail"] or "",
            )
            for r in rows
        ]

    # -- scheduler command budget (token bucket shared through the registry) --------------
    def take_budget(self, cluster: str, n: float, *, rate_per_minute: float, burst: float) -> float:
        """Take ``n`` tokens from the cluster's bucket; return seconds to wait first (0 = go).

        The tokens are taken even when a wait is returned (the caller sleeps, then acts), so
        concurrent processes queue up fairly instead of all waking at once.
        """
        now = time.time()
        with self.transaction() as c:
            row = c.execute(
                "SELECT tokens, updated_at FROM budget WHERE cluster = ?", (cluster,)
            ).fetchone()
            tokens = burst if row is None else min(
                burst, row[0] + (now - row[1]) * rate_per_minute / 60.0
            )
            tokens -= n
            c.execute(
                "INSERT INTO budget (cluster, tokens, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(cluster) DO UPDATE SET tokens = excluded.tokens,"
                " updated_at = excluded.updated_at",
                (cluster, tokens, now),
            )
        return 0.0 if tokens >= 0 else -tokens * 60.0 / rate_per_minute


_JSON_TASK_FIELDS = {"metadata", "spec"}


def _encode_task_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ("id", "state"):
            raise ValueError(f"{key} is not updated through fields")
        if key == "excluded_nodes":
            value = json.dumps(list(value))
        elif key in _JSON_TASK_FIELDS:
            value = json.dumps(value)
        elif key == "cancel_requested":
            value = int(bool(value))
        out[key] = value
    return out
