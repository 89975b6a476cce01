"""hpcbridge: every simulation you run on a Slurm cluster as a durable, trackable task.

Quick start::

    import hpcbridge
    task = hpcbridge.submit(["python3", "sim.py", "--n", "64"], cluster="lab",
                            inputs=["params.json"], outputs=["result.json"])
    task.wait()
    task.download_outputs("results/")

``hpcbridge.Task(id)`` works in any later process: the registry is the source of truth.
Test helpers (a scripted backend, a replayed transport) are in ``hpcbridge.testing``.
"""

# The names are bound on first use (PEP 562), so a CLI command that needs none of them does
# not import the API and everything under it: `python -m hpcbridge tasks list` imports only
# what it reads (benchmarks/bench_startup.py). Type checkers read the imports below.
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import (
        Project,
        Task,
        configure,
        get_task,
        list_tasks,
        submit,
        submit_many,
        sweep,
        sync,
        to_records,
        wait_all,
    )
    from .cycle import SyncReport
    from .errors import (
        AmbiguousTaskId,
        AuthenticationError,
        BackendError,
        CommandFailed,
        CommandTimeout,
        ConfigError,
        ConflictError,
        HostKeyError,
        HpcBridgeError,
        IllegalTransition,
        ParseError,
        RegistryBusy,
        RegistryError,
        RemoteFileError,
        RemoteFileNotFound,
        SchedulerError,
        SchedulerUnavailable,
        SubmitLimitReached,
        TaskNotFound,
        TransportError,
        UsageError,
        WaitTimeout,
    )
    from .lifecycle import RetryPolicy, TaskState
    from .options import SubmitOptions

__version__ = "0.1.0"

__all__ = [
    "AmbiguousTaskId",
    "AuthenticationError",
    "BackendError",
    "CommandFailed",
    "CommandTimeout",
    "ConfigError",
    "ConflictError",
    "HostKeyError",
    "HpcBridgeError",
    "IllegalTransition",
    "ParseError",
    "Project",
    "RegistryBusy",
    "RegistryError",
    "RemoteFileError",
    "RemoteFileNotFound",
    "RetryPolicy",
    "SchedulerError",
    "SchedulerUnavailable",
    "SubmitLimitReached",
    "SubmitOptions",
    "SyncReport",
    "Task",
    "TaskNotFound",
    "TaskState",
    "TransportError",
    "UsageError",
    "WaitTimeout",
    "configure",
    "get_task",
    "list_tasks",
    "submit",
    "submit_many",
    "sweep",
    "sync",
    "to_records",
    "wait_all",
]


# Where each name lives: the module of the package that defines it.
_HOME = {
    **dict.fromkeys(("Project", "Task", "configure", "get_task", "list_tasks", "submit",
                     "submit_many", "sweep", "sync", "to_records", "wait_all"), "api"),  # fmt: skip
    "SyncReport": "cycle", "RetryPolicy": "lifecycle", "TaskState": "lifecycle",
    "SubmitOptions": "options",
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name in __all__:
        import importlib

        value = getattr(importlib.import_module(f".{_HOME.get(name, 'errors')}", __name__), name)
        if name not in _SHADOWED:
            globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# ``sweep`` the function shares its name with ``hpcbridge.sweep`` the module: importing the
# module binds it as a package attribute, which would hide the function. A data descriptor on
# the module's class wins over that binding (the module stays in sys.modules).
_SHADOWED = frozenset({"sweep"})


def _install_shadow_guard() -> None:
    import sys
    import types

    class _Package(types.ModuleType):
        @property
        def sweep(self) -> object:
            return __getattr__("sweep")

        @sweep.setter
        def sweep(self, value: object) -> None:
            pass  # the import system binding the submodule: keep the function visible

    sys.modules[__name__].__class__ = _Package


_install_shadow_guard()
