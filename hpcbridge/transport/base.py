"""What every transport offers, and the pure helpers they share (argv checks, quoting, paths).

Quoting happens exactly once, here, in :func:`build_command`: callers always pass argv lists,
and the SSH transport turns them into the one string sshd hands to ``$SHELL -c``.
"""

from __future__ import annotations

import errno
import posixpath
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import HpcBridgeError, UsageError
from ..models import CommandResult


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


@dataclass
class TransportStats:
    """Counters benchmarks and the sync loop read. ``round_trips`` counts command executions
    (one per ``run``/``run_script``, plus the internal ones of list_files/makedirs/...);
    ``sftp_ops`` counts SFTP requests made on behalf of file operations."""

    round_trips: int = 0
    connects: int = 0
    reconnects: int = 0
    sftp_ops: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    exec_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field, and a lock cannot be copied.
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def reset(self) -> None:
        with self._lock:
            self.round_trips = self.connects = self.reconnects = self.sftp_ops = 0
            self.bytes_up = self.bytes_down = 0
            self.exec_seconds = 0.0


@runtime_checkable
class Transport(Protocol):
    """Runs commands and moves files on the machine where the scheduler lives.

    Remote paths are strings (POSIX). ``~`` and ``~/x`` mean the (remote) home directory;
    a relative path is relative to it, as over ``ssh``. Commands are argv lists, never shell
    strings; ``run_script`` is the one explicit way to run shell code.
    """

    description: str
    stats: TransportStats

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult: ...

    def run_script(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def list_files(self, remote_dir: str) -> list[str]: ...

    def read_text(self, remote: str, *, tail_lines: int | None = None) -> str: ...

    def write_text(self, remote: str, text: str, *, mode: int = 0o644) -> None: ...

    def makedirs(self, remote: str) -> None: ...

    def exists(self, remote: str) -> bool: ...

    def expand(self, remote: str) -> str: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- pure helpers


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Validate an argv list: non-empty, all ``str``, no NUL (no exec interface can carry one,
    and silently truncating an argument is how injections start)."""
    if isinstance(argv, (str, bytes)):
        raise UsageError(
            f"commands are argument lists, not strings: got {argv!r}",
            hint="pass e.g. ['squeue', '-h'] (or use run_script for shell code)",
        )
    items = tuple(argv)
    if not items:
        raise UsageError("empty command")
    for arg in items:
        if not isinstance(arg, str):
            raise UsageError(f"command arguments must be str, got {arg!r} in {items!r}")
        if "\x00" in arg:
            raise UsageError(f"command arguments may not contain NUL bytes: {arg!r}")
    return items


def script_argv(login_shell: bool) -> tuple[str, ...]:
    """The interpreter ``run_script`` feeds its script to, on stdin."""
    return ("bash", "-l", "-s") if login_shell else ("bash", "-s")


def wrap_login_shell(argv: Sequence[str], login_shell: bool) -> tuple[str, ...]:
    """``bash -lc <quoted argv>`` when a login shell is wanted (sites whose ``module``/Slurm
    PATH is only set up by /etc/profile), else argv unchanged."""
    items = check_argv(argv)
    if not login_shell:
        return items
    return ("bash", "-lc", shlex.join(items))


def build_command(argv: Sequence[str], *, login_shell: bool = False) -> str:
    """The exact command string sent over SSH. sshd runs it as ``$SHELL -c <string>``, so every
    argument is quoted for a POSIX shell, once (twice for the inner string of ``bash -lc``)."""
    return shlex.join(wrap_login_shell(argv, login_shell))


def expand_path(remote: str, home: str) -> str:
    """``~`` -> home, ``~/x`` -> home/x, relative -> home/x, absolute unchanged."""
    if not isinstance(remote, str) or not remote:
        raise UsageError(f"invalid remote path {remote!r}")
    if "\x00" in remote:
        raise UsageError(f"remote paths may not contain NUL bytes: {remote!r}")
    if remote == "~":
        return home
    if remote.startswith("~/"):
        return posixpath.join(home, remote[2:])
    if remote.startswith("~"):
        raise UsageError(
            f"remote path {remote!r}: only '~' and '~/...' (your own home) are supported"
        )
    if remote.startswith("/"):
        return remote
    return posixpath.join(home, remote)


def relative_find_output(root: str, output: bytes) -> list[str]:
    """Turn ``find ROOT -type f -print0`` output into sorted paths relative to ROOT."""
    prefix = root if root.endswith("/") else root + "/"
    names: list[str] = []
    for raw in output.split(b"\x00"):
        if not raw:
            continue
        # surrogateescape: a file name that is not UTF-8 still round-trips to the local FS
        path = raw.decode("utf-8", errors="surrogateescape")
        if path.startswith(prefix):
            names.append(path[len(prefix):])
        elif path != root:
            names.append(path)
    return sorted(names)


def tail_bytes(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data``, exactly as ``tail -n LINES`` prints them
    (only ``\\n`` separates lines; a final line without ``\\n`` counts)."""
    if lines <= 0 or not data:
        return b""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    pos = end
    for _ in range(lines):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return data
    return data[pos + 1:]


def decode_output(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
