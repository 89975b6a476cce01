"""hpcbridge: every simulation you run on a Slurm cluster as a durable, trackable task.

Quick start::

    import hpcbridge
    task = hpcbridge.submit(["python3", "sim.py", "--n", "64"], cluster="lab",
                            inputs=["params.json"], outputs=["result.json"])
    task.wait()
    task.download_outputs("results/")

``hpcbridge.Task(id)`` works in any later process: the registry is the source of truth.
"""

from .api import Task, configure, get_task, list_tasks, submit, submit_many, sync, wait_all
from .errors import (
    ConfigError,
    HpcBridgeError,
    TaskNotFound,
    TransportError,
    UsageError,
)
from .lifecycle import RetryPolicy, TaskState

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HpcBridgeError",
    "RetryPolicy",
    "Task",
    "TaskNotFound",
    "TaskState",
    "TransportError",
    "UsageError",
    "configure",
    "get_task",
    "list_tasks",
    "submit",
    "submit_many",
    "sync",
    "wait_all",
]
