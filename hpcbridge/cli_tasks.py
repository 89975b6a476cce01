"""``hpcbridge tasks ...``: list, inspect, wait for, watch, cancel and download tasks."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import click

from . import listing
from .cli_common import (
    EXIT_ERROR,
    Group,
    is_terminal,
    parse_pairs,
    progress_bar,
    progress_printer,
    reads_registry_only,
    rerun_watched,
    runtime,
    service,
    watch_loop,
    watch_option,
)
from .cli_complete import complete_clusters, complete_projects, complete_task_ids
from .errors import UsageError
from .lifecycle import TaskState
from .models import Task
from .report import duration, format_info, format_size, iso, task_summary
from .report_data import RECORD_COLUMNS, USAGE_COLUMNS, metadata_keys, task_records


# ---------------------------------------------------------------------------- tasks
@click.group(cls=Group)
def tasks() -> None:
    """List, inspect, wait for, cancel and download tasks.

    Every ID may be a unique prefix of a task id, or `last` for the newest task."""


@reads_registry_only
@tasks.command("list")
@click.option("--state", "-s", "states", multiple=True, type=click.Choice([s.value for s in TaskState]),
              help="Only tasks in this state (repeatable).")  # fmt: skip
@click.option("--active", is_flag=True, help="Only tasks that are not finished.")
@click.option("--cluster", "-c", help="Only tasks on this cluster.", shell_complete=complete_clusters)
@click.option("--project", "-P", help="Only tasks of this project.", shell_complete=complete_projects)
@click.option("--meta", "-m", "meta", multiple=True, metavar="KEY[=VALUE]",
              help="Only tasks whose metadata KEY is exactly VALUE, or (without =VALUE) that "
                   "have KEY (repeatable: all must hold).")  # fmt: skip
@click.option("--limit", "-l", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many tasks (the newest).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--usage", "show_usage", is_flag=True,
              help="Add CPU% and MEM% columns (efficiency of the latest attempt, from accounting).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
              help="Export: a table, JSON records or CSV with every metadata key as a column "
                   "(and core-hours with --usage).")  # fmt: skip
@watch_option()
@click.pass_context
def tasks_list(ctx: click.Context, states: tuple[str, ...], active: bool, cluster: str | None,
               project: str | None, meta: tuple[str, ...], limit: int, as_json: bool,
               show_usage: bool, fmt: str | None, watch: float | None) -> None:  # fmt: skip
    """List tasks, newest first."""
    if fmt and as_json:
        raise UsageError("give --json or --format, not both", hint="--format json: flat records with metadata columns")
    if rerun_watched(ctx, watch):
        return
    registry = runtime(ctx).registry  # a listing reads the registry only: no service opened
    selected = [TaskState(s) for s in states] or None
    if active:
        selected = [s for s in (selected or TaskState) if not s.terminal]
    wanted: dict[str, str | None] = {}
    for pair in meta:
        key, sep, value = pair.partition("=")
        if not key:
            raise UsageError(f"--meta must look like KEY=VALUE or KEY, got {pair!r}")
        wanted[key] = value if sep else None
    rows = listing.find_tasks(registry, states=selected, cluster=cluster, limit=limit, project=project,
                              metadata=wanted or None)  # fmt: skip
    usage = listing.usage_of(registry, [t.id for t in rows]) if show_usage else {}
    if fmt:
        _export(rows, usage if show_usage else None, fmt)
        return
    if as_json:
        out = [task_summary(t) for t in rows]
        for item in out if show_usage else ():
            u = usage.get(item["id"]) or {}
            item.update(cpu_efficiency=u.get("cpu_efficiency"), mem_efficiency=u.get("mem_efficiency"))
        click.echo(json.dumps(out, indent=2))
        return
    if not rows:
        click.echo("no tasks", err=True)
        return

    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    cols = f"{'CPU%':>5} {'MEM%':>5}  " if show_usage else ""
    click.echo(f"{'ID':<14}{'STATE':<14}{'CLUSTER':<10}{'ATT':>4}  {'CREATED':<20}{'RUN':>8}  {cols}NAME")
    for t in rows:
        u = usage.get(t.id) or {}
        cols = f"{pct(u.get('cpu_efficiency')):>5} {pct(u.get('mem_efficiency')):>5}  " if show_usage else ""
        created = (iso(t.created_at) or "")[:19].replace("T", " ")
        # A "!" marks a task with a warning, e.g. a success whose outputs matched nothing.
        state = t.state.value + ("!" if (t.reason or "").startswith("warning:") else "")
        click.echo(f"{t.id:<14}{state:<14}{t.cluster:<10}{t.attempt_count:>4}  {created:<20}"
                   f"{duration(t.run_seconds):>8}  {cols}{t.name}")  # fmt: skip
    if any((t.reason or "").startswith("warning:") for t in rows):
        click.echo("! = finished with a warning (see `hpcbridge tasks info ID`)", err=True)


def _export(rows: list[Task], usage: Mapping[str, Mapping[str, Any]] | None, fmt: str) -> None:
    """``tasks list --format``: the listing's records (``report_data.task_records``)."""
    records = task_records(rows, usage)
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    columns = list(records[0]) if records else [*RECORD_COLUMNS, *(USAGE_COLUMNS if usage is not None else ())]
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        click.echo(buf.getvalue(), nl=False)
        return
    if not rows:
        click.echo("no tasks", err=True)
        return
    # table: the default listing's columns, then one per metadata key (as `projects show`)
    keys = metadata_keys(rows)
    widths = {k: max(len(k), *(len(t.metadata.get(k, "")) for t in rows)) for k in keys}
    extra = "".join(f"{k.upper():<{widths[k]}}  " for k in keys)
    cols = f"{'CPU%':>5} {'MEM%':>5}  " if usage is not None else ""
    click.echo(f"{'ID':<14}{'STATE':<14}{'CLUSTER':<10}{'ATT':>4}  {'CREATED':<20}{'RUN':>8}  {cols}{extra}NAME")
    for t in rows:
        u = (usage or {}).get(t.id) or {}
        cols = f"{_pct(u.get('cpu_efficiency')):>5} {_pct(u.get('mem_efficiency')):>5}  " if usage is not None else ""
        extra = "".join(f"{t.metadata.get(k, '-'):<{widths[k]}}  " for k in keys)
        created = (iso(t.created_at) or "")[:19].replace("T", " ")
        state = t.state.value + ("!" if (t.reason or "").startswith("warning:") else "")
        click.echo(f"{t.id:<14}{state:<14}{t.cluster:<10}{t.attempt_count:>4}  {created:<20}"
                   f"{duration(t.run_seconds):>8}  {cols}{extra}{t.name}")  # fmt: skip
    if any((t.reason or "").startswith("warning:") for t in rows):
        click.echo("! = finished with a warning (see `hpcbridge tasks info ID`)", err=True)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


