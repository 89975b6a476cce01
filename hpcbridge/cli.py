"""The ``hpcbridge`` command: thin click commands over ``Service``.

Each command opens the service, makes one call, formats the result. Library errors become one
clean line on stderr (plus a hint) and exit status 1 in one place, ``_Group.invoke``; a wait
that times out exits 3. Logging handlers are configured here and nowhere in the library.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from . import projects as proj
from .errors import HpcBridgeError, UsageError, WaitTimeout
from .lifecycle import RETRYABLE_NAMES, TaskState
from .models import Task
from .options import SubmitOptions, option_fields
from .report import duration, format_info, format_size, iso, task_summary
from .service import Service
from .sweep import parse_axes, parse_params_lines

EXIT_ERROR = 1
EXIT_TIMEOUT = 3


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcBridgeError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(EXIT_TIMEOUT if isinstance(exc, WaitTimeout) else EXIT_ERROR)


def _service(ctx: click.Context) -> Service:
    obj = ctx.find_root().obj
    if obj.get("service") is None:
        obj["service"] = Service.open(obj.get("config"), obj.get("db"), source="cli")
        ctx.find_root().call_on_close(obj["service"].close)
    svc: Service = obj["service"]
    return svc


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", envvar="HPCBRIDGE_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (TOML). Default: $HPCBRIDGE_CONFIG or the user config dir.")  # fmt: skip
@click.option("--db", "db", envvar="HPCBRIDGE_DB", type=click.Path(dir_okay=False),
              help="Registry database. Default: $HPCBRIDGE_DB or the user data dir.")  # fmt: skip
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.version_option(package_name="hpcbridge")
@click.pass_context
def cli(ctx: click.Context, config: str | None, db: str | None, verbose: int) -> None:
    """Run simulations on Slurm clusters (or locally) as durable, trackable tasks."""
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, db=db)
    _setup_logging(verbose)


# ---------------------------------------------------------------------------- submit
def _parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like key=value, got {item!r}")
        out[key] = value
    return out


# CLI spellings of SubmitOptions' fields where they differ from `--field-name`.
_FLAGS: dict[str, tuple[str, ...]] = {
    "cluster": ("--cluster", "-c"), "name": ("--name", "-n"), "inputs": ("--input", "-i"),
    "outputs": ("--output", "-o"), "metadata": ("--meta", "-m"), "env": ("--env", "-e"),
    "time": ("--time", "-t"), "partition": ("--partition", "-p"), "account": ("--account", "-A"),
    "sbatch_options": ("--sbatch-option",),
}  # fmt: skip
_NOT_OPTIONS = ("command", "script")  # the argument after `--`, and --script FILE


def _submit_options(fn: Any) -> Any:
    """One click option per SubmitOptions field: names, types and help come from there."""
    for f in reversed(option_fields()):
        if f.name in _NOT_OPTIONS:
            continue
        kind, help_text = f.metadata["kind"], f.metadata["help"]
        flags = _FLAGS.get(f.name, ("--" + f.name.replace("_", "-"),))
        kw: dict[str, Any] = {"help": help_text}
        if kind == "bool":
            flags = (f"{flags[0]}/--no-{flags[0][2:]}",)
            kw["default"] = None
        elif kind in ("list of str", "map of str to str"):
            kw["multiple"] = True
        elif kind == "int":
            kw["type"] = int
        if f.name == "inputs":
            kw["type"] = click.Path(exists=True)
        if f.name == "retry_on":
            kw["type"] = click.Choice(sorted(RETRYABLE_NAMES))
        fn = click.option(*flags, f.name, **kw)(fn)
    return fn


def _given(kw: Mapping[str, Any]) -> dict[str, Any]:
    """The options the user gave, as SubmitOptions values (k=v pairs parsed)."""
    out: dict[str, Any] = {}
    for f in option_fields():
        value = kw.get(f.name)
        if value is None or value == ():
            continue
        if f.metadata["kind"] == "map of str to str":
            value = _parse_pairs(value, "--" + ("meta" if f.name == "metadata" else f.name))
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _read_from_file(from_file: Any, defaults: Mapping[str, Any]) -> list[SubmitOptions]:
    specs = []
    for lineno, line in enumerate(from_file, 1):
        if not line.strip():
            continue
        where = f"{from_file.name}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not JSON: {exc.msg}") from None
        specs.append(SubmitOptions.from_mapping(data, where=where).with_defaults(
            **SubmitOptions.from_mapping(defaults).__dict__))  # fmt: skip
    if not specs:
        raise UsageError(f"{from_file.name}: no tasks in the file",
                         hint="one JSON object per line, with submit's option names as keys")  # fmt: skip
    return specs


@cli.command(context_settings={"ignore_unknown_options": False})
@_submit_options
@click.option("--script", "script_file", type=click.Path(exists=True, dir_okay=False),
              help="Run this bash script instead of a command.")  # fmt: skip
@click.option("--from-file", "from_file", type=click.File("r"),
              help="Submit many tasks: JSON lines, one spec per line with submit's option names "
                   "(options given here are defaults for every line).")  # fmt: skip
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...",
              help="Sweep: one task per combination of the values of every --grid (repeatable); "
                   "{NAME} in the command's arguments is replaced by the value.")  # fmt: skip
@click.option("--zip", "zip_", multiple=True, metavar="NAME=V1,V2,...",
              help="Sweep: lists of equal length, paired item by item (repeatable).")  # fmt: skip
@click.option("--params", "params_file", type=click.File("r"),
              help="Sweep: a JSON-lines file, one parameter set (an object) per line.")  # fmt: skip
@click.option("--wait", "wait_", is_flag=True, help="Wait for the task(s) to finish.")
@click.option("--json", "as_json", is_flag=True, help="Print the task record(s) as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx: click.Context, script_file: str | None, from_file: Any, grid: tuple[str, ...],
           zip_: tuple[str, ...], params_file: Any, wait_: bool, as_json: bool,
           command: tuple[str, ...], **options: Any) -> None:  # fmt: skip
    """Submit a task: hpcbridge submit [OPTIONS] -- COMMAND [ARGS]...

    The command runs without a shell: its arguments arrive exactly as given. The new task id
    is printed alone on the last line of stdout (a sweep prints one id per line, in order).

    A sweep (--grid, --zip, --params) submits one task per parameter set in one go: each
    {name} in the command's arguments is replaced by the value (never through a shell;
    write {{ and }} for a literal brace) and every task gets its parameters as metadata.
    """
    svc = _service(ctx)
    given = _given(options)
    sweeping = bool(grid or zip_ or params_file)
    if sweeping:
        if from_file is not None or script_file:
            raise UsageError("a sweep (--grid/--zip/--params) takes a command after --, "
                             "not --script or --from-file")  # fmt: skip
        if not command:
            raise UsageError("a sweep needs a command template after --",
                             hint="hpcbridge submit --grid alpha=0.1,0.2 -- python3 sim.py --alpha {alpha}")  # fmt: skip
        params = (parse_params_lines(params_file.read(), where=params_file.name)
                  if params_file is not None else None)  # fmt: skip
        tasks = proj.sweep(svc, list(command), grid=parse_axes(grid, "--grid") or None,
                           zip=parse_axes(zip_, "--zip") or None, params=params, **given)  # fmt: skip
    elif from_file is not None:
        if command or script_file:
            raise UsageError("--from-file takes no command or --script")
        tasks = svc.submit_many(_read_from_file(from_file, given))
    else:
        if bool(command) == bool(script_file):
            raise UsageError("give a command after -- or --script FILE (one of them)")
        if command:
            given["command"] = list(command)
        else:
            given["script"] = Path(str(script_file)).read_text(encoding="utf-8")
        tasks = [svc.submit(**given)]
    if wait_:
        tasks = svc.wait([t.id for t in tasks], on_progress=_progress_printer(svc))
    if as_json:
        out = [svc.info(t.id) for t in tasks]
        click.echo(json.dumps(out if len(out) > 1 or from_file or sweeping else out[0], indent=2))
        if wait_ and any(t.state != TaskState.SUCCEEDED for t in tasks):
            ctx.exit(EXIT_ERROR)  # same exit status with or without --json
        return
    for t in tasks[:-1]:
        click.echo(t.id)
    for t in tasks:
        if t.state == TaskState.CREATED:
            click.echo(f"warning: task {t.id} is registered but not yet submitted "
                       "(cluster unreachable?); `hpcbridge sync` will submit it", err=True)  # fmt: skip
        elif t.state == TaskState.FAILED and wait_ is False:
            click.echo(f"warning: task {t.id} failed at submission: {t.reason}", err=True)
    click.echo(tasks[-1].id)
    if wait_ and any(t.state != TaskState.SUCCEEDED for t in tasks):
        ctx.exit(EXIT_ERROR)


def _progress_printer(svc: Service) -> Any:
    """One stderr line per change of state (and, while a task waits, of Slurm's reason)."""
    last: dict[str, str] = {}

    def show(tasks: list[Task]) -> None:
        waiting = [t.id for t in tasks if t.state in (TaskState.QUEUED, TaskState.HELD)]
        queue = svc.queue_of(waiting) if waiting else {}
        for t in tasks:
            q = queue.get(t.id) or {}
            why = f" ({q['reason']}: {q.get('explanation', '')})" if q.get("reason") else ""
            line = f"{t.state.value}{why}"
            if last.get(t.id) != line:
                last[t.id] = line
                click.echo(f"{time.strftime('%H:%M:%S')} {t.id} {line}", err=True)

    return show


# ---------------------------------------------------------------------------- tasks
@cli.group(cls=_Group)
def tasks() -> None:
    """List, inspect, wait for, cancel and download tasks.

    Every ID may be a unique prefix of a task id, or `last` for the newest task."""


@tasks.command("list")
@click.option("--state", "-s", "states", multiple=True, type=click.Choice([s.value for s in TaskState]),
              help="Only tasks in this state (repeatable).")  # fmt: skip
@click.option("--active", is_flag=True, help="Only tasks that are not finished.")
@click.option("--cluster", "-c", help="Only tasks on this cluster.")
@click.option("--project", "-P", help="Only tasks of this project.")
@click.option("--meta", "-m", "meta", multiple=True, metavar="KEY[=VALUE]",
              help="Only tasks whose metadata KEY is exactly VALUE, or (without =VALUE) that "
                   "have KEY (repeatable: all must hold).")  # fmt: skip
@click.option("--limit", "-l", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many tasks (the newest).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--usage", "show_usage", is_flag=True,
              help="Add CPU% and MEM% columns (efficiency of the latest attempt, from accounting).")  # fmt: skip
@click.pass_context
def tasks_list(ctx: click.Context, states: tuple[str, ...], active: bool, cluster: str | None,
               project: str | None, meta: tuple[str, ...], limit: int, as_json: bool,
               show_usage: bool) -> None:  # fmt: skip
    """List tasks, newest first."""
    svc = _service(ctx)
    selected = [TaskState(s) for s in states] or None
    if active:
        selected = [s for s in (selected or TaskState) if not s.terminal]
    wanted: dict[str, str | None] = {}
    for pair in meta:
        key, sep, value = pair.partition("=")
        if not key:
            raise UsageError(f"--meta must look like KEY=VALUE or KEY, got {pair!r}")
        wanted[key] = value if sep else None
    rows = proj.find_tasks(svc, states=selected, cluster=cluster, limit=limit, project=project,
                           metadata=wanted or None)  # fmt: skip
    usage = svc.usage_of([t.id for t in rows]) if show_usage else {}
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


@tasks.command("info")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Log lines shown when the task did not succeed.")  # fmt: skip
@click.pass_context
def tasks_info(ctx: click.Context, task_id: str, as_json: bool, lines: int) -> None:
    """State, attempts (job ids, nodes, exit codes), timings, metadata and event history."""
    info = _service(ctx).info(task_id, lines=lines)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@tasks.command("kill")
@click.argument("task_ids", nargs=-1, required=True)
@click.pass_context
def tasks_kill(ctx: click.Context, task_ids: tuple[str, ...]) -> None:
    """Cancel tasks (scancel for Slurm jobs; confirmed by the scheduler)."""
    failed = False
    for r in _service(ctx).kill(list(task_ids)):
        if r.task.state.terminal or not r.recorded:
            note = f" ({r.note})" if r.note and not r.recorded else ""
        else:
            note = " (cancel requested; waiting for the scheduler)"
        failed |= not r.recorded and not r.task.state.terminal
        click.echo(f"{r.task.id} {r.task.state.value}{note}")
    if failed:
        ctx.exit(EXIT_ERROR)


@tasks.command("wait")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, help="Give up after this many seconds (exit status 3).")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Log lines shown for each task that did not succeed.")  # fmt: skip
@click.pass_context
def tasks_wait(ctx: click.Context, task_ids: tuple[str, ...], timeout: float | None,
               lines: int) -> None:  # fmt: skip
    """Wait until the tasks finish, showing state changes. Exit 0 only if all succeeded; the
    failures' last log lines go to stderr."""
    svc = _service(ctx)
    done = svc.wait(list(task_ids), timeout=timeout, on_progress=_progress_printer(svc))
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
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="JSON output (one object per sample).")
@click.option("--watch", "-w", "watch", type=click.FloatRange(min=1), is_flag=False, flag_value=5.0,
              default=None, help="Sample again every SECS seconds (default 5) until the task ends.")  # fmt: skip
