"""Pure formatting of tasks for people and for JSON (used by the CLI and ``Task.info``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

# Diagnostics and Slurm's usage figures are imported where a report needs them: the task
# listing (``duration``, ``iso``, ``task_summary``) starts without them, and without the
# model's classes (it may show ``TaskRow``s: ``ListedTask``).
if TYPE_CHECKING:
    from .models import Attempt, Event, Task
    from .slurm.usage import Thresholds, Usage
    from .task_rows import ListedTask


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def format_size(n: float | None) -> str:
    """Bytes for people (``310.8 MiB``): ``slurm.usage.format_size``."""
    from .slurm.usage import format_size as fmt

    return fmt(n)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def task_summary(task: ListedTask) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.name,
        "cluster": task.cluster,
        "state": task.state.value,
        "created_at": iso(task.created_at),
        "attempts": task.attempt_count,
        "exit_code": task.exit_code,
        "reason": task.reason,
    }


def attempt_dict(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "job_id": a.job_id,
        "state": a.state.value,
        "partition": a.partition,
        "nodes": a.nodes,
        "submitted_at": iso(a.submitted_at),
        "started_at": iso(a.started_at),
        "ended_at": iso(a.ended_at),
        "queue_seconds": (a.started_at - a.submitted_at) if a.started_at and a.submitted_at else None,
        "run_seconds": (a.ended_at - a.started_at) if a.ended_at and a.started_at else None,
        "exit_code": a.exit_code,
        "signal": a.signal,
        "restarts": a.restarts,
        "reason": a.reason,
        "token": a.token,
        "usage": dict(a.usage) if a.usage else None,
        "queue": dict(a.queue) if a.queue else None,
        "stderr_tail": a.stderr_tail,
        "stdout_tail": a.stdout_tail,
    }


def event_dict(e: Event) -> dict[str, Any]:
    return {
        "at": iso(e.at),
        "kind": e.kind,
        "source": e.source,
        "from": e.from_state,
        "to": e.to_state,
        "attempt": e.attempt,
        "detail": e.detail,
    }


def _masked_spec(task: Task) -> dict[str, Any]:
    spec = task.spec.to_dict()
    if spec.get("notify"):  # notification URLs carry tokens: never shown in full
        from .events import mask_url

        spec["notify"] = [mask_url(u) for u in spec["notify"]]
    return spec


def task_info(task: Task, attempts: Sequence[Attempt], events: Sequence[Event], *,
              lines: int = 10, thresholds: Thresholds | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        **task_summary(task),
        "spec": _masked_spec(task),
        "metadata": dict(task.metadata),
        "timings": {
            "created": iso(task.created_at),
            "submitted": iso(task.submitted_at),
            "started": iso(task.started_at),
            "ended": iso(task.ended_at),
            "fetched": iso(task.fetched_at),
            "queue_seconds": task.queue_seconds,
            "run_seconds": task.run_seconds,
        },
        "work_dir": task.work_dir,
        "output_dir": task.output_dir,
        "next_attempt_at": iso(task.next_attempt_at),
        "excluded_nodes": list(task.excluded_nodes),
        "cancel_requested": task.cancel_requested,
        "attempts": [attempt_dict(a) for a in attempts],
        "phases": phases(task, attempts, events),
        "failure": failure(task, attempts, lines),
        "usage": efficiency(attempts, thresholds),
        "queue": waiting(task, attempts),
        "events": [event_dict(e) for e in events],
    }


PHASES = ("staging", "submit", "eligible_wait", "queue", "run", "completing", "fetch")


def phases(task: Task, attempts: Sequence[Attempt], events: Sequence[Event]) -> dict[str, Any]:
    """Where the time went, per attempt and for the task, in seconds: staging (upload),
    submit (the write-ahead commit to sbatch's answer), eligible_wait (a dependency or begin
    time: not the queue's fault), queue (eligible to start), run, completing, fetch. Queue
    time counts from when the job was eligible (``eligible_at``, seen by the sync's queue
    insight) when known, else from submission."""
    entered: dict[str, float] = {}  # state -> when the task last entered it
    spans: dict[int | None, dict[str, float]] = {}
    latest = attempts[-1].number if attempts else None

    def add(att: int | None, name: str, start: float | None, end: float | None) -> None:
        if start is not None and end is not None and end >= start:
            spans.setdefault(att, {}).setdefault(name, 0.0)
            spans[att][name] += end - start

    for e in events:
        if e.kind != "state" or not e.to_state:
            continue
        if e.from_state in ("staging", "submitting", "completing", "fetching"):
            name = {"staging": "staging", "submitting": "submit", "completing": "completing",
                    "fetching": "fetch"}[e.from_state]  # fmt: skip
            att_no = 1 if e.from_state == "staging" else (e.attempt or latest)
            add(att_no, name, entered.get(e.from_state), e.at)
        entered[e.to_state] = e.at
    per_attempt = []
    totals: dict[str, float] = {}
    for a in attempts:
        got = spans.get(a.number, {})
        begin = a.eligible_at if a.eligible_at and a.submitted_at and a.eligible_at >= a.submitted_at else None
        if begin is not None:
            add(a.number, "eligible_wait", a.submitted_at, begin)
        add(a.number, "queue", begin or a.submitted_at, a.started_at)
        add(a.number, "run", a.started_at, a.ended_at if a.ended_at and a.started_at and a.ended_at >= a.started_at else None)
        got = spans.get(a.number, got)
        per_attempt.append({"attempt": a.number, **{p: got.get(p) for p in PHASES}})
        for p, v in got.items():
            totals[p] = totals.get(p, 0.0) + v
    end = task.fetched_at or task.ended_at
    return {
        "attempts": per_attempt,
        "total_seconds": (end - task.created_at) if end else None,
        "by_phase": totals,
        "dominant": max(totals, key=lambda k: totals[k]) if totals else None,
    }


def failure(task: Task, attempts: Sequence[Attempt], lines: int = 10) -> dict[str, Any] | None:
    """For a task that did not succeed: how its last attempt ended, what probably went wrong
    and what to do (``diagnostics.diagnose``), and the last lines of its stderr (stdout when
    stderr is empty), as kept when it ended."""
    if task.state.value == "succeeded" or not attempts or not (task.state.terminal or task.reason):
        return None
    from .diagnostics import describe_exit, diagnose

    att = attempts[-1]
    usage = _usage(att.usage)
    # Why it waited matters only for a job that never started (a dependency that can never
    # be met); once it ran, a stale pending reason ("Priority") would mislead the hint.
    reason = (att.queue or {}).get("reason") if att.queue and att.started_at is None else None
    d = diagnose(task.state, att.exit_code, att.signal, att.stderr_tail, att.stdout_tail,
                 usage, reason, lines=lines)  # fmt: skip
    known = att.exit_code is not None or att.signal
    return {
        "attempt": att.number,
        "exit": describe_exit(att.exit_code, att.signal) if known else None,
        "node": att.nodes,
        "summary": d.summary,
        "hint": d.hint,
        "stream": d.tail_source or "stderr",
        "tail": list(d.tail),
    }


def _usage(data: Mapping[str, Any] | None) -> Usage | None:
    if not data:
        return None
    from .slurm.usage import Usage

    try:
        return Usage(**dict(data))
    except TypeError:  # written by another hpcbridge version
        return None


def efficiency(attempts: Sequence[Attempt],
               thresholds: Thresholds | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The usage of the latest attempt that has one, its summary line and warnings."""
    from .slurm.usage import efficiency_warnings

    for att in reversed(attempts):
        usage = _usage(att.usage)
        if usage is not None:
            return {"attempt": att.number, "summary": usage_summary(att.usage),
                    "warnings": efficiency_warnings(usage, thresholds), **dict(att.usage or {})}  # fmt: skip
    return None


def waiting(task: Task, attempts: Sequence[Attempt]) -> dict[str, Any] | None:
    """Why a queued or held task waits (reason explained, position, estimated start)."""
    if task.state.value not in ("queued", "held") or not attempts or not attempts[-1].queue:
        return None
    q = dict(attempts[-1].queue)
    q["estimated_start"] = iso(q.get("estimated_start"))
    return q


def format_info(info: dict[str, Any]) -> str:
    """Human-readable ``tasks info``."""
    t = info["timings"]
    lines = [
        f"task      {info['id']}  {info['name'] or ''}".rstrip(),
        f"state     {info['state']}" + (f"  ({info['reason']})" if info["reason"] else ""),
        f"cluster   {info['cluster']}",
        f"command   {_command(info['spec'])}",
        f"created   {t['created']}",
        f"submitted {t['submitted'] or '-'}   queued {duration(t['queue_seconds'])}",
        f"started   {t['started'] or '-'}   ran {duration(t['run_seconds'])}",
        f"ended     {t['ended'] or '-'}",
        f"fetched   {t['fetched'] or '-'}",
        f"work dir  {info['work_dir'] or '-'}",
        f"outputs   {info['output_dir'] or '-'}",
    ]
    if info["exit_code"] is not None:
        lines.append(f"exit code {info['exit_code']}")
    if info["metadata"]:
        lines.append("metadata")
        lines += [f"  {k} = {v}" for k, v in sorted(info["metadata"].items())]
    if info["attempts"]:
        lines.append("attempts")
        for a in info["attempts"]:
            lines.append(
                f"  #{a['number']} job {a['job_id'] or '?'} {a['state']}"
                f" partition={a['partition'] or '-'} nodes={a['nodes'] or '-'}"
                f" restarts={a['restarts']} exit={a['exit_code'] if a['exit_code'] is not None else '-'}"
                f" queued={duration(a['queue_seconds'])} ran={duration(a['run_seconds'])}"
                + (f" reason={a['reason']}" if a["reason"] else "")
            )
    q = info.get("queue")
    if q:
        where = f"; position {q['position']} of {q['of']} in its partition" if q.get("position") else ""
        start = f"; Slurm expects it to start {q['estimated_start']}" if q.get("estimated_start") else ""
        lines.append(f"waiting   {q.get('reason')}: {str(q.get('explanation') or '').rstrip('.')}{where}{start}")
        if q.get("action"):
            lines.append(f"          {q['action']}")
    ph = info.get("phases") or {}
    if ph.get("by_phase"):
        shown = ", ".join(f"{k} {duration(v)}" for k, v in ph["by_phase"].items() if v >= 0.05)
        lines.append(f"phases    {shown}" + (f"; most time in {ph['dominant']}" if ph.get("dominant") else ""))
    use = info.get("usage")
    if use:
        lines.append(f"usage     {use['summary']} (attempt {use['attempt']})")
        lines += [f"  warning: {w}" for w in use["warnings"]]
    fail = info.get("failure")
    if fail:
        on = f" on {fail['node']}" if fail["node"] and " on " not in fail["summary"] else ""
        lines.append(f"failure   attempt {fail['attempt']}: {fail['summary']}{on}")
        if fail.get("hint"):
            lines.append(f"  hint: {fail['hint']}")
        if fail["tail"]:
            lines.append(f"  last lines of {fail['stream']}:")
            lines += [f"  | {line}" for line in fail["tail"]]
    lines.append("events")
    for e in info["events"]:
        move = f"{e['from'] or ''} -> {e['to']}" if e["to"] else e["kind"]
        lines.append(f"  {e['at']}  {move:<26} {e['detail']}")
    return "\n".join(lines)


def _command(spec: dict[str, Any]) -> str:
    import shlex

    if spec.get("script"):
        first = spec["script"].strip().splitlines()[:1]
        return f"(script) {first[0] if first else ''}"
    return shlex.join(spec["command"])


def usage_summary(usage: Mapping[str, Any] | None) -> str | None:
    """One line for people: ``CPU 58% of 2 cores, memory 310 MiB of 1.0 GiB (30%), time 12%
    of the limit, 0.05 core-hours``."""
    if not usage:
        return None
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    cpus = usage.get("alloc_cpus")
    parts = [f"CPU {pct(usage.get('cpu_efficiency'))}" + (f" of {cpus} core(s)" if cpus else "")]
    mem, alloc = usage.get("max_rss_bytes"), usage.get("alloc_mem_bytes")
    parts.append(f"memory {format_size(mem)}" + (f" of {format_size(alloc)}" if alloc else "")
                 + f" ({pct(usage.get('mem_efficiency'))})")  # fmt: skip
    if usage.get("time_efficiency") is not None:
        parts.append(f"time {pct(usage['time_efficiency'])} of the limit")
    if usage.get("core_hours") is not None:
        parts.append(f"{usage['core_hours']:.3g} core-hours")
    line = ", ".join(parts)
    if usage.get("undercounted"):
        line += " (CPU under-counted: the job was killed)"
    if usage.get("gathered") is False:
        line = "the site's accounting gathers no usage (jobacct_gather/none)"
    return line