@tasks.command("info")
@click.argument("task_id", shell_complete=complete_task_ids)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Log lines shown when the task did not succeed.")  # fmt: skip
@watch_option()
@click.pass_context
def tasks_info(ctx: click.Context, task_id: str, as_json: bool, lines: int, watch: float | None) -> None:
    """State, attempts (job ids, nodes, exit codes), timings, metadata and event history."""
    if rerun_watched(ctx, watch):
        return
    info = service(ctx).info(task_id, lines=lines)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@tasks.command("kill")
@click.argument("task_ids", nargs=-1, required=True, shell_complete=complete_task_ids)
@click.pass_context
def tasks_kill(ctx: click.Context, task_ids: tuple[str, ...]) -> None:
    """Cancel tasks (scancel for Slurm jobs; confirmed by the scheduler)."""
    failed = False
    for r in service(ctx).kill(list(task_ids)):
        if r.task.state.terminal or not r.recorded:
            note = f" ({r.note})" if r.note and not r.recorded else ""
        else:
            note = " (cancel requested; waiting for the scheduler)"
        failed |= not r.recorded and not r.task.state.terminal
        click.echo(f"{r.task.id} {r.task.state.value}{note}")
    if failed:
        ctx.exit(EXIT_ERROR)


@tasks.command("wait")
@click.argument("task_ids", nargs=-1, required=True, shell_complete=complete_task_ids)
@click.option("--timeout", type=float, help="Give up after this many seconds (exit status 3).")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Log lines shown for each task that did not succeed.")  # fmt: skip
@click.pass_context
def tasks_wait(ctx: click.Context, task_ids: tuple[str, ...], timeout: float | None,
               lines: int) -> None:  # fmt: skip
    """Wait until the tasks finish, showing state changes. Exit 0 only if all succeeded; the
    failures' last log lines go to stderr."""
    svc = service(ctx)
    # On a terminal a wait on several tasks draws one bar in place; elsewhere (or for one
    # task) one line per change, as always.
    bar = progress_bar() if len(task_ids) > 1 and is_terminal(err=True) else None
    try:
        done = svc.wait(list(task_ids), timeout=timeout, on_progress=bar or progress_printer(svc))
    finally:
        if bar is not None:
            bar.close()
    for t in done:
        click.echo(f"{t.id} {t.state.value}" + (f" ({t.reason})" if t.reason else ""))
    for t in done:
        fail = svc.info(t.id, lines=lines)["failure"] if t.state != TaskState.SUCCEEDED else None
        if fail:
            click.echo(f"{t.id}: {fail['summary']}" + (f"\n  hint: {fail['hint']}" if fail["hint"] else ""), err=True)
        if fail and fail["tail"]:
            click.echo(f"  last lines of {fail['stream']}:", err=True)
            for line in fail["tail"]:
                click.echo(f"  | {line}", err=True)
    if any(t.state != TaskState.SUCCEEDED for t in done):
        ctx.exit(EXIT_ERROR)


