"""Shell completion callbacks (click's ``shell_complete=``) for task ids, project names and
cluster names, read from the registry and the config.

Enable it with one line in the shell's rc file (README, "Shell completion"), e.g. for bash
``eval "$(_HPCBRIDGE_COMPLETE=bash_source hpcbridge)"``. Every callback is fast (one
read-only indexed query; the registry file is never created or migrated) and silent: on a
broken config or database it completes nothing rather than print a traceback into the
user's prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .registry_file import db_file
from .states import TaskState

# Imported when completing (every command declares these callbacks, `tasks list` too, which
# reads neither the config nor through the full registry module).
if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


def _load_config(path: str | None) -> Any:
    """``config.load_config``, imported when a completion needs it."""
    from .config import load_config as load

    return load(path)


def _peek_names(path: str, column: str, prefix: str = "", *, limit: int) -> list[tuple[str, ...]]:
    """``registry.peek_names``, imported when a completion needs it."""
    from .registry import peek_names as peek

    return peek(path, column, prefix, limit=limit)

MAX_ITEMS = 200  # more than a shell shows usefully; keeps the query cheap at 100k tasks


def _root_param(ctx: click.Context, name: str) -> Any:
    return ctx.find_root().params.get(name)


def _quiet(fn: Callable[[click.Context, str], list[CompletionItem]]) -> Callable[..., list[CompletionItem]]:
    """Any error while completing means: no candidates (never a traceback in a prompt)."""

    def callback(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return fn(ctx, incomplete)
        except Exception:  # noqa: BLE001 - completion must stay silent
            return []

    callback.__name__ = fn.__name__
    callback.__doc__ = fn.__doc__
    return callback


def _db(ctx: click.Context) -> str:
    return db_file(_root_param(ctx, "db"))


@_quiet
def complete_task_ids(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Task ids starting with what was typed (newest first), with state and name as help;
    ``last`` too, where commands accept it."""
    from click.shell_completion import CompletionItem

    items = [CompletionItem(tid, help=f"{state} {name}".strip())
             for tid, state, name in _peek_names(_db(ctx), "id", incomplete, limit=MAX_ITEMS)]  # fmt: skip
    if "last".startswith(incomplete) and incomplete:
        items.append(CompletionItem("last", help="the newest task"))
    return items


@_quiet
def complete_projects(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Project names in the registry (and the config's default project)."""
    from click.shell_completion import CompletionItem

    names = [row[0] for row in _peek_names(_db(ctx), "project", incomplete, limit=MAX_ITEMS)]
    try:
        default = _load_config(_root_param(ctx, "config")).default_project
    except Exception:  # noqa: BLE001 - the registry's names are still worth offering
        default = None
    if default and default.startswith(incomplete) and default not in names:
        names.append(default)
    return [CompletionItem(n) for n in names]


@_quiet
def complete_clusters(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Cluster names of the config, then those only the registry knows (removed from the
    config but still holding tasks)."""
    from click.shell_completion import CompletionItem

    items: dict[str, str] = {}
    try:
        cfg = _load_config(_root_param(ctx, "config"))
        for name, c in sorted(cfg.clusters.items()):
            if name.startswith(incomplete):
                items[name] = f"{c.backend}/{c.transport}" + (" (default)" if name == cfg.default_cluster else "")
    except Exception:  # noqa: BLE001 - a broken config still leaves the registry's names
        pass
    for (name,) in _peek_names(_db(ctx), "cluster", incomplete, limit=MAX_ITEMS):
        items.setdefault(name, "in the registry")
    return [CompletionItem(n, help=h) for n, h in items.items()]


@_quiet
def complete_states(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Task states (for options that are not already a click.Choice)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(s.value) for s in TaskState if s.value.startswith(incomplete)]
