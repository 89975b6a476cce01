"""The SQLite task registry: the source of truth.

Conventions: every write is a short ``BEGIN IMMEDIATE`` transaction; state changes are
compare-and-set (``UPDATE ... WHERE id=? AND state=?``) and append an event in the same
transaction; the schema is built by named, ordered migrations recorded in the database.
sqlite-utils builds tables and indexes; hot paths use plain SQL on the same connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from .errors import AmbiguousTaskId, ConflictError, RegistryBusy, RegistryError, TaskNotFound
from .event_names import OUTBOX_STATES
from .lazylog import get_logger
from .lifecycle import TaskState, check_transition
from .models import Attempt, Event, Task
from .registry_batch import BatchWrites, chunks
from .registry_file import BUSY_TIMEOUT_MS
from .registry_queries import (
    ENDED_ATTEMPT_STATES,
    LAST_SEEN,
    TOP_EVENTS,
    TOP_ROWS,
    TOP_ROWS_SINCE,
    current_attempts,
    marks,
    project_counts,
    project_requests,
    project_usage,
    task_select,
)
from .registry_read import current_usage
from .schema import (
    JSON_ATTEMPT_FIELDS,
    MIGRATIONS,
    TASK_COLUMN_COUNT,
    TASK_COLUMNS,
    encode_task_fields,
    row_to_attempt,
    row_to_event,
    row_to_task,
)

log = get_logger(__name__)
# The task columns with the spec left out (its JSON is most of a row), for callers that
# hold the spec already.
_WITHOUT_SPEC = TASK_COLUMNS.replace(" spec,", " NULL AS spec,")


class Registry(BatchWrites):
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
            raise RegistryError(f"{self.path} is not an hpcbridge registry: {exc}",
                                hint="--db / HPCBRIDGE_DB must name a registry file (or a new path)") from None  # fmt: skip
        if mode != "wal":  # e.g. some network filesystems; rollback journal still works
            log.info("registry %s: WAL unavailable, journal_mode=%s", self.path, mode)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._db: sqlite_utils.Database | None = None
        self._savepoints: list[str] = []
        # State changes of the open transaction, handed to recorders when it commits.
        self._pending: list[tuple[str, str, str]] = []
        self._recorders: list[list[tuple[str, str, str]]] = []
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
        """One atomic unit of work, nesting-aware (as sqlite-utils' ``atomic()``).

        The outermost block is ``BEGIN IMMEDIATE``: it takes the write lock up front, so two
        writers never deadlock upgrading read locks, and the busy timeout makes the second one
        wait its turn. A block opened inside another joins it through a SAVEPOINT: its
        failure rolls back only its own writes, and nothing is durable before the outermost
        block commits. State changes reach ``recording()`` blocks only once committed.
        """
        if self.conn.in_transaction:
            name = f"hb_sp{len(self._savepoints)}"
            self._savepoints.append(name)
            mark = len(self._pending)
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
                del self._pending[mark:]  # those changes never happened
                raise
            else:
                self.conn.execute(f"RELEASE {name}")
            finally:
                self._savepoints.pop()
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise RegistryBusy(
                f"registry {self.path} is locked: {exc}",
                hint="another hpcbridge process holds it for too long; try again",
            ) from None
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._pending.clear()
            raise
        else:
            self.conn.execute("COMMIT")
            for recorder in self._recorders:
                recorder.extend(self._pending)
            self._pending.clear()

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, str, str]]]:
        """Collect the state changes ``(task, from, to)`` committed through this connection
        while the block runs, in order (what a sync cycle reports and the daemon logs)."""
        changes: list[tuple[str, str, str]] = []
        self._recorders.append(changes)
        try:
            yield changes
        finally:
            # By identity: two recorders with equal contents are still two recorders.
            self._recorders = [r for r in self._recorders if r is not changes]

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
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({marks(TASK_COLUMN_COUNT)})",
                [(task.id, task.spec.name, task.spec.cluster, task.state.value, json.dumps(task.spec.to_dict()),
                  json.dumps(dict(task.metadata)), task.created_at, task.updated_at, task.submitted_at,
                  task.started_at, task.ended_at, task.fetched_at, task.attempt_count, task.exit_code,
                  task.reason, task.next_attempt_at, task.work_dir, task.output_dir,
                  json.dumps(list(task.excluded_nodes)), int(task.cancel_requested), task.lease,
                  task.lease_lost_at, task.project) for task in tasks],
            )  # fmt: skip
            c.executemany("INSERT INTO task_meta (task_id, key, value) VALUES (?, ?, ?)",
                          [(task.id, k, v) for task in tasks for k, v in task.metadata.items()])  # fmt: skip
            c.executemany(
                "INSERT INTO events (task_id, at, kind, source, from_state, to_state, attempt, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(task.id, now, "state", source, None, task.state.value, None, detail) for task in tasks],
            )  # fmt: skip

    def get_task(self, task_id: str) -> Task:
        row = self.conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}", hint="list tasks with `hpcbridge tasks list`")
        return row_to_task(row)

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        """Tasks by id, in the order asked, in one query per 500 (TaskNotFound for a missing one)."""
        rows = self._rows(task_ids)
        return [row_to_task(rows[t]) for t in task_ids]

    def refresh(self, tasks: Sequence[Task]) -> list[Task]:
        """``tasks`` as the registry holds them now, keeping their specs (fixed at submission,
        so not parsed again: most of the cost of reading a task)."""
        rows = self._rows([t.id for t in tasks], columns=_WITHOUT_SPEC)
        return [row_to_task(rows[t.id], t.spec) for t in tasks]

    def _rows(self, task_ids: Sequence[str], *, columns: str = TASK_COLUMNS) -> dict[str, sqlite3.Row]:
        rows: dict[str, sqlite3.Row] = {}
        for part in chunks(task_ids):
            for r in self.conn.execute(f"SELECT {columns} FROM tasks WHERE id IN ({marks(len(part))})", part):
                rows[r["id"]] = r
        missing = [t for t in task_ids if t not in rows]
        if missing:
            raise TaskNotFound(f"no task with id {missing[0]!r}", hint="list tasks with `hpcbridge tasks list`")
        return rows

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

    def list_tasks(self, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                   limit: int | None = None, newest_first: bool = True, project: str | None = None,
                   metadata: Mapping[str, str | None] | None = None) -> list[Task]:  # fmt: skip
        """Tasks by id (creation order), filtered: ``metadata`` maps a key to its exact
        value, or to None for "has the key" (matched through the indexed ``task_meta``)."""
        rows = self._select(TASK_COLUMNS, states, cluster, limit, newest_first, project, metadata)
        return [row_to_task(r) for r in rows]

    def task_ids(self, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                 limit: int | None = None, newest_first: bool = True, project: str | None = None,
                 metadata: Mapping[str, str | None] | None = None) -> list[str]:  # fmt: skip
        """The ids ``list_tasks`` would return, without building records (milliseconds at
        100k tasks, where building 10,000 records takes most of a second)."""
        return [r[0] for r in self._select("id", states, cluster, limit, newest_first, project, metadata)]

    def _select(self, cols: str, states: Iterable[TaskState] | None, cluster: str | None,
                limit: int | None, newest_first: bool, project: str | None,
                metadata: Mapping[str, str | None] | None) -> list[sqlite3.Row]:  # fmt: skip
        found = task_select(cols, states=states, cluster=cluster, project=project, metadata=metadata,
                            limit=limit, newest_first=newest_first)  # fmt: skip
        if found is None:
            return []
        sql, params = found
        return self.conn.execute(sql, params).fetchall()

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
        expected_attempt: int | None = None,
    ) -> None:
        """Compare-and-set ``expected -> new`` plus an event, atomically (joining an open
        transaction, if any).

        With ``expected_attempt`` the task must also still be on that attempt: a late answer
        about attempt 1 never moves a task whose current attempt is 2. Raises ConflictError
        when the task is no longer in ``expected`` (another process moved it first); nothing
        is written then.
        """
        check_transition(expected, new)
        with self.transaction() as c:
            self._transition(c, task_id, expected, new, source, detail, attempt, fields,
                             expected_attempt)  # fmt: skip

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
        expected_attempt: int | None,
    ) -> None:
        now = time.time()
        sets = {"state": new.value, "updated_at": now, **encode_task_fields(fields or {})}
        assignments = ", ".join(f"{k} = ?" for k in sets)
        sql = f"UPDATE tasks SET {assignments} WHERE id = ? AND state = ?"
        params: list[Any] = [*sets.values(), task_id, expected.value]
        if expected_attempt is not None:
            sql += " AND attempt_count = ?"
            params.append(expected_attempt)
        cur = c.execute(sql, params)
        if cur.rowcount != 1:
            row = c.execute(
                "SELECT state, attempt_count FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None:
                raise TaskNotFound(f"no task with id {task_id!r}")
            raise ConflictError(
                f"task {task_id}: expected state {expected.value}"
                + (f" on attempt {expected_attempt}" if expected_attempt is not None else "")
                + f", found {row[0]} on attempt {row[1]}; {expected.value} -> {new.value} not applied"
            )
        event_id = self._event(c, task_id, "state", source, expected.value, new.value, attempt, detail, now)
        if new.value in OUTBOX_STATES:  # same transaction: the event is never lost
            self._outbox(c, event_id, task_id, now)
        self._pending.append((task_id, expected.value, new.value))

    def update_task(
        self,
        task_id: str,
        fields: Mapping[str, Any],
        *,
        expected: TaskState | None = None,
    ) -> None:
        """Set non-state columns (optionally only while the task is in ``expected``)."""
        sets = {"updated_at": time.time(), **encode_task_fields(fields)}
        sql = f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?"
        params: list[Any] = [*sets.values(), task_id]
        if expected is not None:
            sql += " AND state = ?"
            params.append(expected.value)

        with self.transaction() as c:
            if c.execute(sql, params).rowcount != 1:
                self.get_task(task_id)  # raises TaskNotFound
                raise ConflictError(f"task {task_id} changed state; update not applied")

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
            # The index table, in the same transaction: deleted keys go, set ones are upserted.
            c.executemany("DELETE FROM task_meta WHERE task_id = ? AND key = ?",
                          [(task_id, k) for k, v in updates.items() if v is None])  # fmt: skip
            c.executemany("INSERT INTO task_meta (task_id, key, value) VALUES (?, ?, ?) ON CONFLICT"
                          " (task_id, key) DO UPDATE SET value = excluded.value",
                          [(task_id, k, v) for k, v in updates.items() if v is not None])  # fmt: skip
            detail = ", ".join(
                f"{k}={'(deleted)' if v is None else v}" for k, v in sorted(updates.items())
            )
            self._event(c, task_id, "metadata", "api", None, None, None, detail)
        return meta

    # -- attempts -------------------------------------------------------------------------
    def add_attempt(self, attempt: Attempt) -> None:
        with self.transaction() as c:
            self._add_attempt(c, attempt)

    def _add_attempt(self, c: sqlite3.Connection, attempt: Attempt) -> None:
        c.execute(
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

    def withdraw_attempt(self, task_id: str, number: int, new: TaskState, *, source: str, detail: str,
                         fields: Mapping[str, Any] | None = None) -> bool:  # fmt: skip
        """Undo attempt ``number``, which the scheduler refused outright (no job exists for
        it): its row is deleted, the task's attempt count goes back to ``number - 1`` and the
        task moves ``submitting -> new`` with an event, so the refusal spends no attempt of
        the retry policy. Compare-and-set: only while that attempt is the task's current one,
        ``submitting`` and without a job; False (nothing written) otherwise."""
        check_transition(TaskState.SUBMITTING, new)
        try:
            with self.transaction() as c:
                self._transition(c, task_id, TaskState.SUBMITTING, new, source, detail, number,
                                 {**(fields or {}), "attempt_count": number - 1}, number)  # fmt: skip
                gone = c.execute("DELETE FROM attempts WHERE task_id = ? AND number = ? AND state = ?"
                                 " AND job_id IS NULL", (task_id, number, TaskState.SUBMITTING.value)).rowcount  # fmt: skip
                if gone != 1:  # the attempt has a job after all: roll the transition back
                    raise ConflictError(f"task {task_id}: attempt {number} is not a jobless submission")
        except ConflictError:
            return False
        return True

    def update_attempt(
        self,
        task_id: str,
        number: int,
        fields: Mapping[str, Any],
    ) -> None:
        enc = {
            k: (None if v is None else json.dumps(dict(v))) if k in JSON_ATTEMPT_FIELDS
            else v.value if isinstance(v, TaskState) else v
            for k, v in fields.items()
        }  # fmt: skip
        if not enc:
            return
        sql = f"UPDATE attempts SET {', '.join(f'{k} = ?' for k in enc)} WHERE task_id = ? AND number = ?"
        with self.transaction() as c:
            c.execute(sql, (*enc.values(), task_id, number))

    def attempts(self, task_id: str) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE task_id = ? ORDER BY number", (task_id,)
        )
        return [row_to_attempt(r) for r in rows]

    def current_attempts(self, task_ids: Sequence[str]) -> dict[str, Attempt]:
        """The latest attempt of each task, in one query (chunked under SQLite's limits)."""
        out: dict[str, Attempt] = {}
        for i in range(0, len(task_ids), 500):
            chunk = task_ids[i : i + 500]
            for r in self.conn.execute(current_attempts("a.*", len(chunk)), chunk):
                out[r["task_id"]] = row_to_attempt(r)
        return out

    def current_usage(self, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The recorded usage of each task's current attempt, where it has one (one query per
        500 tasks, the usage column alone): ``registry_read.current_usage``."""
        return current_usage(self.conn, task_ids)

    def stray_attempts(self, cluster: str, *, since: float, reason: str) -> list[Attempt]:
        """Attempts of ``cluster``'s tasks given up with ``reason`` and no job id since
        ``since``: a job carrying their token must not run."""
        rows = self.conn.execute(
            "SELECT a.* FROM attempts a JOIN tasks t ON t.id = a.task_id"
            " WHERE t.cluster = ? AND a.state = ? AND a.reason = ? AND a.job_id IS NULL"
            " AND a.created_at >= ?",
            (cluster, TaskState.LOST.value, reason, since),
        )
        return [row_to_attempt(r) for r in rows]

    def attempts_needing_usage(self, cluster: str, *, since: float) -> list[Attempt]:
        """Attempts of ``cluster`` whose job ended (last seen since ``since``) and whose
        resource usage is not recorded yet."""
        rows = self.conn.execute(
            "SELECT a.* FROM attempts a JOIN tasks t ON t.id = a.task_id"
            f" WHERE t.cluster = ? AND a.state IN ({marks(len(ENDED_ATTEMPT_STATES))})"
            " AND a.job_id IS NOT NULL AND a.usage IS NULL AND a.last_seen_at >= ?",
            (cluster, *ENDED_ATTEMPT_STATES, since),
        )
        return [row_to_attempt(r) for r in rows]

    # -- projects -------------------------------------------------------------------------
    def project_counts(self, project: str | None = None) -> dict[str, dict[str, int]]:
        """``{project: {state: tasks}}`` of every project (or one), from the index."""
        out: dict[str, dict[str, int]] = {}
        for name, state, n in self.conn.execute(*project_counts(project)):
            out.setdefault(name, {})[state] = n
        return out

    def project_usage(self, project: str | None = None) -> list[tuple[str, str, float, int, int]]:
        """``(project, cluster, core_hours, attempts with usage, ended attempts without)``."""
        return [(p, c, float(h or 0.0), int(w or 0), int(m or 0))
                for p, c, h, w, m in self.conn.execute(*project_usage(project))]  # fmt: skip

    def project_requests(self, states: Iterable[TaskState], project: str | None = None) -> list[tuple[Any, ...]]:
        """``(project, cluster, cpus, time, tasks)`` of the tasks in ``states``, grouped."""
        return [tuple(r) for r in self.conn.execute(*project_requests(states, project))]

    # -- hpcbridge top -----------------------------------------------------------------------
    def top_rows(self, since: float | None = None) -> list[tuple[Any, ...]]:
        """Every task as a narrow tuple for ``hpcbridge top`` (``registry_queries.TOP_ROWS``),
        or (``since``) only those written, or whose attempt a sync touched, since then. No
        records are built, so comparing two reads tells which rows changed."""
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples: a tenth of the cost of sqlite3.Row at 10k rows
        if since is None:
            return cur.execute(TOP_ROWS).fetchall()
        return cur.execute(TOP_ROWS_SINCE, (since, since)).fetchall()

    def change_mark(self) -> tuple[int, int]:
        """Changes whenever anything was committed to the file, by this connection or another
        (SQLite's ``data_version`` and this connection's ``total_changes``): a reader that
        saw the same mark twice has nothing to re-read."""
        (version,) = self.conn.execute("PRAGMA data_version").fetchone()
        return int(version), self.conn.total_changes

    def top_events(self, after_id: int = 0) -> list[tuple[Any, ...]]:
        """The newest event of each task among the events after ``after_id``:
        ``(id, task_id, at, kind, from_state, to_state, detail)``."""
        cur = self.conn.cursor()
        cur.row_factory = None
        return cur.execute(TOP_EVENTS, (after_id,)).fetchall()

    def last_seen(self) -> dict[str, float]:
        """Per cluster, the last time a sync heard from the scheduler about a job."""
        return {c: float(t) for c, t in self.conn.execute(LAST_SEEN) if t is not None}

    # -- events ---------------------------------------------------------------------------
    def add_event(
        self,
        task_id: str,
        kind: str,
        detail: str,
        *,
        source: str,
        attempt: int | None = None,
    ) -> None:
        with self.transaction() as c:
            self._event(c, task_id, kind, source, None, None, attempt, detail)

    def add_notice(self, task_id: str, kind: str, detail: str, *, source: str,
                   attempt: int | None = None, watch: Mapping[str, Any] | None = None) -> int:  # fmt: skip
        """An event that is no state change (``stalled``, ``walltime_near``, a watched file)
        and its outbox row, in one transaction; with ``watch`` the attempt's watch state is
        written in it too, so a notice is recorded exactly when its "already said" mark is."""
        with self.transaction() as c:
            now = time.time()
            event_id = self._event(c, task_id, kind, source, None, None, attempt, detail, now)
            self._outbox(c, event_id, task_id, now)
            if watch is not None and attempt is not None:
                c.execute("UPDATE attempts SET watch = ? WHERE task_id = ? AND number = ?",
                          (json.dumps(dict(watch)), task_id, attempt))  # fmt: skip
        return event_id

    def _outbox(self, c: sqlite3.Connection, event_id: int, task_id: str, now: float) -> None:
        c.execute("INSERT INTO outbox (event_id, task_id, next_try_at, created_at) VALUES (?, ?, ?, ?)",
                  (event_id, task_id, now, now))  # fmt: skip

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
    ) -> int:
        cur = c.execute(
            "INSERT INTO events (task_id, at, kind, source, from_state, to_state, attempt, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, at or time.time(), kind, source, from_state, to_state, attempt, detail),
        )
        return int(cur.lastrowid or 0)

    def events(self, task_id: str) -> list[Event]:
        rows = self.conn.execute(
            "SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,)
        )
        return [row_to_event(r) for r in rows]

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


def peek_names(path: str | os.PathLike[str], column: str, prefix: str = "", *, limit: int = 200) -> list[tuple[str, ...]]:
    """Read-only look-up for shell completion: values of ``column`` (``id``, ``project`` or
    ``cluster``) starting with ``prefix``, newest first for ids. Never creates, migrates or
    locks the file: a missing or foreign file gives ``[]``. Rows are ``(id, state, name)``
    for ids and ``(value,)`` otherwise."""
    if column not in ("id", "project", "cluster"):
        raise ValueError(column)
    file = Path(path)
    if not file.is_file():
        return []
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return []
    try:
        # A range on the indexed column, not LIKE: '%' and '_' in what was typed stay literal.
        bounds = (prefix, prefix + "\U0010ffff")
        if column == "id":
            sql = "SELECT id, state, name FROM tasks WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?"
        else:
            sql = (f"SELECT DISTINCT {column} FROM tasks WHERE {column} >= ? AND {column} < ?"
                   f" ORDER BY {column} LIMIT ?")  # fmt: skip
        return [tuple("" if v is None else str(v) for v in row)
                for row in conn.execute(sql, (*bounds, limit))]  # fmt: skip
    except sqlite3.Error:
        return []
    finally:
        conn.close()
