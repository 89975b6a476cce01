"""``hpcbridge projects ...``: groups of tasks, their counts, core-hours and cost."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import click

from . import projects as proj
from .cli_common import (
    EXIT_ERROR,
    Group,
    is_terminal,
    progress_bar,
    rerun_watched,
    service,
    watch_option,
)
from .cli_complete import complete_projects
from .lifecycle import TaskState
from .models import Task
from .report import duration, task_summary


# ---------------------------------------------------------------------------- projects
@click.group(cls=Group)
def projects() -> None:
    """Groups of tasks (submit --project NAME): counts, core-hours, cost, wait, download, kill."""


def _hours(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _money(cost: Mapping[str, float], unpriced: bool) -> str:
    if not cost:
        return "-"
    text = " + ".join((f"{v:.2f} {c}" if v >= 1 or v == 0 else f"{v:.4f} {c}").strip()
                      for c, v in sorted(cost.items()))  # fmt: skip
    return text + (" (+unpriced)" if unpriced else "")


def _states_text(counts: Mapping[str, int]) -> str:
    order = [s.value for s in TaskState]
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: order.index(kv[0])))


def _summary_lines(s: proj.ProjectSummary) -> list[str]:
    used = f"{_hours(s.core_hours_used)} core-hours used"
    if s.attempts_unaccounted:
        used += f" ({s.attempts_unaccounted} ended attempt(s) not in accounting yet)"
    committed = f"{_hours(s.core_hours_committed)} core-hours committed by queued/running tasks"
    if s.committed_unknown:
        committed += f" (+{s.committed_unknown} without a time limit)"
    lines = [f"project   {s.name}", f"tasks     {s.tasks}: {_states_text(s.counts)}", f"usage     {used}",
             f"          {committed}"]  # fmt: skip
    if s.cost_used or s.cost_committed:
        parts = [f"~{_money(cost, s.unpriced)} {what}" for cost, what in
                 ((s.cost_used, "used"), (s.cost_committed, "committed")) if cost]  # fmt: skip
        lines.append(f"cost      {', '.join(parts)} (estimate)")
    return lines


@projects.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@watch_option()
@click.pass_context
def projects_list(ctx: click.Context, as_json: bool, watch: float | None) -> None:
    """Every project: tasks by state, core-hours used (from accounting) and committed
    (CPUs x time limit of queued and running tasks), estimated cost."""
    if rerun_watched(ctx, watch):
        return
    rows = proj.summaries(service(ctx))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no projects (submit with --project NAME)", err=True)
        return
    width = max(12, *(len(r.name) + 2 for r in rows))
    priced = any(r.cost_used or r.cost_committed for r in rows)
    click.echo(f"{'PROJECT':<{width}}{'TASKS':>6}{'ACTIVE':>7}  {'CORE-H USED':>11}  {'COMMITTED':>9}  "
               + (f"{'COST USED':>12}  " if priced else "") + "STATES")  # fmt: skip
    for r in rows:
        used = _hours(r.core_hours_used) + ("*" if r.attempts_unaccounted else "")
        cost = f"{_money(r.cost_used, r.unpriced):>12}  " if priced else ""
        click.echo(f"{r.name:<{width}}{r.tasks:>6}{r.active:>7}  {used:>11}  {_hours(r.core_hours_committed):>9}  "
                   f"{cost}{_states_text(r.counts)}")  # fmt: skip
    if any(r.attempts_unaccounted for r in rows):
        click.echo("* some ended attempts are not in accounting yet (sacct lags; a sync brings them)", err=True)


@projects.command("show")
@click.argument("name", shell_complete=complete_projects)
@click.option("--limit", "-l", type=click.IntRange(min=1), help="Show at most this many tasks.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (summary and tasks).")
@click.pass_context
def projects_show(ctx: click.Context, name: str, limit: int | None, as_json: bool) -> None:
    """One project: its numbers, then its tasks (oldest first) with their metadata, i.e. a
    sweep's parameters, as columns."""
    svc = service(ctx)
    summary = proj.summary(svc, name)
    rows = proj.tasks(svc, name, limit=limit)
    if as_json:
        click.echo(json.dumps({"summary": summary.to_dict(),
                               "tasks": [{**task_summary(t), "metadata": dict(t.metadata)} for t in rows]},
                              indent=2))  # fmt: skip
        return
    for line in _summary_lines(summary):
        click.echo(line)
    keys = proj.parameter_names(rows)
    widths = {k: max(len(k), *(len(t.metadata.get(k, "-")) for t in rows)) + 2 for k in keys}
    click.echo("")
    click.echo(f"{'ID':<14}{'STATE':<14}{'ATT':>3}  {'RUN':>8}  " + "".join(f"{k.upper():<{widths[k]}}" for k in keys)
               + "NAME")  # fmt: skip
    for t in rows:
        state = t.state.value + ("!" if (t.reason or "").startswith("warning:") else "")
        params = "".join(f"{t.metadata.get(k, '-'):<{widths[k]}}" for k in keys)
        click.echo(f"{t.id:<14}{state:<14}{t.attempt_count:>3}  {duration(t.run_seconds):>8}  {params}{t.name}")


