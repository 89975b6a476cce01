"""What every transport offers, and the pure helpers they share (argv checks, quoting, paths).

Quoting happens exactly once, here, in :func:`build_command`: callers always pass argv lists,
and the SSH transport turns them into the one string sshd hands to ``$SHELL -c``.
"""

from __future__ import annotations

import posixpath
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# The file errors live in the one error tree; re-exported here, where they are raised.
from ..errors import RemoteFileError as RemoteFileError
from ..errors import RemoteFileNotFound as RemoteFileNotFound
from ..errors import UsageError
from ..models import CommandResult


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


STDERR_KEEP = 65536  # bytes of a stream's stderr kept for its error messages


class CommandStream(Protocol):
    """A running command's stdin and stdout, from :meth:`Transport.open_stream`.

    Use it from one thread, except that ``write``/``close_stdin`` may run in a second one
    while the first reads (a command that reads all of its stdin while it writes stdout
    needs that, or both sides wait on full buffers).
    """

    def read(self, size: int = 65536) -> bytes:
        """The next chunk of stdout (at most ``size`` bytes, at least one), or ``b""`` at
        its end. Raises ``CommandTimeout`` (no data for ``idle_timeout``) and
        ``TransportError`` (the connection broke: what was read may be incomplete)."""
        ...

    def write(self, data: bytes) -> None:
        """Send ``data`` to the command's stdin (blocks while the remote side is not reading).
        A command that already exited makes this a no-op: ``finish`` tells the rest."""
        ...

    def close_stdin(self) -> None:
        """Send EOF on stdin. Idempotent."""
        ...

    def finish(self) -> tuple[int, str]:
        """Wait for the exit: ``(exit status, stderr tail)``; unread stdout is discarded.
        Raises ``CommandTimeout`` and ``TransportError`` as ``read`` does."""
        ...

    def close(self) -> None:
        """Release the channel or process (a still running local process is killed). Never
        raises; idempotent."""
        ...

    def __enter__(self) -> CommandStream: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """Runs commands and moves files on the machine where the scheduler lives.

    Implementations: :class:`~hpcbridge.transport.ssh.SSHTransport` (one persistent paramiko
    connection, SFTP for files), :class:`~hpcbridge.transport.local.LocalTransport`
    (subprocess and pathlib), and :class:`hpcbridge.testing.ReplayTransport` for tests.

    Remote paths are strings (POSIX). ``~`` and ``~/x`` mean the (remote) home directory;
    a relative path is relative to it, as over ``ssh``. Commands are argv lists, never shell
    strings; ``run_script`` is the one explicit way to run shell code.

    Errors, for every method:

    * :class:`~hpcbridge.errors.TransportError` (transient): the host could not be reached or
      the connection broke; nothing is known about the remote side. Subclasses:
      :class:`~hpcbridge.errors.HostKeyError` and :class:`~hpcbridge.errors.AuthenticationError`
      (not transient: someone must fix the setup), :class:`~hpcbridge.errors.CommandTimeout`
      (a command outlived its timeout; its outcome is unknown). Only SSH meets the first kind;
      the local transport raises ``CommandTimeout`` and nothing else of this family.
    * :class:`~hpcbridge.errors.UsageError`: an invalid argv or path (a string instead of a
      list, NUL bytes, ``~other``), before anything is sent.
    * File methods: :class:`RemoteFileNotFound` (also a ``FileNotFoundError``) and
      :class:`RemoteFileError` (also an ``OSError``: permission denied, not a directory, ...).

    The SSH transport connects on first use, reconnects (with bounded retries) when the
    connection died between operations, and repeats an operation only when it provably never
    reached the server; ``SSHTransport.connect()`` (not part of this protocol) connects now.
    Both implementations may be used from several threads at once. The owner of a transport
    closes it: a backend given one closes it in its own ``close()``.
    """

    description: str
    """Who is on the other end, for messages: ``ssh user@host:port via user@jump:22`` or
    ``local``."""

    stats: TransportStats
    """Counters of this transport's work since it was made (or last ``stats.reset()``)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        """Run one command, without a shell, in the home directory, and wait for it.

        ``argv`` is checked by :func:`check_argv` (``UsageError``); over SSH it is quoted
        once into the command string sshd hands to the login user's shell, and with
        ``login_shell`` it runs as ``bash -lc <argv>``. ``stdin`` (``str`` is sent as UTF-8)
        is written and then closed, so a command reading stdin always sees EOF. ``timeout``
        (seconds) defaults to the cluster's ``command_timeout``; ``what`` names the command
        in error messages ("submitting jobs").

        Returns a :class:`~hpcbridge.models.CommandResult` whose ``argv`` is the checked
        ``argv`` (not a login-shell wrapper), with stdout/stderr read completely and decoded as
        UTF-8 (undecodable bytes replaced). A program that does not exist gives exit status
        127 (126: not executable), as a shell would, not an exception. A command killed by a
        signal gives a negative status (local: ``-signal``; SSH: ``-1``).

        Raises ``CommandFailed`` (carrying argv, exit status, stderr and stdout) when ``check``
        is true and the status is not 0; ``CommandTimeout`` when it did not finish in time
        (local: its process group is killed; SSH: the channel is closed and the remote process
        may go on); ``TransportError`` when the connection failed while starting it or broke
        while it ran. Counts one ``stats.round_trips``.

        Not safe to repeat blindly: after ``CommandTimeout`` or ``TransportError`` the command
        may or may not have run (the SSH transport retries only when the failure happened
        before the command was sent). Repeat only what is idempotent (a query), and reconcile
        the rest (a submission is found again by its token).
        """
        ...

    def run_script(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        """Run ``script`` as bash code, in the home directory, in one round trip whatever its
        length: it is sent on stdin, kept in a private temp file and run by ``bash`` (``bash
        -l`` with ``login_shell``) only once it arrived whole (``script_argv``).

        The caller quotes everything it puts into the script (``shlex.quote``); nothing else
        is ever interpreted by a shell. The result's ``argv`` is ``script_argv()``'s. Timeout, ``check``, ``what``, the errors raised and the
        "outcome unknown" rule are exactly those of :meth:`run`: a script that timed out or
        lost its connection may have run in part, so it must not be repeated blindly.
        """
        ...

    def open_stream(
        self,
        argv: Sequence[str],
        *,
        idle_timeout: float | None = None,
        what: str | None = None,
    ) -> CommandStream:
        r"""Start one command (as :meth:`run` would: no shell, home directory, login shell
        when configured) and hand back its live stdin and stdout, for output too large to
        hold in memory (a tar stream of many tasks' outputs) or a command that converses.

        Returns a started :class:`CommandStream`; the caller reads stdout incrementally with
        ``read``, may write stdin (``write``, then ``close_stdin``), ends with ``finish``
        (exit status and the tail of stderr) and always ``close``\ s it (it is a context
        manager). stderr is drained as it comes (only its last 64 KiB are kept), so a chatty
        command cannot stall the stream. Counts one ``stats.round_trips``.

        ``idle_timeout`` (default: the cluster's ``command_timeout``) bounds the wait for the
        next chunk of stdout or for the exit status, not the whole transfer: a multi-GB
        stream that keeps flowing never times out. Raises ``UsageError`` for a bad argv,
        ``TransportError`` when the command could not be started (its outcome is unknown
        from then on, as with :meth:`run`); ``read`` and ``finish`` raise ``CommandTimeout``
        when the command went quiet for longer than ``idle_timeout`` and ``TransportError``
        when the connection broke under it.
        """
        ...

    def put(self, local: Path, remote: str) -> None:
        """Copy the local file or directory ``local`` to the path ``remote``.

        A directory is copied recursively (symlinks inside it are followed). Missing remote
        parent directories are created; an existing file is replaced atomically (written to a
        temporary name beside it, then renamed), so a reader never sees half a file. The file
        mode travels with the file (scripts stay executable).

        Raises ``RemoteFileNotFound`` when ``local`` does not exist (the local side, named as
        ``put (local source)``), ``RemoteFileError`` when the remote side refuses (permission,
        not a directory, disk full), ``TransportError`` when the connection cannot be
        restored. Safe to repeat: the same call converges on the same result.
        """
        ...

    def get(self, remote: str, local: Path) -> None:
        """Copy the remote file ``remote`` to the local path ``local``.

        Local parent directories are created; ``local`` is replaced atomically (temporary
        file + rename), so an interrupted download leaves no partial file behind. Only
        regular files: for a directory, list it with :meth:`list_files` and get each file.

        Raises ``RemoteFileNotFound`` when ``remote`` does not exist (the local transport
        also when it is not a regular file), ``RemoteFileError`` for other refusals,
        ``TransportError`` when the connection cannot be restored; a failure to write the
        local file can surface as a plain ``OSError``. Safe to repeat.
        """
        ...

    def list_files(self, remote_dir: str) -> list[str]:
        """Every regular file below ``remote_dir``, recursively, as sorted POSIX paths
        relative to it (``["out/a.h5", "result.json"]``); as ``find DIR -type f``: symlinks are
        neither followed nor listed, empty directories do not appear. Names that are not UTF-8
        round-trip to the local file system (surrogate escapes).

        Raises ``RemoteFileNotFound`` when ``remote_dir`` does not exist and ``RemoteFileError``
        when it is not a directory. An unreadable subdirectory raises ``RemoteFileError`` over
        SSH (``find`` fails) but is skipped by the local transport. Over SSH it costs one
        command execution. Read-only: safe to repeat.
        """
        ...

    def read_text(self, remote: str, *, tail_lines: int | None = None) -> str:
        """The content of the file ``remote``, decoded as UTF-8 (undecodable bytes replaced);
        with ``tail_lines``, only its last lines exactly as ``tail -n`` prints them (0 gives
        ``""``). The tail never downloads the whole file (SSH runs ``tail`` remotely; the
        local transport reads from the end).

        Raises ``RemoteFileNotFound`` (a ``FileNotFoundError``: ``except FileNotFoundError``
        is how callers treat "no log yet") when it does not exist, ``RemoteFileError`` for
        other refusals, ``TransportError`` when the connection cannot be restored. Safe to
        repeat.
        """
        ...

    def write_text(self, remote: str, text: str, *, mode: int = 0o644) -> None:
        """Write ``text`` (UTF-8) to the file ``remote`` atomically (temporary file beside
        it, then rename), creating missing parent directories. The file gets exactly
        ``mode``, whatever the remote umask.

        Raises ``RemoteFileError`` when the remote side refuses (permission, a directory in
        the way), ``TransportError`` when the connection cannot be restored. Safe to repeat.
        """
        ...

    def makedirs(self, remote: str) -> None:
        """Create the directory ``remote`` and any missing parents, as ``mkdir -p``; an
        existing directory is fine. Over SSH this is one command execution.

        Raises ``RemoteFileError`` when it cannot be created (permission, a file in the way),
        ``TransportError`` when the connection cannot be restored. Safe to repeat.
        """
        ...

    def exists(self, remote: str) -> bool:
        """Whether ``remote`` exists (file, directory or anything else; a symlink is
        followed, so a dangling one does not exist).

        When the check itself is refused (a parent directory without search permission),
        SSH raises ``RemoteFileError`` while the local transport answers ``False``. Raises
        ``TransportError`` when the connection cannot be restored. Read-only: safe to repeat.
        """
        ...

    def expand(self, remote: str) -> str:
        """The absolute form of a remote path: ``~`` -> the home directory, ``~/x`` and a
        relative ``x`` -> ``<home>/x``, an absolute path unchanged (not normalised).

        Raises ``UsageError`` for an empty path, a NUL byte or ``~user``. The SSH transport
        learns the home directory with one SFTP request the first time it needs it (never for
        an absolute path) and may then raise ``TransportError``; the local transport's home is
        the one it was made with. Safe to repeat.
        """
        ...

    def close(self) -> None:
        """Release the connection: SSH closes its SFTP session, the connection and those to
        jump hosts; the local transport holds nothing. Never raises, may be called more than
        once, and the transport stays usable (SSH reconnects on the next operation).
        """
        ...


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


# bash reading a script from a pipe (``bash -s``) reads it one byte per read(2), so it never
# takes input meant for the commands; a 4 MB submission script (1,000 job scripts of an
# array) took 4-17 s that way here, against 0.5-1.6 s from a file. So the script goes to a
# private temp file first (``cat``: buffered), and bash runs the file; the file is removed
# whatever the outcome. The script's own stdin is then empty: scripts carry their data.
# It also runs only a script that arrived whole: one cut short (the sender killed, the
# connection dropped) lacks its last line, SCRIPT_END, and nothing of it runs (exit 71).
SCRIPT_END = "# hpcbridge: end of script"
_RUN_FROM_FILE = ('umask 077; t=$(mktemp "${TMPDIR:-/tmp}/hpcb-script.XXXXXXXX") || exit 70; '
                  'cat > "$t" || { rm -f "$t"; exit 70; }; '
                  f'if [ "$(tail -n 1 "$t")" != {shlex.quote(SCRIPT_END)} ]; then rm -f "$t"; '
                  'echo "hpcbridge: the script arrived incomplete; nothing of it ran" >&2; exit 71; fi; '
                  'bash %s"$t" </dev/null; r=$?; rm -f "$t"; exit $r')


def script_argv(login_shell: bool) -> tuple[str, ...]:
    """The command ``run_script`` feeds its script to, on stdin (see _RUN_FROM_FILE)."""
    return ("bash", "-c", _RUN_FROM_FILE.replace("%s", "-l " if login_shell else ""))


def script_input(script: str) -> str:
    """What ``run_script`` sends on stdin: the script and its end marker."""
    return script + ("" if script.endswith("\n") else "\n") + SCRIPT_END + "\n"


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
