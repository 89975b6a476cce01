"""``hpcbridge tasks info|kill|wait|top|meta|download|files|tail``: the task subcommands
other than ``list``, registered on the ``tasks`` group by name (``cli_tasks``) and imported
when one of them runs, so that ``tasks list`` does not build their options."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import click

from .cli_common import (
    EXIT_ERROR,
    is_terminal,
    parse_pairs,
    progress_bar,
    progress_printer,
    rerun_watched,
    service,
    watch_loop,
    watch_option,
)
from .cli_complete import complete_task_ids
from .lifecycle import TaskState
from .report import duration, format_info, format_size, iso


@click.command("info")
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


@click.command("kill")
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


@click.command("wait")
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


@click.command("top")
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


@click.command("meta")
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


@click.command("download")
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


@click.command("files")
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


@click.command("tail")
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
