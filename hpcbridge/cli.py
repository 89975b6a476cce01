"""The ``hpcbridge`` command: thin click commands over ``Service``.

Each command opens the service, makes one call, formats the result. Library errors become one
clean line on stderr (plus a hint) and exit status 1 in one place, ``Group.invoke``; a wait
that times out exits 3. Logging handlers are configured here and nowhere in the library.
"""

from __future__ import annotations

import sys

import click

from . import lazylog
from .cli_common import EXIT_ERROR, Group, service, wants_logging
from .cli_complete import complete_clusters, complete_task_ids


def _setup_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    # Configured now, or (a command that only reads the registry, without -v) just before
    # hpcbridge first logs: such a command then never imports logging (lazylog).
    lazylog.set_up_when_used(lambda: _setup_logging(verbose))
    if verbose or wants_logging(ctx):
        lazylog.set_up_now()


# ---------------------------------------------------------------------------- logs
@cli.command()
@click.argument("task_id", shell_complete=complete_task_ids)
@click.option("--stderr", "stderr_", is_flag=True, help="Show stderr instead of stdout.")
@click.option("--tail", "-n", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("--attempt", type=click.IntRange(min=1), help="Attempt number (default: latest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the task ends.")
@click.pass_context
def logs(ctx: click.Context, task_id: str, stderr_: bool, tail: int | None, attempt: int | None,
         follow: bool) -> None:  # fmt: skip
    """Print a task's stdout (or stderr), read where the job runs. ID may be `last`."""
    svc = service(ctx)
    stream = "stderr" if stderr_ else "stdout"
    if not follow:
        click.echo(svc.logs(task_id, stream=stream, tail=tail, attempt=attempt), nl=False)
        return
    for chunk in svc.follow_logs(task_id, stream=stream, tail=tail, attempt=attempt):
        click.echo(chunk, nl=False)


# ---------------------------------------------------------------------------- sync / daemon
@cli.command()
@click.option("--cluster", "-c", "clusters", multiple=True, help="Only this cluster (repeatable).",
              shell_complete=complete_clusters)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
@click.pass_context
def sync(ctx: click.Context, clusters: tuple[str, ...], quiet: bool) -> None:
    """One sync cycle: poll jobs, apply state changes, retry, fetch outputs, submit what is
    due. Safe to run from cron: an overlapping run exits 0 at once."""
    reports = service(ctx).sync(list(clusters) or None)
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
@click.option("--cluster", "-c", "clusters", multiple=True, help="Only this cluster (repeatable).",
              shell_complete=complete_clusters)
@click.option("--max-cycles", type=click.IntRange(min=1), help="Stop after this many cycles.")
@click.pass_context
def daemon(ctx: click.Context, interval: float, clusters: tuple[str, ...], max_cycles: int | None) -> None:
    """Run sync cycles forever; stops cleanly on SIGTERM/SIGINT."""
    import logging

    from .daemon import run_daemon

    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger().setLevel(logging.INFO)
    run_daemon(service(ctx), interval=interval, clusters=list(clusters) or None, max_cycles=max_cycles)


# ---------------------------------------------------------------------------- config
@cli.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Show the configuration in effect (file, clusters, registry path)."""
    svc = service(ctx)
    cfg = svc.config
    click.echo(f"config file: {cfg.path or '(none; built-in local cluster)'}")
    click.echo(f"registry:    {svc.registry.path}")
    click.echo(f"default:     {cfg.default_cluster}")
    if cfg.default_project:
        click.echo(f"project:     {cfg.default_project} (default project)")
    for name, c in sorted(cfg.clusters.items()):
        where = f"{c.user + '@' if c.user else ''}{c.host}:{c.port or 22}" if c.transport == "ssh" else "this machine"
        click.echo(f"cluster {name}: backend={c.backend} transport={c.transport} ({where}) work_dir={c.work_dir}")
    for rule in cfg.notify:  # URLs masked: they carry tokens and passwords
        d = rule.describe()
        to = ", ".join([*d["urls"], *([" ".join(d["command"])] if d["command"] else [])])
        click.echo(f"notify {rule.name}: on {','.join(rule.on)}{' (digest)' if rule.digest else ''} -> {to}")
    for warning in cfg.warnings:
        click.echo(f"warning: {warning}", err=True)
    import importlib.util  # finds apprise without importing it

    if any(r.urls for r in cfg.notify) and importlib.util.find_spec("apprise") is None:
        click.echo("warning: notify rules send to URLs, but apprise is not installed; "
                   "pip install 'hpcbridge[notify]'", err=True)  # fmt: skip


# Loaded when first used (`hpcbridge tasks list` never imports what `submit` needs).
cli.add_lazy_command("submit", "hpcbridge.cli_submit:submit")
cli.add_lazy_command("tasks", "hpcbridge.cli_tasks:tasks")
cli.add_lazy_command("projects", "hpcbridge.cli_projects:projects")
cli.add_lazy_command("report", "hpcbridge.cli_report:report")
cli.add_lazy_command("clusters", "hpcbridge.cli_clusters:clusters")
cli.add_lazy_command("events", "hpcbridge.cli_events:events")
cli.add_lazy_command("top", "hpcbridge.cli_top:top")


def main() -> None:
    cli(prog_name="hpcbridge")
