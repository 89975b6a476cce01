"""What every ``hpcbridge`` command shares: the group class that turns library errors into one
``error:`` line (and exit status 1, or 3 for a wait that timed out), the service of the
invocation, ``key=value`` parsing and the progress lines of a wait."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from .errors import HpcBridgeError, UsageError, WaitTimeout
from .lifecycle import TaskState
from .models import Task
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


class Group(click.Group):
    def add_lazy_command(self, name: str, target: str) -> None:
        """Register ``target`` (``"package.module:attribute"``, a click command) under
        ``name`` without importing it yet."""
        if not isinstance(self.commands, LazyCommands):
            self.commands = LazyCommands(self.commands)
        dict.__setitem__(self.commands, name, target)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcBridgeError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(EXIT_TIMEOUT if isinstance(exc, WaitTimeout) else EXIT_ERROR)


def service(ctx: click.Context) -> Service:
    obj = ctx.find_root().obj
    if obj.get("service") is None:
        obj["service"] = Service.open(obj.get("config"), obj.get("db"), source="cli")
        ctx.find_root().call_on_close(obj["service"].close)
    svc: Service = obj["service"]
    return svc


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
