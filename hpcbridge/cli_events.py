"""``hpcbridge events ...``: the notification outbox and the ``[[notify]]`` rules."""

from __future__ import annotations

import json
import time

import click

from .cli_common import EXIT_ERROR, Group, service


@click.group(cls=Group)
def events() -> None:
    """Notifications: what the outbox delivered, what waits or was given up; test a rule."""


def _age(at: float | None) -> str:
    if at is None:
        return "-"
    s = max(0, int(time.time() - at))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


@events.command("list")
@click.option("--pending", is_flag=True, help="Only events not delivered yet.")
@click.option("--task", "task_id", help="Only this task's events (id or prefix).")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="Newest N events.")
@click.option("--all", "everything", is_flag=True, help="Also events no rule wanted (status no_rule).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def list_cmd(ctx: click.Context, pending: bool, task_id: str | None, limit: int, everything: bool,
             as_json: bool) -> None:  # fmt: skip
    """Outbox events: delivered (done), pending (with the next try and last error) or given_up."""
    rows = service(ctx).outbox(pending=pending, task_id=task_id, limit=limit, everything=everything)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no pending events" if pending else "no events")
        return
    click.echo(f"{'EVENT':<20} {'TASK':<14} {'EVENT KIND':<14} {'STATUS':<9} {'TRIES':>5}  WHEN / ERROR")
    for r in rows:
        n = r.notice
        if r.status == "pending":
            wait = max(0, int(r.next_try_at - time.time()))
            note = f"next try in {wait}s" + (f"; {r.last_error}" if r.last_error else "")
        elif r.status == "given_up":
            note = f"GIVEN UP: {r.last_error or '?'}"
        else:
            note = f"delivered {_age(r.delivered_at)}" if r.status == "done" else "no rule matched"
        click.echo(f"{n.key:<20} {n.task_id:<14} {n.kind:<14} {r.status:<9} {n.tries:>5}  {note}")


@events.command("test")
@click.argument("rule")
@click.pass_context
def test_cmd(ctx: click.Context, rule: str) -> None:
    """Send a test message through every URL and command of the [[notify]] rule RULE."""
    failed = False
    for target, error in service(ctx).test_notify(rule):
        if error is None:
            click.echo(f"sent: {target}")
        else:
            failed = True
            click.echo(f"error: {target}: {error}", err=True)
    if failed:
        ctx.exit(EXIT_ERROR)