@tasks.command("top")
@click.argument("task_id", shell_complete=complete_task_ids)
@click.option("--json", "as_json", is_flag=True, help="JSON output (one object per sample).")
@click.option("--watch", "-w", "watch", type=click.FloatRange(min=1), is_flag=False, flag_value=5.0,
              default=None, metavar="[SECS]",
              help="Sample again every SECS seconds (default 5) until the task ends (and sync its "
                   "cluster in between): redrawn in place on a terminal; with --json, or when stdout "
                   "is no terminal, one sample after another.")  # fmt: skip
@click.pass_context
def tasks_top(ctx: click.Context, task_id: str, as_json: bool, watch: float | None) -> None:
    """Live resource usage of a running task (sstat: CPU%, current/peak memory, disk I/O)."""
    svc = service(ctx)
    first = [True]

    def sample() -> bool:
        if not first[0]:
            svc.sync_cluster(svc.get(task_id).cluster)
        first[0] = False
        top = svc.top(task_id)
        click.echo(json.dumps(top) if as_json else _format_top(top))
        return top["state"] in [s.value for s in TaskState if s.terminal]

    if watch is None:
        sample()
    elif as_json:  # a stream of JSON objects, never redrawn
        while not sample():
            time.sleep(watch)
    else:
        watch_loop(watch, sample, title=ctx.command_path)


def _format_top(t: Mapping[str, Any]) -> str:
    if "rss_bytes" not in t:
        return f"{t['id']} {t['state']}: {t.get('note', 'no figures')}"
    mem = f"mem {format_size(t.get('rss_bytes'))} (peak {format_size(t.get('max_rss_bytes'))}"
    mem += f" of {format_size(t['alloc_mem_bytes'])})" if t.get("alloc_mem_bytes") else ")"
    cpu = f"cpu {t['cpu_percent']:.0f}% of {t['alloc_cpus']}" if t.get("cpu_percent") is not None else "cpu -"
    io = f"read {format_size(t.get('disk_read_bytes'))} write {format_size(t.get('disk_write_bytes'))}"
    return f"{time.strftime('%H:%M:%S')} {t['id']} {cpu}  {mem}  {io}" + (f"  ({t['note']})" if t.get("note") else "")