@projects.command("wait")
@click.argument("name", shell_complete=complete_projects)
@click.option("--timeout", type=float, help="Give up after this many seconds (exit status 3).")
@click.pass_context
def projects_wait(ctx: click.Context, name: str, timeout: float | None) -> None:
    """Wait until every task of the project has finished, printing the counts as they
    change. Exit 0 only if all succeeded."""
    svc = service(ctx)
    last = [""]

    def show(tasks: list[Task]) -> None:
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.state.value] = counts.get(t.state.value, 0) + 1
        line = _states_text(counts)
        if line != last[0]:
            last[0] = line
            click.echo(f"{time.strftime('%H:%M:%S')} {name}: {line}", err=True)

    bar = progress_bar(label=name) if is_terminal(err=True) else None

    def draw(tasks: list[Task]) -> None:
        (bar if bar is not None and len(tasks) > 1 else show)(tasks)

    try:
        done = proj.wait(svc, name, timeout=timeout, on_progress=draw)
    finally:
        if bar is not None:
            bar.close()
    bad = [t for t in done if t.state != TaskState.SUCCEEDED]
    for t in bad:
        click.echo(f"{t.id} {t.state.value}" + (f" ({t.reason})" if t.reason else ""))
    click.echo(f"{name}: {len(done) - len(bad)} of {len(done)} succeeded")
    if bad:
        ctx.exit(EXIT_ERROR)


@projects.command("download")
@click.argument("name", shell_complete=complete_projects)
@click.option("--dir", "-d", "dest", type=click.Path(file_okay=False),
              help="Target dir (default ./NAME); each task's outputs go to DIR/ID/, and DIR/tasks.json "
                   "lists ids, states, parameters and files.")  # fmt: skip
@click.pass_context
def projects_download(ctx: click.Context, name: str, dest: str | None) -> None:
    """Copy the outputs of every succeeded task of the project into one directory."""
    got = proj.download(service(ctx), name, dest)
    for d in got:
        if d.skipped:
            click.echo(f"{d.task.id} skipped: {d.skipped}", err=True)
        else:
            click.echo(f"{d.task.id} {len(d.files)} file(s)")
    root = Path(dest) if dest else Path.cwd() / name
    click.echo(f"{sum(len(d.files) for d in got)} file(s) of {sum(not d.skipped for d in got)} task(s) in {root}")


@projects.command("kill")
@click.argument("name", shell_complete=complete_projects)
@click.pass_context
def projects_kill(ctx: click.Context, name: str) -> None:
    """Cancel every unfinished task of the project (one scancel per cluster)."""
    results = proj.kill(service(ctx), name)
    for r in results:
        click.echo(f"{r.task.id} {r.task.state.value}" + (f" ({r.note})" if r.note else ""))
    click.echo(f"{name}: {sum(r.recorded for r in results)} task(s) cancelled or asked to stop")
    if any(not r.recorded and not r.task.state.terminal for r in results):
        ctx.exit(EXIT_ERROR)
