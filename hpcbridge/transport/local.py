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
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import CommandFailed, CommandTimeout
from ..models import CommandResult
from .base import (
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
