"""A module's logger that imports ``logging`` only when something is logged (or asked).

``logging`` and what it pulls in (traceback, string, textwrap...) take a noticeable part of
the start-up of a command that logs nothing, such as ``hpcbridge tasks list``
(benchmarks/bench_startup.py). The modules on that path write
``log = get_logger(__name__)`` instead of ``logging.getLogger(__name__)``; every other
module may keep importing ``logging`` itself.

The CLI configures logging (a handler on stderr with a format) through ``set_up_when_used``
: the set-up runs before the first record of any of these loggers, or at once with
``set_up_now`` (the CLI calls it for every command except those that only read the
registry, so records of other libraries find the handler in place as before).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import logging

_setup: list[Callable[[], None]] = []  # the pending set-up, at most one


def set_up_when_used(setup: Callable[[], None]) -> None:
    """Run ``setup`` (which configures ``logging``) before any lazy logger is first used."""
    _setup[:] = [setup]


def set_up_now() -> None:
    """Run the pending set-up, if any (once)."""
    while _setup:
        _setup.pop()()


class _LazyLogger:
    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import logging

            set_up_now()
            self._logger = logging.getLogger(self._name)
        return getattr(self._logger, attr)


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, resolved on first use."""
    return cast("logging.Logger", _LazyLogger(name))