@click.pass_context
def tasks_top(ctx: click.Context, task_id: str, as_json: bool, watch: float | None) -> None:
    """Live resource usage of a running task (sstat: CPU%, current/peak memory, disk I/O)."""
    svc = _service(ctx)
    while True:
        top = svc.top(task_id)
        click.echo(json.dumps(top) if as_json else _format_top(top))
        if watch is None or top["state"] in [s.value for s in TaskState if s.terminal]:
            return
        time.sleep(watch)
        svc.sync_cluster(svc.get(task_id).cluster)


def _format_top(t: Mapping[str, Any]) -> str:
    if "rss_bytes" not in t:
        return f"{t['id']} {t['state']}: {t.get('note', 'no figures')}"
    mem = f"mem {format_size(t.get('rss_bytes'))} (peak {format_size(t.get('max_rss_bytes'))}"
    mem += f" of {format_size(t['alloc_mem_bytes'])})" if t.get("alloc_mem_bytes") else ")"
    cpu = f"cpu {t['cpu_percent']:.0f}% of {t['alloc_cpus']}" if t.get("cpu_percent") is not None else "cpu -"
    io = f"read {format_size(t.get('disk_read_bytes'))} write {format_size(t.get('disk_write_bytes'))}"
    return f"{time.strftime('%H:%M:%S')} {t['id']} {cpu}  {mem}  {io}" + (f"  ({t['note']})" if t.get("note") else "")


