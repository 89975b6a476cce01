"""Progress lines for people: a wait on many tasks (a bar, counts by state, an ETA from the
tasks' run times) and a file transfer (bytes, rate). Pure: the CLI decides where and whether
to draw them (a terminal gets one line redrawn in place; anything else the plain lines of
``cli_common.progress_printer``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .lifecycle import TaskState
from .models import Task
from .report import duration
from .slurm.usage import format_size

STATE_ORDER = {s: i for i, s in enumerate(TaskState)}


def eta_seconds(finished_runs: Sequence[float], running_for: Sequence[float], waiting: int) -> float | None:
    """A rough time to the end: every unfinished task takes the mean run time of the finished
    ones; running tasks have already used part of it, waiting ones start as running ones end
    (as many at once as run now, at least one). None until some task has finished with a
    run time (nothing to go by)."""
    if not finished_runs:
        return None
    mean = sum(finished_runs) / len(finished_runs)
    left = [max(0.0, mean - elapsed) for elapsed in running_for]
    lanes = max(1, len(running_for))
    return max(max(left, default=0.0), (sum(left) + waiting * mean) / lanes)


def eta_of(tasks: Sequence[Task], now: float) -> float | None:
    """:func:`eta_seconds` of these tasks at ``now`` (0 when all have finished)."""
    if tasks and all(t.state.terminal for t in tasks):
        return 0.0
    runs = [r for t in tasks if t.state.terminal and (r := t.run_seconds) is not None]
    running = [max(0.0, now - t.started_at) for t in tasks
               if t.state == TaskState.RUNNING and t.started_at is not None]  # fmt: skip
    waiting = sum(1 for t in tasks if not t.state.terminal and t.state != TaskState.RUNNING)
    return eta_seconds(runs, running, waiting)


def counts_of(tasks: Sequence[Task]) -> dict[TaskState, int]:
    out: dict[TaskState, int] = {}
    for t in tasks:
        out[t.state] = out.get(t.state, 0) + 1
    return out


def progress_line(counts: Mapping[TaskState, int], eta: float | None, *, width: int = 80,
                  label: str = "") -> str:  # fmt: skip
    """``label [#####-----] 8/20 done  3 running, 9 queued, 8 succeeded  ETA 4m10s``, cut to
    ``width`` (the bar shrinks first, down to 10 cells)."""
    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if s.terminal)
    states = ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items(), key=lambda kv: STATE_ORDER[kv[0]]))
    eta_text = "ETA ?" if eta is None else ("done" if done == total else f"ETA {duration(eta)}")
    tail = f" {done}/{total} done  {states}  {eta_text}"
    head = f"{label} " if label else ""
    cells = max(10, min(30, width - len(head) - len(tail) - 2))
    filled = 0 if total == 0 else round(cells * done / total)
    return f"{head}[{'#' * filled}{'-' * (cells - filled)}]{tail}"[:width]


def transfer_line(name: str, done: int, total: int | None, seconds: float, *, width: int = 80) -> str:
    """``upload input.dat  12.0 MiB of 40.0 MiB (30%)  5.1 MiB/s``, cut to ``width``."""
    rate = done / seconds if seconds > 0 else None
    size = format_size(done) + (f" of {format_size(total)}" if total else "")
    if total:
        size += f" ({100 * done / total:.0f}%)"
    speed = f"  {format_size(rate)}/s" if rate is not None else ""
    return f"{name}  {size}{speed}"[:width]


__all__ = ["counts_of", "eta_of", "eta_seconds", "progress_line", "transfer_line"]
