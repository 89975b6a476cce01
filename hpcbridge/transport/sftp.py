"""File operations over the SSH connection's SFTP session.

Every request sequence here is idempotent, so :func:`sftp_call` repeats it after a reconnect
when the connection (or just the SFTP session) died. SFTP status errors become
:class:`~hpcbridge.transport.base.RemoteFileNotFound` / ``RemoteFileError``. Uploads are
atomic (temporary name beside the target, then rename); so are downloads, locally.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import paramiko

from ..errors import TransportError
from ..transfers import transfer_callback
from .base import RemoteFileError, RemoteFileNotFound
from .ssh_connect import SSHConnection

T = TypeVar("T")

Makedirs = Callable[[Sequence[str]], None]
"""Creates remote directories (``mkdir -p``); the transport's, which is one command exec."""


def sftp_call(conn: SSHConnection, where: str, path: str,
              fn: Callable[[paramiko.SFTPClient], T]) -> T:
    """Run an idempotent sequence of SFTP requests, reconnecting if the connection died.
    SFTP status errors become RemoteFileNotFound / RemoteFileError."""
    s = conn.settings
    delay = s.retry_backoff
    for attempt in range(1, s.connect_attempts + 1):
        sftp = conn.sftp_client()
        try:
            with conn.sftp_lock:
                return fn(sftp)
        except (RemoteFileError, TransportError):
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel = sftp.get_channel()
            transport = channel.get_transport() if channel is not None else None
            alive = transport is not None and transport.is_active()
            # paramiko reports SFTP status codes as OSError (ENOENT, EACCES, or errno None
            # for SSH_FX_FAILURE); a dead channel shows up as EOFError/SSHException or
            # OSError("Socket is closed").
            if alive and isinstance(exc, OSError) and "socket is closed" not in str(exc).lower():
                raise file_error(where, path, exc) from None
            conn.sftp_broke(sftp, alive)
            if attempt == s.connect_attempts:
                raise TransportError(
                    f"{where}: connection to {s.target.address} failed during SFTP: {exc}",
                ) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def file_error(where: str, path: str, exc: OSError) -> RemoteFileError:
    if isinstance(exc, FileNotFoundError) or exc.errno == 2:
        return RemoteFileNotFound(path, where=where)
    return RemoteFileError(f"{where}: {exc.strerror or exc}: {path}", path=path, err=exc.errno)


def _ops(conn: SSHConnection, n: int = 1) -> None:
    conn.settings.stats.add(sftp_ops=n)


# ------------------------------------------------------------------------------ reading


def home_dir(conn: SSHConnection) -> str:
    """The login directory (``$HOME``), where the SFTP server starts: one request."""
    def home(sftp: paramiko.SFTPClient) -> str:
        _ops(conn)
        return str(sftp.normalize("."))

    return sftp_call(conn, "expand", "~", home)


def exists(conn: SSHConnection, path: str) -> bool:
    def stat(sftp: paramiko.SFTPClient) -> bool:
        _ops(conn)
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    return sftp_call(conn, "exists", path, stat)


def read_bytes(conn: SSHConnection, path: str) -> bytes:
    def read(sftp: paramiko.SFTPClient) -> bytes:
        _ops(conn)
        with sftp.open(path, "rb") as fh:
            fh.prefetch()  # pipelined reads: one round trip per window, not per 32 KiB
            return bytes(fh.read())

    data = sftp_call(conn, "read_text", path, read)
    conn.settings.stats.add(bytes_down=len(data))
    return data


def download(conn: SSHConnection, path: str, target: Path) -> None:
    """Copy the remote file ``path`` to ``target``, replacing it atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)

    def get(sftp: paramiko.SFTPClient) -> None:
        _ops(conn)
        sftp.get(path, tmp, callback=transfer_callback("download", posixpath.basename(path)))  # prefetching

    try:
        sftp_call(conn, "get", path, get)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    conn.settings.stats.add(bytes_down=target.stat().st_size)


# ------------------------------------------------------------------------------ writing


def write_bytes(conn: SSHConnection, path: str, data: bytes, mode: int,
                makedirs: Makedirs) -> None:
    """``data`` into the file ``path``, atomically, with exactly ``mode``."""
    def upload(sftp: paramiko.SFTPClient, tmp: str) -> None:
        _ops(conn, 3)
        with sftp.open(tmp, "wb") as fh:
            fh.set_pipelined(True)
            fh.write(data)
        sftp.chmod(tmp, mode)

    atomic_upload(conn, "write_text", path, upload, makedirs)
    conn.settings.stats.add(bytes_up=len(data))


def put_file(conn: SSHConnection, source: Path, dest: str, makedirs: Makedirs) -> None:
    """The local file ``source`` to ``dest``, atomically, with its mode."""
    mode = source.stat().st_mode & 0o7777

    def upload(sftp: paramiko.SFTPClient, tmp: str) -> None:
        _ops(conn, 3)
        sftp.put(str(source), tmp, callback=transfer_callback("upload", source.name), confirm=True)
        sftp.chmod(tmp, mode)  # SFTP put does not carry the mode (scripts stay executable)

    atomic_upload(conn, "put", dest, upload, makedirs)
    conn.settings.stats.add(bytes_up=source.stat().st_size)


def local_tree(source: Path, dest: str) -> tuple[list[str], list[tuple[Path, str]]]:
    """For putting the local directory ``source`` at ``dest``: the remote directories to
    create (``dest`` first) and the (local file, remote path) pairs. Symlinks are followed."""
    dirs = [dest]
    files: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        rel = Path(dirpath).relative_to(source).as_posix()
        base = dest if rel == "." else posixpath.join(dest, rel)
        dirs.extend(posixpath.join(base, d) for d in dirnames)
        files.extend((Path(dirpath) / f, posixpath.join(base, f)) for f in filenames)
    return dirs, files


def atomic_upload(
    conn: SSHConnection, where: str, path: str,
    upload: Callable[[paramiko.SFTPClient, str], None], makedirs: Makedirs,
) -> None:
    """Write to a temporary name next to ``path`` (``upload(sftp, tmp)``) and rename it into
    place, so a reader (or a crash) never sees half a file. Creates missing parent dirs on
    demand."""
    parent, name = posixpath.split(path)

    def attempt(sftp: paramiko.SFTPClient) -> None:
        tmp = posixpath.join(parent, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            upload(sftp, tmp)
            rename_over(sftp, tmp, path)
            _ops(conn)
        except BaseException:
            try:
                sftp.remove(tmp)
            except (OSError, paramiko.SSHException, EOFError):
                pass
            raise

    try:
        sftp_call(conn, where, path, attempt)
    except RemoteFileNotFound:
        # Parent directory missing (the common first-upload case): create it, once.
        makedirs([parent or "/"])
        sftp_call(conn, where, path, attempt)


def rename_over(sftp: paramiko.SFTPClient, tmp: str, path: str) -> None:
    # Plain SFTPv3 rename fails when the target exists; OpenSSH's posix-rename extension
    # replaces atomically (rename(2)). Fall back for servers without it.
    try:
        sftp.posix_rename(tmp, path)
    except OSError as exc:
        if exc.errno is not None:
            raise
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass
        sftp.rename(tmp, path)
