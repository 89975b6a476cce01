"""What every ``hpcbridge`` command shares: the group class that turns library errors into one
``error:`` line (and exit status 1, or 3 for a wait that timed out), the service of the
invocation, ``key=value`` parsing and the progress lines of a wait."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from . import lazylog, transfers
from .errors import HpcBridgeError, UsageError, WaitTimeout

# The service (and the sync, submission and slurm machinery under it) is imported by the
# commands that use it, and the model's classes with it: `tasks list` reads the registry
# without them (listing.open_source).
if TYPE_CHECKING:
    from .models import Task
    from .runtime import Runtime
    from .service import Service

EXIT_ERROR = 1
EXIT_TIMEOUT = 3


class LazyCommands(dict[str, Any]):
    """A group's commands where some are ``"module:attribute"`` until first looked up: the
    module of a command is imported only when that command runs (or help lists it)."""

    def _load(self, name: str, value: Any) -> click.Command:
        if isinstance(value, str):
            module, _, attr = value.partition(":")
            value = getattr(importlib.import_module(module), attr)
            dict.__setitem__(self, name, value)
        cmd: click.Command = value
        return cmd

    def __getitem__(self, name: str) -> click.Command:
        return self._load(name, dict.__getitem__(self, name))

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> Iterator[click.Command]:  # type: ignore[override]
        return (self[name] for name in list(self))

    def items(self) -> Iterator[tuple[str, click.Command]]:  # type: ignore[override]
        return ((name, self[name]) for name in list(self))


READS_ONLY = "hpcbridge.reads_only"  # ctx.meta: the command to run only reads the registry


def reads_registry_only(cmd: click.Command) -> click.Command:
    """Mark a command that only reads the registry (and prints): logging is configured for
    it only if hpcbridge logs something (``lazylog``), so it starts without importing it."""
    cmd.reads_registry_only = True  # type: ignore[attr-defined]
    return cmd


def wants_logging(ctx: click.Context) -> bool:
    """Whether the command being run needs logging configured before it starts: every one
    but those marked ``reads_registry_only``. Unknown yet (a group is being entered):
    the group's ``resolve_command`` decides once it knows the command."""
    return ctx.meta.get(READS_ONLY) is False


class Group(click.Group):
    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None and not isinstance(cmd, click.Group):
            reads_only = bool(getattr(cmd, "reads_registry_only", False))
            ctx.meta[READS_ONLY] = reads_only
            if not reads_only:
                lazylog.set_up_now()  # a no-op before the root's callback asked for a set-up
        return name, cmd, rest

    def add_lazy_command(self, name: str, target: str) -> None:
        """Register ``target`` (``"package.module:attribute"``, a click command) under
        ``name`` without importing it yet."""
        if not isinstance(self.commands, LazyCommands):
            self.commands = LazyCommands(self.commands)
        dict.__setitem__(self.commands, name, target)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            if ctx.parent is not None or transfers.watching() or not is_terminal(err=True):
                return super().invoke(ctx)
            # On a terminal every command shows long uploads and downloads (bytes, rate).
            with transfers.observe_transfers(transfer_printer()):
                return super().invoke(ctx)
        except HpcBridgeError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(EXIT_TIMEOUT if isinstance(exc, WaitTimeout) else EXIT_ERROR)


def service(ctx: click.Context) -> Service:
    """The invocation's service (opened on first use, closed when the command ends)."""
    obj = ctx.find_root().obj
    if obj.get("service") is None:
        from .service import Service

        if obj.get("runtime") is not None:
            obj["service"] = Service(obj["runtime"])
        else:
            obj["service"] = Service.open(obj.get("config"), obj.get("db"), source="cli")
            ctx.find_root().call_on_close(obj["service"].close)
    svc: Service = obj["service"]
    return svc


def runtime(ctx: click.Context) -> Runtime:
    """The invocation's config and registry without the use cases above them (the service's
    own runtime once it is open): what a command that only reads the registry needs."""
    obj = ctx.find_root().obj
    if obj.get("service") is not None:
        rt: Runtime = obj["service"].runtime
        return rt
    if obj.get("runtime") is None:
        from .runtime import Runtime

        obj["runtime"] = Runtime.open(obj.get("config"), obj.get("db"), source="cli")
        ctx.find_root().call_on_close(obj["runtime"].close)
    rt = obj["runtime"]
    return rt


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like key=value, got {item!r}")
        out[key] = value
    return out


def progress_printer(svc: Service) -> Any:
    """One stderr line per change of state (and, while a task waits, of Slurm's reason)."""
    from .states import TaskState

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


# ---------------------------------------------------------------------------- watch modes
DEFAULT_WATCH_SECONDS = 2.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase the screen (what `watch` and click.clear do)


