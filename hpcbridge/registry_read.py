"""A read-only view of a registry file for ``tasks list``: rows straight from SQLite into
``TaskRow``s, without the model's dataclasses, ``config`` or ``Registry`` (the start-up of a
listing, benchmarks/bench_startup.py).

It reads only a file that has the schema of this hpcbridge (every migration of
``registry_file.MIGRATION_NAMES`` recorded). ``RegistryReader.open`` answers None for any
other file (an older schema, not a registry, not a regular file): the caller then opens
the full ``Registry``, which migrates it or says what is wrong, as before. A path where
nothing exists yet reads as an empty registry, and no file is created. The SQL is
``registry_queries``', the one ``Registry`` runs.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import RegistryBusy, RegistryError
from .registry_file import BUSY_TIMEOUT_MS, MIGRATION_NAMES
from .registry_queries import current_attempts, task_select
from .states import TaskState
from .task_rows import ROW_COLUMNS, TaskRow

CHUNK = 500  # ids per IN (...) query: well under SQLite's parameter limit


def _uri(path: str) -> str:
    """A ``file:`` URI of ``path`` opened read-write but never created (``mode=rw``): the
    characters a SQLite URI gives a meaning to are escaped."""
    quoted = os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=rw"


def _error(path: str, exc: sqlite3.Error) -> RegistryError:
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return RegistryBusy(f"registry {path} is locked: {exc}",
                            hint="another hpcbridge process holds it for too long; try again")  # fmt: skip
    return RegistryError(f"cannot read registry {path}: {exc}",
                         hint="check the path (--db / HPCBRIDGE_DB) and its permissions")  # fmt: skip


def current_usage(conn: sqlite3.Connection, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The recorded usage (decoded JSON) of each task's current attempt, by task id, where
    it has one: one query per CHUNK tasks, reading the usage column alone."""
    out: dict[str, Mapping[str, Any]] = {}
    ids = list(task_ids)
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        rows = conn.execute(current_attempts("a.task_id, a.usage", len(part)) + " AND a.usage IS NOT NULL", part)
        fetched = [(tid, usage) for tid, usage in rows if usage]
        if fetched:
            import json

            for tid, usage in fetched:
                value = json.loads(usage)
                if value:
                    out[tid] = value
    return out


class RegistryReader:
    """Reads tasks from a registry file of the current schema (``conn``), or from no file
    at all (``conn`` None: an empty registry). Not shared between threads."""

    def __init__(self, path: str, conn: sqlite3.Connection | None) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, path: str) -> RegistryReader | None:
        """A reader of ``path``, or None when only the full ``Registry`` should open it."""
        if not os.path.lexists(path):
            return cls(path, None)
        if not os.path.isfile(path):
            return None
        try:
            # The same wait for a writer's lock as Registry's connection.
            conn = sqlite3.connect(_uri(path), uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise _error(path, exc) from None
            return None  # no _migrations table (a new or a foreign file): Registry decides
        except sqlite3.Error:
            conn.close()
            return None  # not a database: Registry says so, with its hint
        if not all(name in done for name in MIGRATION_NAMES):
            conn.close()
            return None  # an older schema: Registry migrates it
        return cls(path, conn)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def list_tasks(self, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                   limit: int | None = None, project: str | None = None,
                   metadata: Mapping[str, str | None] | None = None) -> list[TaskRow]:  # fmt: skip
        """``Registry.list_tasks`` (newest first) as ``TaskRow``s."""
        if self.conn is None:
            return []
        found = task_select(ROW_COLUMNS, states=states, cluster=cluster, project=project,
                            metadata=metadata, limit=limit)  # fmt: skip
        if found is None:
            return []
        sql, params = found
        try:
            return [TaskRow(r) for r in self.conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    def current_usage(self, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """``Registry.current_usage``."""
        if self.conn is None or not task_ids:
            return {}
        try:
            return current_usage(self.conn, task_ids)
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None
