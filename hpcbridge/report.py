"""Pure formatting of tasks for people and for JSON (used by the CLI and ``Task.info``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .models import Attempt, Event, Task


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


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


def task_summary(task: Task) -> dict[str, Any]:
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


def task_info(task: Task, attempts: Sequence[Attempt], events: Sequence[Event], *,
              lines: int = 10) -> dict[str, Any]:  # fmt: skip
    return {
        **task_summary(task),
        "spec": task.spec.to_dict(),
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
        "failure": failure(task, attempts, lines),
        "events": [event_dict(e) for e in events],
    }


def failure(task: Task, attempts: Sequence[Attempt], lines: int = 10) -> dict[str, Any] | None:
    """For a task that did not succeed: how its last attempt ended and the last lines of its
    stderr (stdout when stderr is empty), as kept when it ended."""
    if task.state.value == "succeeded" or not attempts or not (task.state.terminal or task.reason):
        return None
    att = attempts[-1]
    stream, text = "stderr", att.stderr_tail or ""
    if not text.strip() and (att.stdout_tail or "").strip():
        stream, text = "stdout", att.stdout_tail or ""
    return {
        "attempt": att.number,
        "exit": describe_exit(att.exit_code, att.signal),
        "node": att.nodes,
        "stream": stream,
        "tail": text.splitlines()[-lines:],
    }


def describe_exit(exit_code: int | None, signal: int | None) -> str | None:
    """``exit code 2``, ``killed by signal 9 (SIGKILL)``, or None when nothing is known."""
    if signal:
        import signal as signals

        try:
            name = signals.Signals(signal).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {signal} ({name})"
    return None if exit_code is None else f"exit code {exit_code}"


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
    fail = info.get("failure")
    if fail and (fail["tail"] or fail["exit"]):
        lines.append(f"failure   attempt {fail['attempt']}: {fail['exit'] or 'no exit status'}"
                     + (f" on {fail['node']}" if fail["node"] else ""))  # fmt: skip
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
