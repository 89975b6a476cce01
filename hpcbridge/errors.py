"""One error tree for hpcbridge.

Every error carries the evidence (what was tried, what came back) and, where there is one, the
fix (``hint``). ``transient`` tells callers (the sync cycle, the daemon) whether trying again
later may succeed without anybody changing anything; a transient error must never change a
task's state. The tree (``*`` = transient)::

    HpcBridgeError
    ├── ConfigError                 the config file or environment is invalid
    ├── UsageError                  an argument to the API or CLI is invalid
    ├── TaskNotFound                no task has this id or id prefix
    ├── AmbiguousTaskId             an id prefix matches several tasks
    ├── IllegalTransition           the lifecycle forbids a state change (a bug or a race)
    ├── ConflictError *             a compare-and-set lost a race: re-read and retry
    ├── WaitTimeout                 a wait ended before the tasks did (also a TimeoutError)
    ├── RegistryError               the SQLite registry cannot be opened or written
    │   └── RegistryBusy *          ... it stayed locked beyond the busy timeout
    ├── TransportError *            the cluster could not be reached
    │   ├── HostKeyError            unknown or changed host key (never retried blindly)
    │   ├── AuthenticationError     credentials refused
    │   ├── SchedulerUnavailable *  the host answered, its scheduler did not
    │   └── CommandTimeout *        a command did not finish in time: outcome unknown
    ├── CommandFailed               a command ran and exited non-zero
    │   └── SchedulerError          the scheduler rejected a request
    │       └── SubmitLimitReached  ... sbatch refused a job over the user's submit limit
    ├── ParseError                  scheduler output that could not be understood
    ├── BackendError                any other backend failure
    └── RemoteFileError             a file operation on the cluster failed (also an OSError)
        └── RemoteFileNotFound      ... no such file (also a FileNotFoundError)

``RemoteFileError`` (and its ``RemoteFileNotFound``), raised by the transports' file
operations, is both an ``HpcBridgeError`` and an ``OSError`` (``FileNotFoundError``).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence


class HpcBridgeError(Exception):
    """Base of every error hpcbridge raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(HpcBridgeError):
    """The configuration file or environment is invalid."""


class UsageError(HpcBridgeError):
    """An argument to the API or CLI is invalid (bad spec, bad name, bad path)."""


class TaskNotFound(HpcBridgeError):
    """No task has this id (or id prefix)."""


class AmbiguousTaskId(HpcBridgeError):
    """An id prefix matches more than one task."""


class IllegalTransition(HpcBridgeError):
    """The lifecycle forbids this state change; a bug or a race, never silently applied."""


class ConflictError(HpcBridgeError):
    """A compare-and-set write lost a race: the task changed under us. Re-read and retry."""

    transient = True


class RegistryError(HpcBridgeError):
    """The SQLite registry could not be opened or written."""


class RegistryBusy(RegistryError):
    """The registry stayed locked beyond the busy timeout."""

    transient = True


class WaitTimeout(HpcBridgeError, TimeoutError):
    """``wait`` gave up before every task finished; the tasks keep running."""


class TransportError(HpcBridgeError):
    """Could not reach the cluster (connect, authenticate, channel dropped).

    Raised before or instead of a command result: nothing is known about the remote side, so
    no task state may change because of it.
    """

    transient = True


class HostKeyError(TransportError):
    """The server's host key is unknown or does not match known_hosts. Never retried blindly."""

    transient = False


class AuthenticationError(TransportError):
    """The server refused our credentials."""

    transient = False


class SchedulerUnavailable(TransportError):
    """The cluster answered but its scheduler did not (slurmctld down, RPC timeout): nothing
    is known about any job, so no task may change state."""


class CommandTimeout(TransportError):
    """A remote/local command did not finish in time; its outcome is unknown."""


def _tail(text: str, lines: int = 8) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n    ".join(kept) if kept else "(empty)"


class CommandFailed(HpcBridgeError):
    """A command ran and exited non-zero."""

    def __init__(
        self,
        argv: Sequence[str],
        exit_status: int,
        stderr: str,
        *,
        what: str | None = None,
        hint: str | None = None,
        stdout: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        self.stdout = stdout
        shown = " ".join(self.argv)
        if len(shown) > 300:
            shown = shown[:300] + " ..."
        lead = f"{what}: " if what else ""
        message = (
            f"{lead}command `{shown}` exited with status {exit_status}; stderr:\n    {_tail(stderr)}"
        )
        super().__init__(message, hint=hint)


class SchedulerError(CommandFailed):
    """The scheduler (sbatch, scancel, ...) rejected a request."""


class SubmitLimitReached(SchedulerError):
    """sbatch refused a job because the user's submit limit is full (``reason``: Slurm's
    name for the limit, ``AssocMaxSubmitJobLimit`` and kin). No job was made: the task waits
    for a slot, it never fails for this."""

    def __init__(self, argv: Sequence[str], exit_status: int, stderr: str, *, reason: str,
                 what: str | None = None, hint: str | None = None) -> None:  # fmt: skip
        self.reason = reason
        super().__init__(argv, exit_status, stderr, what=what, hint=hint)


class ParseError(HpcBridgeError):
    """Scheduler or remote output could not be understood; carries the offending text."""

    def __init__(self, what: str, text: str, *, hint: str | None = None) -> None:
        self.text = text
        excerpt = text if len(text) <= 400 else text[:400] + " ..."
        super().__init__(f"could not make sense of {what}: {excerpt!r}", hint=hint)


class BackendError(HpcBridgeError):
    """A backend operation failed for a reason that is not a transport or command failure."""


class RemoteFileError(HpcBridgeError, OSError):
    """A file operation on the (remote) host failed: permission denied, not a directory, ...

    Also an ``OSError`` so code written against pathlib keeps working.
    """

    def __init__(self, message: str, *, path: str, err: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.path = path
        self.errno = err
        self.filename = path


class RemoteFileNotFound(RemoteFileError, FileNotFoundError):
    """The (remote) file or directory does not exist. Catch as ``FileNotFoundError`` too."""

    def __init__(self, path: str, *, where: str, hint: str | None = None) -> None:
        super().__init__(f"{where}: no such file or directory: {path}", path=path,
                         err=errno.ENOENT, hint=hint)