def is_terminal(err: bool = False) -> bool:
    """Whether stdout (or stderr) is a terminal: the switch between drawing in place and
    printing plain lines."""
    stream: Any = sys.stderr if err else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def watch_option(default: float = DEFAULT_WATCH_SECONDS, minimum: float = 0.1) -> Any:
    """``--watch/-w [SECS]``: the same option on every listing (``--watch`` alone: ``default``).
    The value is optional, so put ``--watch`` after the command's arguments or give SECS."""
    return click.option("--watch", "-w", "watch", type=click.FloatRange(min=minimum), is_flag=False,
                        flag_value=default, default=None, metavar="[SECS]",
                        help=f"Redraw every SECS seconds (default {default:g}) until Ctrl-C: in place "
                             "on a terminal, as separated plain blocks otherwise. Reads only the "
                             "registry.")  # fmt: skip


def watch_loop(interval: float, draw: Callable[[], bool | None], *, terminal: bool | None = None,
               title: str = "", max_rounds: int | None = None,
               sleep: Callable[[float], None] | None = None) -> int:  # fmt: skip
    """Call ``draw`` (which echoes one block and returns True when there is nothing more to
    watch) every ``interval`` seconds until it is done or Ctrl-C. On a terminal each round
    clears the screen first; elsewhere the blocks are appended, each after a plain
    ``--- HH:MM:SS`` line, with no escape codes. Returns the number of rounds drawn."""
    tty = is_terminal() if terminal is None else terminal
    pause = sleep or time.sleep
    rounds = 0
    try:
        while max_rounds is None or rounds < max_rounds:
            stamp = time.strftime("%H:%M:%S")
            if tty:
                click.echo(CLEAR_SCREEN, nl=False, color=True)  # not stripped: we know it is a terminal
                click.echo(f"every {interval:g}s: {title}  {stamp}")
            else:
                click.echo(("" if rounds == 0 else "\n") + f"--- {stamp}" + (f" {title}" if title else ""))
            rounds += 1
            if draw():
                break
            pause(interval)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends: no traceback, exit status 0
        if tty:
            click.echo("")
    return rounds


def rerun_watched(ctx: click.Context, interval: float | None, title: str = "") -> bool:
    """For a command with a ``watch`` parameter: with ``--watch`` given, run the command's
    own body again every ``interval`` seconds (``watch_loop``) and return True (the caller
    returns); without it return False at once and the body runs once, as before."""
    if interval is None:
        return False
    params = {**ctx.params, "watch": None}
    command = ctx.command
    watch_loop(interval, lambda: ctx.invoke(command, **params) and None, title=title or ctx.command_path)
    return True


# ---------------------------------------------------------------------------- wait progress
def progress_bar(label: str = "") -> Any:
    """For a wait on a terminal: one stderr line redrawn in place (a bar, counts by state,
    an ETA from the tasks' run times); call ``.close()`` at the end to move past it."""
    import shutil

    from .progress import counts_of, eta_of, progress_line

    drawn = [False]

    def show(tasks: list[Task]) -> None:
        width = max(40, shutil.get_terminal_size((80, 24)).columns - 1)
        text = progress_line(counts_of(tasks), eta_of(tasks, time.time()), width=width, label=label)
        click.echo("\r" + text + "\x1b[K", err=True, nl=False, color=True)
        drawn[0] = True

    def close() -> None:
        if drawn[0]:
            click.echo("", err=True)

    show.close = close  # type: ignore[attr-defined]
    return show


# ---------------------------------------------------------------------------- transfers
TRANSFER_SHOWN_AFTER = 1.0  # seconds: a file that takes less goes by without a line
TRANSFER_REDRAW = 0.2  # seconds between redraws of a transfer's line


def transfer_printer(clock: Callable[[], float] = time.monotonic, *, shown_after: float = TRANSFER_SHOWN_AFTER,
                     redraw: float = TRANSFER_REDRAW) -> transfers.TransferObserver:  # fmt: skip
    """A transfer observer that draws, on stderr, one line per file that takes longer than
    ``shown_after`` seconds: its name, the bytes so far (of all) and the rate, redrawn in
    place at most every ``redraw`` seconds and left on screen when the file is done."""
    import shutil

    from .progress import transfer_line

    state: dict[str, Any] = {"key": None, "start": 0.0, "drawn": 0.0}

    def observe(direction: str, name: str, done: int, total: int | None) -> None:
        now = clock()
        key = (direction, name)
        if state["key"] != key or done == 0 and state["key"] == key and state["drawn"] == -1.0:
            state.update(key=key, start=now, drawn=0.0)
        elapsed = now - state["start"]
        finished = total is not None and done >= total
        if elapsed < shown_after or state["drawn"] == -1.0:
            return
        if not finished and now - state["drawn"] < redraw:
            return
        width = max(40, shutil.get_terminal_size((80, 24)).columns - 1)
        line = transfer_line(f"{direction} {name}", done, total, elapsed, width=width)
        click.echo("\r" + line + "\x1b[K", err=True, nl=finished, color=True)
        state["drawn"] = -1.0 if finished else now

    return observe
