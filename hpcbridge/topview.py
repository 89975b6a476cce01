"""The view-model of ``hpcbridge top``: rows, counts, sorting, filtering. Pure: no I/O.

The app (``tui.py``) reads the registry's narrow rows (``Registry.top_rows`` and
``top_events``) every refresh and hands them to :meth:`TopModel.apply`, which compares each
raw tuple with the one it kept and rebuilds only the rows that changed (JSON parsed only
there). :meth:`TopModel.visible` orders and filters the ids; :func:`line` formats one row to
a fixed width, so a redraw formats only the lines on screen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .lifecycle import TaskState
from .report import duration

S = TaskState
STATE_ORDER = {s: i for i, s in enumerate(TaskState)}
WAITING_STATES = frozenset({S.QUEUED, S.HELD, S.RETRYING, S.PREEMPTED, S.NODE_FAILED})

# (heading, width); the last column takes what is left of the line.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("ID", 13), ("STATE", 13), ("ATT", 3), ("WAIT/RUN", 12), ("CPU%", 4), ("MEM%", 4),
    ("PROJECT", 10), ("LAST EVENT", 0),
)  # fmt: skip

SORTS: tuple[str, ...] = ("newest", "state", "time", "cpu", "mem", "project")
STATE_FILTERS: tuple[str, ...] = ("all", "active", "finished", "failing")


@dataclass(frozen=True)
class TopRow:
    """One task as ``top`` shows it."""

    id: str
    name: str
    cluster: str
    project: str | None
    state: TaskState
    attempt: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    reason: str | None
    job_id: str | None = None
    wait_reason: str | None = None  # Slurm's pending reason, as the last sync saw it
    cpu: float | None = None  # CPU efficiency of the current attempt (0..1), from accounting
    mem: float | None = None  # peak memory / requested
    last_event: str = ""
    last_event_at: float | None = None

    def run_seconds(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else (now if self.state == S.RUNNING else None)
        return None if end is None else max(0.0, end - self.started_at)


def _json(text: Any) -> Mapping[str, Any]:
    if not text:
        return {}
    try:
        got = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


def row_from_record(rec: Sequence[Any], event: tuple[str, float | None] = ("", None)) -> TopRow:
    """A row from one ``TOP_ROWS`` tuple (and the task's last event text and time)."""
    (tid, name, cluster, project, state, attempts, created, started, ended, reason,
     job_id, att_started, queue, usage) = rec  # fmt: skip
    q, u = _json(queue), _json(usage)
    try:
        st = TaskState(state)
    except ValueError:  # a state of a newer hpcbridge: show the task as lost rather than fail
        st = S.LOST
    return TopRow(id=tid, name=name or "", cluster=cluster, project=project, state=st,
                  attempt=int(attempts or 0), created_at=float(created), started_at=att_started or started,
                  ended_at=ended, reason=reason, job_id=job_id,
                  wait_reason=q.get("reason") if isinstance(q.get("reason"), str) else None,
                  cpu=_num(u.get("cpu_efficiency")), mem=_num(u.get("mem_efficiency")),
                  last_event=event[0], last_event_at=event[1])  # fmt: skip


def event_text(kind: str, from_state: str | None, to_state: str | None, detail: str | None) -> str:
    """``queued->running``, or ``warning: ...`` for an event that moved nothing."""
    if to_state:
        move = f"{from_state or ''}->{to_state}"
        return f"{move} {detail}".strip() if detail and kind == "state" and detail != to_state else move
    return f"{kind}: {detail}" if detail else kind


def time_cell(row: TopRow, now: float) -> str:
    """Why a waiting task waits (Slurm's reason), else how long it ran (or runs)."""
    if row.state in WAITING_STATES and row.wait_reason:
        return row.wait_reason
    if row.state in (S.CREATED, S.STAGING, S.SUBMITTING, S.QUEUED, S.HELD):
        return "wait " + duration(max(0.0, now - row.created_at))
    return duration(row.run_seconds(now))


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _fit(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    if len(text) > width:
        return text[: max(0, width - 1)] + "~" if width > 1 else text[:width]
    return text.ljust(width)


def heading(width: int) -> str:
    return line_of([name for name, _ in COLUMNS], width)


def line_of(cells: Sequence[str], width: int) -> str:
    out, used = [], 0
    for (_, w), cell in zip(COLUMNS, cells, strict=True):
        w = w or max(0, width - used)
        out.append(_fit(cell, w))
        used += w + 1
    return " ".join(out)[:width].ljust(width)


def cells(row: TopRow, now: float) -> list[str]:
    state = row.state.value + ("!" if (row.reason or "").startswith("warning:") else "")
    return [row.id, state, str(row.attempt), time_cell(row, now), pct(row.cpu), pct(row.mem),
            row.project or "-", row.last_event]  # fmt: skip


def line(row: TopRow, now: float, width: int) -> str:
    """One table line of exactly ``width`` characters."""
    return line_of(cells(row, now), width)


def counts(rows: Iterable[TopRow]) -> dict[tuple[str, str | None], dict[TaskState, int]]:
    """Tasks by state per (cluster, project)."""
    out: dict[tuple[str, str | None], dict[TaskState, int]] = {}
    for r in rows:
        group = out.setdefault((r.cluster, r.project), {})
        group[r.state] = group.get(r.state, 0) + 1
    return out


def states_text(by_state: Mapping[TaskState, int]) -> str:
    return ", ".join(f"{n} {s.value}" for s, n in sorted(by_state.items(), key=lambda kv: STATE_ORDER[kv[0]]))


def age_text(seconds: float | None) -> str:
    return "never" if seconds is None else duration(max(0.0, seconds)) + " ago"


def header_lines(rows: Iterable[TopRow], last_seen: Mapping[str, float], now: float, *,
                 max_lines: int = 4) -> list[str]:  # fmt: skip
    """The header: totals, then counts by state per cluster and project (the biggest groups
    first, the rest folded into one line), with the age of each cluster's last sync."""
    return header_lines_of(counts(rows), last_seen, now, max_lines=max_lines)


def header_lines_of(by_group: Mapping[tuple[str, str | None], Mapping[TaskState, int]],
                    last_seen: Mapping[str, float], now: float, *, max_lines: int = 4) -> list[str]:  # fmt: skip
    """:func:`header_lines` from counts already made (:func:`counts`)."""
    total: dict[TaskState, int] = {}
    for group in by_group.values():
        for s, n in group.items():
            total[s] = total.get(s, 0) + n
    n_tasks = sum(total.values())
    clusters = sorted({c for c, _ in by_group} | set(last_seen))
    synced = ", ".join(f"{c} {age_text(now - last_seen[c] if c in last_seen else None)}" for c in clusters)
    lines = [f"{n_tasks} tasks: {states_text(total) or 'none'}", f"last sync: {synced or 'never'}"]
    groups = sorted(by_group.items(), key=lambda kv: (-sum(kv[1].values()), kv[0][0], kv[0][1] or ""))
    room = max(0, max_lines - len(lines))
    shown = groups if len(groups) <= room else groups[: max(0, room - 1)]
    for (cluster, project), by_state in shown:
        lines.append(f"{cluster}/{project or '-'}: {states_text(by_state)}")
    if len(shown) < len(groups):
        lines.append(f"... {len(groups) - len(shown)} more cluster/project group(s)")
    return lines


def matches(row: TopRow, *, project: str | None, state: str) -> bool:
    """``state`` is a state's value or one of STATE_FILTERS."""
    if project is not None and row.project != project:
        return False
    if state == "all":
        return True
    if state == "active":
        return not row.state.terminal
    if state == "finished":
        return row.state.terminal
    if state == "failing":
        return row.state.terminal and row.state != S.SUCCEEDED
    return row.state.value == state


def sort_key(name: str, now: float) -> Any:
    if name == "newest":
        return lambda r: r.id
    if name == "state":
        return lambda r: (STATE_ORDER[r.state], r.id)
    if name == "time":
        return lambda r: (r.run_seconds(now) or 0.0, r.id)
    if name == "cpu":
        return lambda r: (r.cpu if r.cpu is not None else -1.0, r.id)
    if name == "mem":
        return lambda r: (r.mem if r.mem is not None else -1.0, r.id)
    if name == "project":
        return lambda r: (r.project or "", r.id)
    raise ValueError(f"unknown sort {name!r}; one of {', '.join(SORTS)}")


def order(rows: Iterable[TopRow], *, sort: str = "newest", reverse: bool | None = None,
          project: str | None = None, state: str = "all", now: float = 0.0) -> list[TopRow]:  # fmt: skip
    """The rows shown, filtered and sorted. By default ``newest`` (ids sort by creation) and
    the measures (time, cpu, mem) put the biggest first; state and project go ascending."""
    desc = sort in ("newest", "time", "cpu", "mem") if reverse is None else reverse
    kept = [r for r in rows if matches(r, project=project, state=state)]
    kept.sort(key=sort_key(sort, now), reverse=desc)
    return kept


def next_in(options: Sequence[Any], current: Any) -> Any:
    """The option after ``current`` (wrapping round; the first when current is not there)."""
    options = list(options)
    try:
        return options[(options.index(current) + 1) % len(options)]
    except ValueError:
        return options[0]


@dataclass
class Changes:
    added: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


class TopModel:
    """The rows ``top`` knows, updated in place from the registry's raw tuples."""

    def __init__(self) -> None:
        self.rows: dict[str, TopRow] = {}
        self.raw: dict[str, tuple[Any, ...]] = {}
        self.events: dict[str, tuple[str, float | None]] = {}
        self.last_event_id = 0

    def apply(self, records: Iterable[Sequence[Any]], events: Iterable[Sequence[Any]], *,
              full: bool = True) -> Changes:  # fmt: skip
        """Take a read of ``TOP_ROWS`` (``full``: of every task, so a task not in it is gone;
        else of some tasks, e.g. those written lately) and the ``TOP_EVENTS`` after
        ``last_event_id``; return which ids were added, changed or removed. Only those rows
        are rebuilt."""
        ch = Changes()
        for ev_id, tid, at, kind, from_state, to_state, detail in events:
            self.events[tid] = (event_text(kind, from_state, to_state, detail), at)
            self.last_event_id = max(self.last_event_id, int(ev_id))
            ch.changed.add(tid)
        seen = set()
        for rec in records:
            tid = rec[0]
            seen.add(tid)
            raw = tuple(rec)
            old = self.raw.get(tid)
            if old is None:
                ch.added.add(tid)
            elif old == raw and tid not in ch.changed:
                continue
            else:
                ch.changed.add(tid)
            self.raw[tid] = raw
            self.rows[tid] = row_from_record(raw, self.events.get(tid, ("", None)))
        for tid in set(self.raw) - seen if full else ():
            ch.removed.add(tid)
            del self.raw[tid]
            self.rows.pop(tid, None)
            self.events.pop(tid, None)
        ch.changed -= ch.added | ch.removed
        ch.changed &= set(self.rows)
        return ch


__all__ = ["COLUMNS", "SORTS", "STATE_FILTERS", "Changes", "TopModel", "TopRow", "age_text", "cells",
           "counts", "event_text", "header_lines", "header_lines_of", "heading", "line", "line_of", "matches", "next_in",
           "order", "pct", "row_from_record", "sort_key", "states_text", "time_cell"]  # fmt: skip