@tasks.command("meta")
@click.argument("task_id")
@click.argument("pairs", nargs=-1)
@click.option("--delete", "-d", "deletes", multiple=True, help="Remove this key (repeatable).")
@click.pass_context
def tasks_meta(ctx: click.Context, task_id: str, pairs: tuple[str, ...], deletes: tuple[str, ...]) -> None:
    """Show metadata, or set key=value pairs."""
    svc = _service(ctx)
    updates: dict[str, str | None] = dict(_parse_pairs(pairs, "metadata"))
    updates.update({k: None for k in deletes})
    meta = svc.set_metadata(task_id, updates) if updates else dict(svc.get(task_id).metadata)
    for key, value in sorted(meta.items()):
        click.echo(f"{key}={value}")


@tasks.command("download")
@click.argument("task_id")
@click.option("--dir", "-d", "dest", type=click.Path(file_okay=False), help="Target dir (default ./ID).")
@click.pass_context
def tasks_download(ctx: click.Context, task_id: str, dest: str | None) -> None:
    """Copy the task's declared outputs into a local directory."""
    for path in _service(ctx).download(task_id, dest):
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
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="JSON: work_dir, files (path, size, "
              "mtime, meta), newest (path, age_seconds).")  # fmt: skip
@click.pass_context
def tasks_files(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Every file under the task's work dir (size, modified), read live where it runs, and
    the newest one with its age. hpcbridge's own .hpcbridge/ dir (logs, markers) comes last."""
    got = _service(ctx).files(task_id)
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
@click.argument("task_id")
@click.argument("path")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Print the last N lines.")  # fmt: skip
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing lines as they are written until the task ends.")  # fmt: skip
@click.pass_context
def tasks_tail(ctx: click.Context, task_id: str, path: str, lines: int, follow: bool) -> None:
    """The last lines of any file under the task's work dir (PATH relative to it, as
    `tasks files` lists it); paths outside the work dir are refused."""
    svc = _service(ctx)
    if not follow:
        click.echo(svc.tail(task_id, path, lines), nl=False)
        return
    for chunk in svc.follow_file(task_id, path, lines):
        click.echo(chunk, nl=False)


# ---------------------------------------------------------------------------- projects
@cli.group(cls=_Group)
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
@click.pass_context
def projects_list(ctx: click.Context, as_json: bool) -> None:
    """Every project: tasks by state, core-hours used (from accounting) and committed
    (CPUs x time limit of queued and running tasks), estimated cost."""
    rows = proj.summaries(_service(ctx))
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
@click.argument("name")
@click.option("--limit", "-l", type=click.IntRange(min=1), help="Show at most this many tasks.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (summary and tasks).")
@click.pass_context
def projects_show(ctx: click.Context, name: str, limit: int | None, as_json: bool) -> None:
    """One project: its numbers, then its tasks (oldest first) with their metadata, i.e. a
    sweep's parameters, as columns."""
    svc = _service(ctx)
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
@click.argument("name")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit status 3).")
@click.pass_context
def projects_wait(ctx: click.Context, name: str, timeout: float | None) -> None:
    """Wait until every task of the project has finished, printing the counts as they
    change. Exit 0 only if all succeeded."""
    svc = _service(ctx)
    last = [""]

    def show(tasks: list[Task]) -> None:
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.state.value] = counts.get(t.state.value, 0) + 1
        line = _states_text(counts)
        if line != last[0]:
            last[0] = line
            click.echo(f"{time.strftime('%H:%M:%S')} {name}: {line}", err=True)

    done = proj.wait(svc, name, timeout=timeout, on_progress=show)
    bad = [t for t in done if t.state != TaskState.SUCCEEDED]
    for t in bad:
        click.echo(f"{t.id} {t.state.value}" + (f" ({t.reason})" if t.reason else ""))
    click.echo(f"{name}: {len(done) - len(bad)} of {len(done)} succeeded")
    if bad:
        ctx.exit(EXIT_ERROR)


