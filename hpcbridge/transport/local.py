"""The transport for a cluster whose scheduler runs on this machine (or for tests): subprocess
and pathlib, never a shell unless ``run_script`` asked for one explicitly.

It mirrors the SSH transport's semantics so a backend cannot tell them apart: commands run in
the "home" directory, ``~`` and relative remote paths resolve against it, errors are the same
classes. ``home`` can be pointed at a temporary directory in tests.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import CommandFailed, CommandTimeout, TransportError
from ..models import CommandResult
from .base import (
    STDERR_KEEP,
    RemoteFileError,
    RemoteFileNotFound,
    TransportStats,
    check_argv,
    decode_output,
    expand_path,
    script_argv,
    script_input,
    tail_bytes,
    wrap_login_shell,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0


class LocalTransport:
    """Runs commands with :mod:`subprocess` on this machine."""

    def __init__(
        self,
        *,
        login_shell: bool = False,
        command_timeout: float = DEFAULT_TIMEOUT,
        home: str | os.PathLike[str] | None = None,
    ) -> None:
        self.login_shell = login_shell
        self.command_timeout = command_timeout
        self.home = os.path.abspath(os.fspath(home)) if home is not None else str(Path.home())
        self.description = "local"
        self.stats = TransportStats()

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalTransport home={self.home!r}>"

    # ------------------------------------------------------------------------------ commands

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        items = check_argv(argv)
        return self._execute(
            items, wrap_login_shell(items, self.login_shell), stdin, timeout, check, what
        )

    def run_script(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        argv = script_argv(self.login_shell)
        return self._execute(argv, argv, script_input(script), timeout, check, what)

    def _execute(
        self,
        argv: tuple[str, ...],
        real_argv: tuple[str, ...],
        stdin: str | bytes | None,
        timeout: float | None,
        check: bool,
        what: str | None,
    ) -> CommandResult:
        data = stdin.encode("utf-8") if isinstance(stdin, str) else (stdin or b"")
        limit = self.command_timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            # start_new_session: on timeout we kill the whole process group, so a grandchild
            # holding the pipes open cannot make communicate() hang after the kill.
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                real_argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.home,
                start_new_session=True,
            )
        except FileNotFoundError:
            # Same outcome as over SSH, where the remote shell reports "command not found".
            result = CommandResult(argv, 127, "", f"{real_argv[0]}: command not found\n")
            self.stats.add(round_trips=1)
            return self._checked(result, check, what)
        except PermissionError as exc:
            result = CommandResult(argv, 126, "", f"{real_argv[0]}: {exc.strerror}\n")
            self.stats.add(round_trips=1)
            return self._checked(result, check, what)
        try:
            out, err = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            self.stats.add(round_trips=1, exec_seconds=time.monotonic() - started)
            lead = f"{what}: " if what else ""
            raise CommandTimeout(
                f"{lead}command `{' '.join(argv)}` did not finish within {limit:g} s "
                "(killed); its outcome is unknown",
                hint="raise command_timeout for this cluster if the command is just slow",
            ) from None
        elapsed = time.monotonic() - started
        self.stats.add(round_trips=1, exec_seconds=elapsed, bytes_up=len(data),
                       bytes_down=len(out) + len(err))
        log.debug("local exec %.1f ms status %s: %s", elapsed * 1000, proc.returncode, argv)
        result = CommandResult(argv, proc.returncode, decode_output(out), decode_output(err))
        return self._checked(result, check, what)

    def open_stream(
        self,
        argv: Sequence[str],
        *,
        idle_timeout: float | None = None,
        what: str | None = None,
    ) -> LocalStream:
        items = check_argv(argv)
        real = wrap_login_shell(items, self.login_shell)
        limit = self.command_timeout if idle_timeout is None else idle_timeout
        self.stats.add(round_trips=1)
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                real, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.home, start_new_session=True, bufsize=0,
            )
        except OSError as exc:
            raise TransportError(f"{what or 'command'}: cannot start `{real[0]}`: {exc}") from None
        return LocalStream(proc, " ".join(items)[:200], limit, what, self.stats)

    @staticmethod
    def _checked(result: CommandResult, check: bool, what: str | None) -> CommandResult:
        if check and result.exit_status != 0:
            raise CommandFailed(result.argv, result.exit_status, result.stderr, what=what,
                                stdout=result.stdout)
        return result

    # --------------------------------------------------------------------------------- files

    def expand(self, remote: str) -> str:
        return expand_path(remote, self.home)

    def put(self, local: Path, remote: str) -> None:
        target = Path(self.expand(remote))
        source = Path(local)
        with _file_errors(str(source), "put"):
            if source.is_dir():
                for dirpath, _dirnames, filenames in os.walk(source, followlinks=True):
                    rel = Path(dirpath).relative_to(source)
                    (target / rel).mkdir(parents=True, exist_ok=True)
                    for name in filenames:
                        _copy_atomic(Path(dirpath) / name, target / rel / name)
            elif source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_atomic(source, target)
            else:
                raise RemoteFileNotFound(str(source), where="put (local source)")

    def get(self, remote: str, local: Path) -> None:
        source = Path(self.expand(remote))
        with _file_errors(str(source), "get"):
            if not source.is_file():
                raise RemoteFileNotFound(str(source), where="get")
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            _copy_atomic(source, Path(local))

    def list_files(self, remote_dir: str) -> list[str]:
        root = self.expand(remote_dir)
        if not os.path.isdir(root):
            if os.path.exists(root):
                raise RemoteFileError(f"list_files: not a directory: {root}", path=root,
                                      err=errno.ENOTDIR)
            raise RemoteFileNotFound(root, where="list_files")
        found: list[str] = []
        # Same as `find ROOT -type f`: regular files only, symlinks neither followed nor listed.
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                full = os.path.join(dirpath, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    found.append(os.path.relpath(full, root).replace(os.sep, "/"))
        return sorted(found)

    def read_text(self, remote: str, *, tail_lines: int | None = None) -> str:
        path = self.expand(remote)
        with _file_errors(path, "read_text"):
            with open(path, "rb") as fh:
                if tail_lines is None:
                    data = fh.read()
                else:
                    data = _read_tail(fh, tail_lines)
        return decode_output(data)

    def write_text(self, remote: str, text: str, *, mode: int = 0o644) -> None:
        path = Path(self.expand(remote))
        with _file_errors(str(path), "write_text"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(text.encode("utf-8"))
                os.chmod(tmp, mode)  # exactly `mode`, whatever the umask
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise

    def makedirs(self, remote: str) -> None:
        path = self.expand(remote)
        with _file_errors(path, "makedirs"):
            os.makedirs(path, exist_ok=True)

    def exists(self, remote: str) -> bool:
        return os.path.exists(self.expand(remote))

    def close(self) -> None:
        pass


class LocalStream:
    """:class:`~hpcbridge.transport.base.CommandStream` over a subprocess's pipes (unbuffered,
    read with ``select`` so the idle timeout holds); a thread drains stderr."""

    def __init__(self, proc: subprocess.Popen[bytes], shown: str, idle_limit: float,
                 what: str | None, stats: TransportStats) -> None:  # fmt: skip
        self.proc = proc
        self.shown = shown
        self.idle_limit = idle_limit
        self.lead = f"{what}: " if what else ""
        self.stats = stats
        self.started = time.monotonic()
        self.err = bytearray()
        self._drainer = threading.Thread(target=self._drain, daemon=True,
                                         name="hpcbridge-local-stderr")  # fmt: skip
        self._drainer.start()

    def __enter__(self) -> LocalStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read(65536), b""):  # type: ignore[union-attr]
            self.err += chunk
            if len(self.err) > STDERR_KEEP:
                del self.err[: len(self.err) - STDERR_KEEP]

    def _timeout(self) -> CommandTimeout:
        return CommandTimeout(f"{self.lead}command `{self.shown}` sent nothing for "
                              f"{self.idle_limit:g} s; its outcome is unknown")  # fmt: skip

    def read(self, size: int = 65536) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self.idle_limit)
        if not ready:
            raise self._timeout()
        chunk = os.read(fd, size)
        self.stats.add(bytes_down=len(chunk))
        return chunk

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.stats.add(bytes_up=len(data))
        except (OSError, ValueError):
            pass  # the command exited without reading it all (or was closed): finish() tells why

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def finish(self) -> tuple[int, str]:
        while self.read():
            pass
        try:
            status = self.proc.wait(timeout=self.idle_limit)
        except subprocess.TimeoutExpired:
            raise self._timeout() from None
        self._drainer.join(timeout=self.idle_limit)
        self.stats.add(exec_seconds=time.monotonic() - self.started)
        return status, self.err.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# ----------------------------------------------------------------------------------- helpers


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read_tail(fh: BinaryIO, lines: int) -> bytes:
    """Read only as much from the end of the file as the last ``lines`` lines need."""
    if lines <= 0:
        return b""
    size = fh.seek(0, os.SEEK_END)
    block = 65536
    pos = size
    data = b""
    while pos > 0 and data.count(b"\n") <= lines:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
    return tail_bytes(data, lines)


class _file_errors:
    """Turn OSErrors of a file operation into RemoteFileNotFound / RemoteFileError, the same
    classes the SSH transport raises."""

    def __init__(self, path: str, where: str) -> None:
        self.path = path
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, RemoteFileError):
            return
        if isinstance(exc, FileNotFoundError):
            raise RemoteFileNotFound(exc.filename or self.path, where=self.where) from exc
        if isinstance(exc, OSError):
            raise RemoteFileError(
                f"{self.where}: {exc.strerror or exc}: {exc.filename or self.path}",
                path=str(exc.filename or self.path),
                err=exc.errno,
            ) from exc
