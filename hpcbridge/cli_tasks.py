"""``hpcbridge tasks ...``: list, inspect, wait for, watch, cancel and download tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from . import listing
from .cli_common import Group, reads_registry_only, rerun_watched, runtime, watch_option
from .cli_complete import complete_clusters, complete_projects
from .errors import UsageError
from .registry_file import db_file
from .report import duration, iso, task_summary
from .report_data import RECORD_COLUMNS, USAGE_COLUMNS, metadata_keys, task_records
from .states import TaskState

if TYPE_CHECKING:
    from .task_rows import ListedTask


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
    selected = [TaskState(s) for s in states] or None
    if active:
        selected = [s for s in (selected or TaskState) if not s.terminal]
    wanted: dict[str, str | None] = {}
    for pair in meta:
        key, sep, value = pair.partition("=")
        if not key:
            raise UsageError(f"--meta must look like KEY=VALUE or KEY, got {pair!r}")
        wanted[key] = value if sep else None
    rows, usage = _read(ctx, selected, cluster, limit, project, wanted or None, show_usage)
    if fmt:
        _export(rows, usage if show_usage else None, fmt)
        return
    if as_json:
        import json

        out = [task_summary(t) for t in rows]
        for item in out if show_usage else ():
            u = usage.get(item["id"]) or {}
            item.update(cpu_efficiency=u.get("cpu_efficiency"), mem_efficiency=u.get("mem_efficiency"))
        click.echo(json.dumps(out, indent=2))
        return
    _table(rows, usage if show_usage else None, [])


def _read(ctx: click.Context, states: list[TaskState] | None, cluster: str | None, limit: int,
          project: str | None, metadata: dict[str, str | None] | None,
          show_usage: bool) -> tuple[Sequence[ListedTask], dict[str, Mapping[str, Any]]]:  # fmt: skip
    """The tasks of a listing and (``show_usage``) their current attempts' usage. A listing
    reads the registry only, so neither the config nor the service is opened (``--config``
    plays no part): the registry file is read through ``listing.open_source`` (read-only
    rows when it has the current schema) and closed again, so a ``--watch`` round holds no
    connection between rounds. Through the invocation's registry if one is open already."""
    obj = ctx.find_root().obj or {}
    opened = obj.get("service") is not None or obj.get("runtime") is not None
    source = runtime(ctx).registry if opened else listing.open_source(db_file(obj.get("db")))
    try:
        rows = listing.find_listed(source, states=states, cluster=cluster, limit=limit, project=project,
                                   metadata=metadata)  # fmt: skip
        usage = listing.usage_of(source, [t.id for t in rows]) if show_usage else {}
    finally:
        if not opened:
            source.close()
    return rows, usage


def _export(rows: Sequence[ListedTask], usage: Mapping[str, Mapping[str, Any]] | None, fmt: str) -> None:
    """``tasks list --format``: the listing's records (``report_data.task_records``)."""
    records = task_records(rows, usage)
    if fmt == "json":
        import json

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
    _table(rows, usage, metadata_keys(rows))  # as `projects show`: one column per metadata key


def _table(rows: Sequence[ListedTask], usage: Mapping[str, Mapping[str, Any]] | None, keys: list[str]) -> None:
    """The listing's table: its columns, CPU% and MEM% with ``usage``, then one column per
    metadata key of ``keys``, and the name. Echoed at once (one write, not one per row)."""
    if not rows:
        click.echo("no tasks", err=True)
        return
    widths = {k: max(len(k), *(len(t.metadata.get(k, "")) for t in rows)) for k in keys}
    extra = "".join(f"{k.upper():<{widths[k]}}  " for k in keys)
    cols = f"{'CPU%':>5} {'MEM%':>5}  " if usage is not None else ""
    lines = [f"{'ID':<14}{'STATE':<14}{'CLUSTER':<10}{'ATT':>4}  {'CREATED':<20}{'RUN':>8}  {cols}{extra}NAME"]
    for t in rows:
        u = (usage or {}).get(t.id) or {}
        cols = f"{_pct(u.get('cpu_efficiency')):>5} {_pct(u.get('mem_efficiency')):>5}  " if usage is not None else ""
        extra = "".join(f"{t.metadata.get(k, '-'):<{widths[k]}}  " for k in keys)
        created = (iso(t.created_at) or "")[:19].replace("T", " ")
        # A "!" marks a task with a warning, e.g. a success whose outputs matched nothing.
        state = t.state.value + ("!" if (t.reason or "").startswith("warning:") else "")
        lines.append(f"{t.id:<14}{state:<14}{t.cluster:<10}{t.attempt_count:>4}  {created:<20}"
                     f"{duration(t.run_seconds):>8}  {cols}{extra}{t.name}")  # fmt: skip
    click.echo("\n".join(lines))
    if any((t.reason or "").startswith("warning:") for t in rows):
        click.echo("! = finished with a warning (see `hpcbridge tasks info ID`)", err=True)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


# The other subcommands are loaded when they run (cli_task_actions): `tasks list` builds
# only its own options.
tasks.add_lazy_command("info", "hpcbridge.cli_task_actions:tasks_info")
tasks.add_lazy_command("kill", "hpcbridge.cli_task_actions:tasks_kill")
tasks.add_lazy_command("wait", "hpcbridge.cli_task_actions:tasks_wait")
tasks.add_lazy_command("top", "hpcbridge.cli_task_actions:tasks_top")
tasks.add_lazy_command("meta", "hpcbridge.cli_task_actions:tasks_meta")
tasks.add_lazy_command("download", "hpcbridge.cli_task_actions:tasks_download")
tasks.add_lazy_command("files", "hpcbridge.cli_task_actions:tasks_files")
tasks.add_lazy_command("tail", "hpcbridge.cli_task_actions:tasks_tail")