@projects.command("download")
@click.argument("name")
@click.option("--dir", "-d", "dest", type=click.Path(file_okay=False),
              help="Target dir (default ./NAME); each task's outputs go to DIR/ID/, and DIR/tasks.json "
                   "lists ids, states, parameters and files.")  # fmt: skip
@click.pass_context
def projects_download(ctx: click.Context, name: str, dest: str | None) -> None:
    """Copy the outputs of every succeeded task of the project into one directory."""
    got = proj.download(_service(ctx), name, dest)
    for d in got:
        if d.skipped:
            click.echo(f"{d.task.id} skipped: {d.skipped}", err=True)
        else:
            click.echo(f"{d.task.id} {len(d.files)} file(s)")
    root = Path(dest) if dest else Path.cwd() / name
    click.echo(f"{sum(len(d.files) for d in got)} file(s) of {sum(not d.skipped for d in got)} task(s) in {root}")


@projects.command("kill")
@click.argument("name")
@click.pass_context
def projects_kill(ctx: click.Context, name: str) -> None:
    """Cancel every unfinished task of the project (one scancel per cluster)."""
    results = proj.kill(_service(ctx), name)
    for r in results:
        click.echo(f"{r.task.id} {r.task.state.value}" + (f" ({r.note})" if r.note else ""))
    click.echo(f"{name}: {sum(r.recorded for r in results)} task(s) cancelled or asked to stop")
    if any(not r.recorded and not r.task.state.terminal for r in results):
        ctx.exit(EXIT_ERROR)


