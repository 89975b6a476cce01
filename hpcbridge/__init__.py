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

# (``sweep`` the function shadows ``hpcbridge.sweep`` the module, which api imports first:
# the module stays importable as ``hpcbridge.sweep`` through sys.modules.)
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
    "wait_all",
]
