"""``hpcbridge report``: one self-contained HTML page (``--html FILE``) or JSON (``--json``)
about a project, some tasks, or all of them, from the registry alone."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from .cli_common import service
from .errors import UsageError


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temp file renamed over it)."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}",
                         hint="check that the directory exists and is writable") from None  # fmt: skip


@click.command("report")
@click.argument("task_ids", nargs=-1)
@click.option("--project", "-P", help="Report on every task of this project.")
@click.option("--html", "html_file", metavar="FILE", help="Write the report as one self-contained HTML page.")
@click.option("--json", "json_file", metavar="FILE", is_flag=False, flag_value="-",
              help="Write the report's data as JSON to FILE (`--json -` or `--json` alone: stdout).")  # fmt: skip
@click.option("--lines", "-n", type=click.IntRange(min=0), default=10, show_default=True,
              help="Lines of stderr kept for each failure.")  # fmt: skip
@click.pass_context
def report(ctx: click.Context, task_ids: tuple[str, ...], project: str | None, html_file: str | None,
           json_file: str | None, lines: int) -> None:  # fmt: skip
    """A report on a project, some tasks (IDs), or every task: counts by state, a timeline of
    every attempt (queue and run phases, requeues), efficiency per task, failures with their
    stderr tail, and the sweep's parameters. The HTML page loads nothing from the network."""
    if not html_file and not json_file:
        raise UsageError("say where the report goes: --html FILE and/or --json [FILE]",
                         hint="hpcbridge report --project NAME --html report.html")  # fmt: skip
    from .reporting import collect

    data = collect(service(ctx), project=project, ids=task_ids, lines=lines)
    if html_file:
        from .report_html import render_report

        _write(html_file, render_report(data))
        click.echo(f"wrote {html_file} ({data['summary']['tasks']} tasks)", err=True)
    if json_file == "-":
        click.echo(json.dumps(data, indent=2))
    elif json_file:
        _write(json_file, json.dumps(data, indent=2) + "\n")
        click.echo(f"wrote {json_file}", err=True)