# ---------------------------------------------------------------------------- logs
@cli.command()
@click.argument("task_id")
@click.option("--stderr", "stderr_", is_flag=True, help="Show stderr instead of stdout.")
@click.option("--tail", "-n", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("--attempt", type=click.IntRange(min=1), help="Attempt number (default: latest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the task ends.")
@click.pass_context
def logs(ctx: click.Context, task_id: str, stderr_: bool, tail: int | None, attempt: int | None,
         follow: bool) -> None:  # fmt: skip
    """Print a task's stdout (or stderr), read where the job runs. ID may be `last`."""
    svc = _service(ctx)
    stream = "stderr" if stderr_ else "stdout"
    if not follow:
        click.echo(svc.logs(task_id, stream=stream, tail=tail, attempt=attempt), nl=False)
        return
    for chunk in svc.follow_logs(task_id, stream=stream, tail=tail, attempt=attempt):
        click.echo(chunk, nl=False)


# ---------------------------------------------------------------------------- sync / daemon
@cli.command()
@click.option("--cluster", "-c", "clusters", multiple=True, help="Only this cluster (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
@click.pass_context
def sync(ctx: click.Context, clusters: tuple[str, ...], quiet: bool) -> None:
    """One sync cycle: poll jobs, apply state changes, retry, fetch outputs, submit what is
    due. Safe to run from cron: an overlapping run exits 0 at once."""
    reports = _service(ctx).sync(list(clusters) or None)
    failed = False
    for r in reports:
        if r.skipped:
            line = f"{r.cluster}: skipped (another sync holds the lock)"
        elif r.unreachable:
            failed = True
            line = f"{r.cluster}: unreachable, nothing changed: {r.unreachable}"
        else:
            line = (f"{r.cluster}: polled {r.polled}, submitted {r.submitted}, "
                    f"{len(r.changes)} change(s) in {r.seconds:.2f}s")  # fmt: skip
        if r.errors:
            failed = True
            line += "; errors: " + "; ".join(r.errors)
        if not quiet or failed:
            click.echo(line, err=failed)
        if not quiet:
            for tid, old, new in r.changes:
                click.echo(f"  {tid} {old} -> {new}")
    if failed:
        ctx.exit(EXIT_ERROR)


@cli.command()
@click.option("--interval", type=click.FloatRange(min=1), default=30, show_default=True,
              help="Seconds between cycles (with +-10% jitter).")  # fmt: skip
@click.option("--cluster", "-c", "clusters", multiple=True, help="Only this cluster (repeatable).")
@click.option("--max-cycles", type=click.IntRange(min=1), help="Stop after this many cycles.")
@click.pass_context
def daemon(ctx: click.Context, interval: float, clusters: tuple[str, ...], max_cycles: int | None) -> None:
    """Run sync cycles forever; stops cleanly on SIGTERM/SIGINT."""
    from .daemon import run_daemon

    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger().setLevel(logging.INFO)
    run_daemon(_service(ctx), interval=interval, clusters=list(clusters) or None, max_cycles=max_cycles)


# ---------------------------------------------------------------------------- config
@cli.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Show the configuration in effect (file, clusters, registry path)."""
    svc = _service(ctx)
    cfg = svc.config
    click.echo(f"config file: {cfg.path or '(none; built-in local cluster)'}")
    click.echo(f"registry:    {svc.registry.path}")
    click.echo(f"default:     {cfg.default_cluster}")
    if cfg.default_project:
        click.echo(f"project:     {cfg.default_project} (default project)")
    for name, c in sorted(cfg.clusters.items()):
        where = f"{c.user + '@' if c.user else ''}{c.host}:{c.port or 22}" if c.transport == "ssh" else "this machine"
        click.echo(f"cluster {name}: backend={c.backend} transport={c.transport} ({where}) work_dir={c.work_dir}")


def main() -> None:
    cli(prog_name="hpcbridge")