@tasks.command("meta")
@click.argument("task_id", shell_complete=complete_task_ids)
@click.argument("pairs", nargs=-1)
@click.option("--delete", "-d", "deletes", multiple=True, help="Remove this key (repeatable).")
@click.pass_context
def tasks_meta(ctx: click.Context, task_id: str, pairs: tuple[str, ...], deletes: tuple[str, ...]) -> None:
    """Show metadata, or set key=value pairs."""
    svc = service(ctx)
    updates: dict[str, str | None] = dict(parse_pairs(pairs, "metadata"))
    updates.update({k: None for k in deletes})
    meta = svc.set_metadata(task_id, updates) if updates else dict(svc.get(task_id).metadata)
    for key, value in sorted(meta.items()):
        click.echo(f"{key}={value}")


@tasks.command("download")
@click.argument("task_id", shell_complete=complete_task_ids)
@click.option("--dir", "-d", "dest", type=click.Path(file_okay=False), help="Target dir (default ./ID).")
@click.pass_context
def tasks_download(ctx: click.Context, task_id: str, dest: str | None) -> None:
    """Copy the task's declared outputs into a local directory."""
    for path in service(ctx).download(task_id, dest):
        click.echo(str(path))


def _size(n: int) -> str:
    """Bytes as `tasks files` shows them: 512, 1.5K, 20.0M."""
    if n < 1024:
        return str(n)
    value, i = n / 1024, 0
    while value >= 1024 and i < 3:
        value, i = value / 1024, i + 1
    return f"{value:.1f}{'KMGT'[i]}"


def _show_path(path: str) -> str:
    """A file name as one printable field (quoted with escapes when it holds a newline...)."""
    return path if path.isprintable() else json.dumps(path)


@tasks.command("files")
@click.argument("task_id", shell_complete=complete_task_ids)
@click.option("--json", "as_json", is_flag=True, help="JSON: work_dir, files (path, size, "
              "mtime, meta), newest (path, age_seconds).")  # fmt: skip
@click.pass_context
def tasks_files(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Every file under the task's work dir (size, modified), read live where it runs, and
    the newest one with its age. hpcbridge's own .hpcbridge/ dir (logs, markers) comes last."""
    got = service(ctx).files(task_id)
    if as_json:
        click.echo(json.dumps(got, indent=2))
        return
    click.echo(f"work dir: {got['work_dir']}")
    own = [f for f in got["files"] if not f["meta"]]
    meta = [f for f in got["files"] if f["meta"]]
    for title, group in (("", own), ("hpcbridge's own files:", meta)):
        if title and group:
            click.echo(title)
        for f in group:
            when = (iso(f["mtime"]) or "")[:19].replace("T", " ")
            click.echo(f"{_size(f['size']):>8}  {when}  {_show_path(f['path'])}")
    if not own:
        click.echo("(no files of the task's own yet)")
    new = got["newest"]
    if new:
        click.echo(f"newest: {_show_path(new['path'])} ({duration(new['age_seconds'])} ago)")


@tasks.command("tail")
@click.argument("task_id", shell_complete=complete_task_ids)
@click.argument("path")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Print the last N lines.")  # fmt: skip
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing lines as they are written until the task ends.")  # fmt: skip
@click.pass_context
def tasks_tail(ctx: click.Context, task_id: str, path: str, lines: int, follow: bool) -> None:
    """The last lines of any file under the task's work dir (PATH relative to it, as
    `tasks files` lists it); paths outside the work dir are refused."""
    svc = service(ctx)
    if not follow:
        click.echo(svc.tail(task_id, path, lines), nl=False)
        return
    for chunk in svc.follow_file(task_id, path, lines):
        click.echo(chunk, nl=False)
