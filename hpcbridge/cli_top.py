"""``hpcbridge top``: the full-screen view (Textual, an optional extra, imported only here and
only when the command runs)."""

from __future__ import annotations

import sys

import click

from . import topview as tv
from .cli_common import service
from .errors import UsageError
from .lifecycle import TaskState
from .service import Service
from .transfers import observe_transfers


@click.command("top")
@click.option("--sync", "do_sync", is_flag=True,
              help="Also run sync cycles in the background (through the command budget). Without it "
                   "top reads only the registry: zero scheduler commands.")  # fmt: skip
@click.option("--sync-interval", type=click.FloatRange(min=5), default=30, show_default=True,
              help="Seconds between background sync cycles (with --sync).")  # fmt: skip
@click.option("--interval", type=click.FloatRange(min=0.2), default=2, show_default=True,
              help="Seconds between redraws from the registry.")  # fmt: skip
@click.option("--project", "-P", help="Start filtered to this project (key p cycles).")
@click.option("--state", "-s", "state", default="all", show_default=True,
              type=click.Choice([*tv.STATE_FILTERS, *(s.value for s in TaskState)]),
              help="Start filtered to these states (key s cycles).")  # fmt: skip
@click.pass_context
def top(ctx: click.Context, do_sync: bool, sync_interval: float, interval: float, project: str | None,
        state: str) -> None:  # fmt: skip
    """Full-screen live view of every task, drawn from the registry: counts by state per
    cluster and project, age of the last sync, a sortable, filterable task table and a detail
    pane. Keys: arrows move, o sort, r reverse, s state, p project, l logs (follow), k kill
    (asks first), d detail pane, q quit."""
    try:
        from . import tui
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("textual", "rich"):
            raise
        raise UsageError("hpcbridge top needs the optional package textual, which is not installed",
                         hint="pip install 'hpcbridge[tui]'") from None  # fmt: skip
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("hpcbridge top needs a terminal",
                         hint="for a plain listing that refreshes use `hpcbridge tasks list --watch`")  # fmt: skip
    svc = service(ctx)
    obj = ctx.find_root().obj

    def sync_service() -> Service:
        return Service.open(obj.get("config"), obj.get("db"), source="top")

    app = tui.TopApp(svc, interval=interval, project=project, state=state,
                     sync_service=sync_service if do_sync else None, sync_interval=sync_interval)  # fmt: skip
    with observe_transfers(None):  # no progress lines over the full screen
        app.run()
