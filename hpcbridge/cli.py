"""The ``hpcbridge`` command: thin click commands over ``Service``.

Each command opens the service, makes one call, formats the result. Library errors become one
clean line on stderr (plus a hint) and exit status 1 in one place, ``Group.invoke``; a wait
that times out exits 3. Logging handlers are configured here and nowhere in the library.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from . import projects as proj
from .cli_common import EXIT_ERROR, Group, parse_pairs, progress_printer, service
from .cli_projects import projects
from .cli_tasks import tasks
from .cli_top import top
from .errors import UsageError
from .lifecycle import RETRYABLE_NAMES, TaskState
from .options import SubmitOptions, option_fields
from .sweep import parse_axes, parse_params_lines


def _setup_logging(verbose: int) -> None:
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
    _setup_logging(verbose)


# ---------------------------------------------------------------------------- submit


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
            value = parse_pairs(value, "--" + ("meta" if f.name == "metadata" else f.name))
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
    svc = service(ctx)
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
        tasks = svc.wait([t.id for t in tasks], on_progress=progress_printer(svc))
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
    svc = service(ctx)
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
@click.option("--cluster", "-c", "clusters", multiple=True, help="Only this cluster (repeatable).")
@click.option("--max-cycles", type=click.IntRange(min=1), help="Stop after this many cycles.")
@click.pass_context
def daemon(ctx: click.Context, interval: float, clusters: tuple[str, ...], max_cycles: int | None) -> None:
    """Run sync cycles forever; stops cleanly on SIGTERM/SIGINT."""
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


cli.add_command(tasks)
cli.add_command(projects)
cli.add_command(top)


def main() -> None:
    cli(prog_name="hpcbridge")
