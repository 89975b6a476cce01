"""The outbox: events waiting to be delivered, read and updated through the registry.

Rows are written by the registry in the transaction of the transition (or notice) that
caused them (``Registry.transition`` / ``add_notice``), so an event exists exactly when its
cause committed. Here: what is due, what a receiver is sent about it, and each delivery's
outcome. Every update is one short transaction; a process killed between a send and its
``record`` sends that event again next time (at least once; receivers drop duplicates by
the event id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .events import Notice
from .registry import Registry

PENDING, DONE, GIVEN_UP = "pending", "done", "given_up"
NO_RULE = "no_rule"  # no rule wanted it: kept for the record, hidden from `events list`

_SELECT = (
    "SELECT o.event_id, o.task_id, o.status, o.tries, o.next_try_at, o.done, o.last_error,"
    " o.created_at, o.delivered_at, e.at, e.kind, e.from_state, e.to_state, e.attempt, e.detail,"
    " t.name, t.project, t.cluster, t.state AS task_state, t.reason, t.metadata, t.spec,"
    " a.nodes, a.stderr_tail"
    " FROM outbox o JOIN events e ON e.id = o.event_id JOIN tasks t ON t.id = o.task_id"
    " LEFT JOIN attempts a ON a.task_id = o.task_id AND a.number = e.attempt"
)


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row with its event and task, as ``events list`` shows it."""

    notice: Notice
    status: str
    next_try_at: float
    last_error: str | None
    delivered_at: float | None
    task_urls: tuple[str, ...]  # the task's own --notify URLs

    def to_dict(self) -> dict[str, Any]:
        n = self.notice
        return {"event_id": n.key, "task": n.task_id, "name": n.name, "event": n.kind,
                "at": n.at, "status": self.status, "tries": n.tries, "delivered": list(n.done),
                "next_try_at": self.next_try_at if self.status == PENDING else None,
                "last_error": self.last_error, "delivered_at": self.delivered_at,
                "project": n.project, "cluster": n.cluster, "attempt": n.attempt}  # fmt: skip


def _entry(r: Any) -> OutboxEntry:
    kind = r["to_state"] if r["kind"] == "state" else r["kind"]
    # The task's reason belongs to this event while the task is still in that state.
    reason = r["reason"] if r["task_state"] == kind else (r["detail"] or None)
    spec = json.loads(r["spec"])
    notice = Notice(event_id=r["event_id"], task_id=r["task_id"], kind=kind, at=r["at"],
                    name=r["name"] or "", project=r["project"], cluster=r["cluster"],
                    from_state=r["from_state"], reason=reason, attempt=r["attempt"],
                    node=r["nodes"], detail=r["detail"] or "", stderr_tail=r["stderr_tail"],
                    metadata=json.loads(r["metadata"] or "{}"), tries=r["tries"],
                    done=tuple(json.loads(r["done"] or "[]")))  # fmt: skip
    return OutboxEntry(notice, r["status"], r["next_try_at"], r["last_error"], r["delivered_at"],
                       tuple(spec.get("notify") or ()))  # fmt: skip


def due(reg: Registry, now: float | None = None, limit: int = 2000) -> list[OutboxEntry]:
    """Pending entries whose next try is due, oldest first."""
    rows = reg.conn.execute(f"{_SELECT} WHERE o.status = ? AND o.next_try_at <= ? ORDER BY o.event_id LIMIT ?",
                            (PENDING, time.time() if now is None else now, limit))  # fmt: skip
    return [_entry(r) for r in rows]


def entries(reg: Registry, *, pending: bool = False, task_id: str | None = None,
            limit: int = 200, everything: bool = False) -> list[OutboxEntry]:  # fmt: skip
    """The newest ``limit`` entries some rule wanted (every one with ``everything``; only
    undelivered ones with ``pending``), oldest first."""
    where: list[str] = [] if everything else [f"o.status != '{NO_RULE}'"]
    params: list[Any] = []
    if pending:
        where.append("o.status = ?")
        params.append(PENDING)
    if task_id:
        where.append("o.task_id = ?")
        params.append(task_id)
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY o.event_id DESC LIMIT ?"
    rows = reg.conn.execute(sql, [*params, limit]).fetchall()
    return [_entry(r) for r in reversed(rows)]


def mark_delivered(reg: Registry, event_ids: Sequence[int], target: str) -> None:
    """Record that ``target`` (a rule's URL or command) has these events, at once after it
    took them: a crash later resends only what was not recorded."""
    with reg.transaction() as c:
        for eid in event_ids:
            row = c.execute("SELECT done FROM outbox WHERE event_id = ?", (eid,)).fetchone()
            if row is None:
                continue
            done = json.loads(row[0] or "[]")
            if target not in done:
                c.execute("UPDATE outbox SET done = ? WHERE event_id = ?", (json.dumps([*done, target]), eid))


def finish(reg: Registry, event_id: int, status: str, *, tries: int, next_try_at: float,
           error: str | None) -> None:  # fmt: skip
    """The outcome of this round for one event: done, given up, or pending until
    ``next_try_at``."""
    with reg.transaction() as c:
        c.execute("UPDATE outbox SET status = ?, tries = ?, next_try_at = ?, last_error = ?,"
                  " delivered_at = CASE WHEN ? = 'done' THEN ? ELSE delivered_at END WHERE event_id = ?",
                  (status, tries, next_try_at, error, status, time.time(), event_id))  # fmt: skip


def finish_quietly(reg: Registry, event_ids: Sequence[int]) -> None:
    """Events no rule wants: marked so, in one statement per chunk."""
    with reg.transaction() as c:
        for i in range(0, len(event_ids), 500):
            chunk = list(event_ids[i : i + 500])
            c.execute(f"UPDATE outbox SET status = '{NO_RULE}' WHERE event_id IN"
                      f" ({', '.join('?' * len(chunk))})", chunk)  # fmt: skip


def prune(reg: Registry, older_than: float) -> int:
    """Forget finished rows (delivered, given up, wanted by no rule) created before
    ``older_than``; the events themselves stay in the task's history."""
    with reg.transaction() as c:
        cur = c.execute("DELETE FROM outbox WHERE status != ? AND created_at < ?", (PENDING, older_than))
    return int(cur.rowcount or 0)


def counts(reg: Registry) -> dict[str, int]:
    return {r[0]: r[1] for r in reg.conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status")}


__all__ = ["OutboxEntry", "counts", "due", "entries", "finish", "mark_delivered", "prune"]
