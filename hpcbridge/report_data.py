"""What a report shows, as plain data: built from registry records, no I/O. Pure.

``build_report`` is the one model behind ``hpcbridge report --json`` and the HTML page
(``report_html``): a summary with counts by state, a timeline of every attempt (queue and run
phases, requeues marked), efficiency per task (low figures flagged with the cluster's
thresholds), failures with their reason and stderr tail, and a sweep's parameters as a table.
``task_records`` is the flat form of a task listing (``tasks list --format``, ``to_records``).

Timeline phases come from the task's state events (what the sync saw, in order), so a
Slurm-side requeue inside one attempt (running -> node_failed/preempted -> queued) shows as
two run phases with a mark between them; an attempt that ran once uses the scheduler's own
submit/start/end times instead, which are exact where the sync's observation times lag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .report import duration, efficiency, failure, iso

if TYPE_CHECKING:  # a listing's records may be of TaskRows (ListedTask): no model classes needed
    from .models import Attempt, Event, Task
    from .slurm.usage import Thresholds
    from .task_rows import ListedTask

# Which timeline phase a state opens (states not listed close the open phase).
PHASE_OF_STATE = {
    "submitting": "submit", "queued": "queue", "held": "held", "running": "run",
    "suspended": "suspended", "completing": "run", "preempted": "interrupted",
    "node_failed": "interrupted",
}  # fmt: skip
# States that mean "the job was interrupted and comes back": a requeue mark.
REQUEUE_STATES = frozenset({"preempted", "node_failed"})

# The fixed columns of a task record, in order (metadata keys follow them).
RECORD_COLUMNS = ("id", "name", "state", "cluster", "project", "attempts", "created_at",
                  "submitted_at", "started_at", "ended_at", "queue_seconds", "run_seconds",
                  "exit_code", "reason")  # fmt: skip
USAGE_COLUMNS = ("cpu_efficiency", "mem_efficiency", "core_hours")


def metadata_keys(tasks: Sequence[ListedTask]) -> list[str]:
    """The metadata keys of these tasks in order of first appearance (a sweep's parameters
    come in the order they were given)."""
    seen: dict[str, None] = {}
    for t in tasks:
        for key in t.metadata:
            seen.setdefault(key, None)
    return list(seen)


def record_key(key: str, *, usage: bool = False) -> str:
    """The column a metadata key gets in a record: the key itself, or ``meta.<key>`` when it
    would clash with a fixed column (a parameter called ``state`` stays apart from the
    task's state)."""
    fixed = RECORD_COLUMNS + (USAGE_COLUMNS if usage else ())
    return f"meta.{key}" if key in fixed or key.startswith("meta.") else key


def task_records(tasks: Sequence[ListedTask], usage: Mapping[str, Mapping[str, Any]] | None = None,
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """One flat dict per task (what ``tasks list`` shows, plus the timestamps and every
    metadata key as a column, ``None`` where a task lacks it), so
    ``pandas.DataFrame(records)`` takes them as is. With ``usage`` (task id -> the recorded
    usage of its current attempt) the efficiency columns are added too."""
    keys = metadata_keys(tasks)
    out = []
    for t in tasks:
        rec: dict[str, Any] = {
            "id": t.id, "name": t.name, "state": t.state.value, "cluster": t.cluster,
            "project": t.project, "attempts": t.attempt_count, "created_at": iso(t.created_at),
            "submitted_at": iso(t.submitted_at), "started_at": iso(t.started_at),
            "ended_at": iso(t.ended_at), "queue_seconds": t.queue_seconds,
            "run_seconds": t.run_seconds, "exit_code": t.exit_code, "reason": t.reason,
        }  # fmt: skip
        if usage is not None:
            u = usage.get(t.id) or {}
            rec.update({k: u.get(k) for k in USAGE_COLUMNS})
        for key in keys:
            rec[record_key(key, usage=usage is not None)] = t.metadata.get(key)
        out.append(rec)
    return out


# ------------------------------------------------------------------------------ timeline
def _segments(att: Attempt, events: Sequence[Event], now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(phases, requeue marks) of one attempt from its state events."""
    segs: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    open_phase: tuple[str, float] | None = None

    def close(at: float) -> None:
        nonlocal open_phase
        if open_phase is not None:
            phase, start = open_phase
            if phase != "submit":
                segs.append({"phase": phase, "start": start, "end": max(at, start), "open": False})
            open_phase = None

    for e in events:
        to = e.to_state or ""
        phase = PHASE_OF_STATE.get(to)
        if open_phase is not None and phase == open_phase[0]:
            continue  # running -> completing: still the run phase
        close(e.at)
        if to in REQUEUE_STATES:
            marks.append({"at": e.at, "cause": to, "detail": e.detail})
        if phase is not None:
            open_phase = (phase, e.at)
    if open_phase is not None:
        phase, start = open_phase
        end = att.ended_at if att.ended_at and att.ended_at >= start else now
        if phase != "submit":
            segs.append({"phase": phase, "start": start, "end": max(end, start),
                         "open": att.ended_at is None})  # fmt: skip
    if not marks and att.submitted_at:
        # One run: the scheduler's own times are exact where the sync's observations lag.
        exact: list[dict[str, Any]] = []
        start_run = att.started_at
        end_queue = start_run if start_run else (att.ended_at or now)
        if end_queue >= att.submitted_at:
            exact.append({"phase": "queue", "start": att.submitted_at, "end": end_queue,
                          "open": start_run is None and att.ended_at is None})  # fmt: skip
        if start_run:
            end_run = att.ended_at if att.ended_at and att.ended_at >= start_run else now
            exact.append({"phase": "run", "start": start_run, "end": end_run, "open": att.ended_at is None})
        held = [s for s in segs if s["phase"] in ("held", "suspended")]
        if exact and not held:
            segs = exact
    return segs, marks


def timeline(tasks: Sequence[Task], attempts: Mapping[str, Sequence[Attempt]],
             events: Mapping[str, Sequence[Event]], now: float) -> dict[str, Any]:  # fmt: skip
    """One row per attempt (oldest task first): its phases (``queue``, ``held``, ``run``,
    ``suspended``, ``interrupted``) with start and end (epoch seconds; ``open`` while it
    lasts) and its requeue marks; ``start``/``end`` span every row."""
    rows: list[dict[str, Any]] = []
    for t in tasks:
        by_attempt: dict[int, list[Event]] = {}
        current = 1
        for e in events.get(t.id, ()):
            if e.kind != "state":
                continue
            current = e.attempt if e.attempt is not None else current
            by_attempt.setdefault(current, []).append(e)
        for att in attempts.get(t.id, ()):
            segs, marks = _segments(att, by_attempt.get(att.number, []), now)
            rows.append({"task": t.id, "name": t.name, "attempt": att.number, "job_id": att.job_id,
                         "state": att.state.value, "restarts": att.restarts, "nodes": att.nodes,
                         "segments": segs, "requeues": marks})  # fmt: skip
    times: list[float] = []
    for r in rows:
        times += [s[k] for s in r["segments"] for k in ("start", "end")] + [m["at"] for m in r["requeues"]]
    return {"start": min(times) if times else None, "end": max(times) if times else None, "rows": rows}


# ------------------------------------------------------------------------------ the report
def _efficiency(attempts: Sequence[Attempt], thresholds: Thresholds | None) -> dict[str, Any] | None:
    eff = efficiency(attempts, thresholds)
    if eff is None:
        return None
    from .slurm.usage import Thresholds

    t = thresholds or Thresholds()
    cpu, mem = eff.get("cpu_efficiency"), eff.get("mem_efficiency")
    return {
        "attempt": eff["attempt"], "cpu_efficiency": cpu, "mem_efficiency": mem,
        "core_hours": eff.get("core_hours"), "alloc_cpus": eff.get("alloc_cpus"),
        "max_rss_bytes": eff.get("max_rss_bytes"), "alloc_mem_bytes": eff.get("alloc_mem_bytes"),
        "elapsed_seconds": eff.get("elapsed_seconds"), "summary": eff["summary"],
        "warnings": eff["warnings"], "low_cpu": cpu is not None and cpu < t.min_cpu_efficiency,
        "low_mem": mem is not None and mem < t.min_mem_efficiency,
        "high_mem": mem is not None and mem > t.max_mem_efficiency,
    }  # fmt: skip


def build_report(tasks: Sequence[Task], attempts: Mapping[str, Sequence[Attempt]],
                 events: Mapping[str, Sequence[Event]], *, now: float, title: str = "hpcbridge report",
                 scope: Mapping[str, Any] | None = None,
                 thresholds: Mapping[str, Thresholds] | None = None, lines: int = 10) -> dict[str, Any]:  # fmt: skip
    """The report over these tasks (in the order given) as plain, JSON-ready data.
    ``attempts``/``events``: each task's, oldest first; ``thresholds``: per cluster, when
    an efficiency is low (the cluster's ``warn_*`` settings); ``lines``: stderr lines kept
    per failure."""
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    rows: list[dict[str, Any]] = []
    failures = []
    core_hours = 0.0
    for t in tasks:
        atts = attempts.get(t.id, [])
        eff = _efficiency(atts, (thresholds or {}).get(t.cluster))
        core_hours += sum(float((a.usage or {}).get("core_hours") or 0.0) for a in atts)
        rows.append({"id": t.id, "name": t.name, "state": t.state.value, "cluster": t.cluster,
                     "project": t.project, "attempts": t.attempt_count, "restarts": sum(a.restarts for a in atts),
                     "created_at": iso(t.created_at), "queue": duration(t.queue_seconds),
                     "run": duration(t.run_seconds), "queue_seconds": t.queue_seconds,
                     "run_seconds": t.run_seconds, "exit_code": t.exit_code, "reason": t.reason,
                     "metadata": dict(t.metadata), "efficiency": eff})  # fmt: skip
        fail = failure(t, atts, lines)
        if fail is not None:
            failures.append({"id": t.id, "name": t.name, "state": t.state.value, "reason": t.reason, **fail})
    tl = timeline(tasks, attempts, events, now)
    keys = metadata_keys(tasks)
    requeues = sum(len(r["requeues"]) for r in tl["rows"])
    return {
        "title": title,
        "generated_at": iso(now),
        "scope": dict(scope or {}),
        "summary": {
            "tasks": len(tasks), "counts": dict(sorted(counts.items())),
            "attempts": sum(len(attempts.get(t.id, [])) for t in tasks), "requeues": requeues,
            "failures": len(failures), "core_hours": core_hours,
            "low_efficiency": sum(1 for r in rows if r["efficiency"] and (r["efficiency"]["low_cpu"] or r["efficiency"]["low_mem"])),  # noqa: E501
            "first": iso(tl["start"]), "last": iso(tl["end"]),
            "clusters": sorted({t.cluster for t in tasks}),
        },  # fmt: skip
        "tasks": rows,
        "timeline": tl,
        "failures": failures,
        "parameters": {"columns": keys,
                       "rows": [{"id": t.id, "state": t.state.value, "values": {k: t.metadata.get(k) for k in keys}}
                                for t in tasks]},  # fmt: skip
    }
