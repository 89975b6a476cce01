"""The SSH transport: one persistent paramiko connection per instance, reused for every exec
and for one lazily opened SFTP session.

Rules that keep jobs from being submitted twice: a command is retried after a reconnect only
when it provably never reached the server (the failure happened while connecting or while
opening the channel). Once ``exec`` was requested, any failure is reported as "outcome
unknown" and never retried here; the caller reconciles (e.g. finds the job by its token).

:class:`SSHTransport` is the facade; the work is done by

* :mod:`.ssh_connect`: dialling, ProxyJump tunnels, host keys, authentication, the mapping of
  paramiko/socket exceptions to hpcbridge errors, and the connection state
  (:class:`~hpcbridge.transport.ssh_connect.SSHConnection`, reconnects);
* :mod:`.ssh_exec`: opening a session channel (the one retried step), exec, stdin, collecting
  output under a deadline;
* :mod:`.sftp`: SFTP requests retried across reconnects, file errors, atomic uploads and
  downloads.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import paramiko

from ..config import ClusterConfig
from ..errors import CommandFailed
from ..models import CommandResult
from . import sftp
from .base import (
    RemoteFileError,
    RemoteFileNotFound,
    TransportStats,
    build_command,
    check_argv,
    decode_output,
    expand_path,
    relative_find_output,
    script_argv,
    script_input,
)
from .ssh_connect import SSHConnection, map_connect_error
from .ssh_exec import ChannelStream, exec_on_channel, open_session, start_stream
from .sshconfig import DEFAULT_KNOWN_HOSTS, SSHTarget, resolve_target


class SSHTransport:
    """Commands and files on a cluster's login node over one SSH connection (paramiko)."""

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        ssh_config_path: str | os.PathLike[str] | None = None,
        connect_attempts: int = 3,
        retry_backoff: float = 0.25,
    ) -> None:
        self.cluster = cluster
        self.target: SSHTarget = resolve_target(cluster, ssh_config_path=ssh_config_path)
        self.description = self.target.describe()
        self.stats = TransportStats()
        self.known_hosts = cluster.known_hosts or DEFAULT_KNOWN_HOSTS
        self.connect_attempts = max(1, connect_attempts)
        self.retry_backoff = retry_backoff
        # The connection reads the settings above from self whenever it needs them.
        self._conn = SSHConnection(self)
        self._home: str | None = None

    def __repr__(self) -> str:
        return f"<SSHTransport {self.description}>"

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- connection

    @property
    def paramiko_client(self) -> paramiko.SSHClient | None:
        """The live paramiko client, if connected (diagnostics and tests)."""
        return self._conn.client

    def connect(self) -> None:
        """Connect now (otherwise the first operation does). Raises TransportError & co."""
        self._ensure()

    def close(self) -> None:
        """Close the connection. Using the instance again opens a new one."""
        self._conn.close()

    def _ensure(self) -> paramiko.Transport:
        """The live paramiko Transport, (re)connecting with bounded retries if needed. Every
        command channel is opened through this method (the unit tests replace it)."""
        return self._conn.ensure()

    def _map_connect_error(self, hop: SSHTarget, exc: BaseException) -> BaseException:
        """The hpcbridge error for a failed handshake with ``hop`` (see ssh_connect)."""
        return map_connect_error(hop, exc, known_hosts=self.known_hosts,
                                 timeout=self.cluster.connect_timeout)

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
        command = build_command(items, login_shell=self.cluster.login_shell)
        return self._run(items, command, stdin, timeout, check, what)

    def run_script(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        argv = script_argv(self.cluster.login_shell)
        return self._run(argv, shlex.join(argv), script_input(script), timeout, check, what)

    def _run(
        self,
        argv: tuple[str, ...],
        command: str,
        stdin: str | bytes | None,
        timeout: float | None,
        check: bool,
        what: str | None,
    ) -> CommandResult:
        data = stdin.encode("utf-8") if isinstance(stdin, str) else (stdin or b"")
        status, out, err = self._exec(argv, command, data, timeout, what)
        result = CommandResult(argv, status, decode_output(out), decode_output(err))
        if check and status != 0:
            raise CommandFailed(argv, status, result.stderr, what=what, stdout=result.stdout)
        return result

    def _exec(
        self, argv: tuple[str, ...], command: str, data: bytes, timeout: float | None,
        what: str | None,
    ) -> tuple[int, bytes, bytes]:
        limit = self.cluster.command_timeout if timeout is None else timeout
        chan = open_session(self._conn, self._ensure)
        return exec_on_channel(chan, self, argv, command, data, limit, what)

    def open_stream(
        self,
        argv: Sequence[str],
        *,
        idle_timeout: float | None = None,
        what: str | None = None,
    ) -> ChannelStream:
        items = check_argv(argv)
        command = build_command(items, login_shell=self.cluster.login_shell)
        limit = self.cluster.command_timeout if idle_timeout is None else idle_timeout
        chan = open_session(self._conn, self._ensure)
        return start_stream(chan, self, items, command, limit, what)

    # ----------------------------------------------------------------------------- files

    def expand(self, remote: str) -> str:
        if remote.startswith("/"):  # absolute: no need to learn $HOME (an SFTP round trip)
            return expand_path(remote, "/")
        if self._home is None:
            self._home = sftp.home_dir(self._conn)
        return expand_path(remote, self._home)

    def exists(self, remote: str) -> bool:
        return sftp.exists(self._conn, self.expand(remote))

    def makedirs(self, remote: str) -> None:
        self._makedirs([self.expand(remote)])

    def _makedirs(self, paths: Sequence[str]) -> None:
        # One exec for any number of directories beats one SFTP stat+mkdir per path component.
        status, _out, err = self._exec(
            ("mkdir", "-p", "--", *paths),
            build_command(["mkdir", "-p", "--", *paths]), b"", None, "makedirs",
        )
        if status != 0:
            raise RemoteFileError(
                f"makedirs on {self.target.address}: {decode_output(err).strip()}",
                path=paths[0],
            )

    def list_files(self, remote_dir: str) -> list[str]:
        root = self.expand(remote_dir).rstrip("/") or "/"
        # Absolute (never taken for an option); the trailing "/" makes find fail on a file.
        argv = ("find", root if root == "/" else root + "/", "-type", "f", "-print0")
        status, out, err = self._exec(argv, build_command(argv), b"", None, "list_files")
        if status != 0:
            if not self.exists(root):
                raise RemoteFileNotFound(root, where=f"list_files on {self.target.address}")
            # not a directory, or an unreadable subdirectory (find lists what it can)
            raise RemoteFileError(
                f"list_files on {self.target.address}: {decode_output(err).strip()}", path=root
            )
        return relative_find_output(root, out)

    def read_text(self, remote: str, *, tail_lines: int | None = None) -> str:
        path = self.expand(remote)
        if tail_lines is None:
            return decode_output(sftp.read_bytes(self._conn, path))
        # One exec of tail(1) instead of downloading a possibly huge log.
        argv = ("tail", "-n", str(max(0, tail_lines)), "--", path)
        status, out, err = self._exec(argv, build_command(argv), b"", None, "read_text")
        if status != 0:
            if not self.exists(path):
                raise RemoteFileNotFound(path, where=f"read_text on {self.target.address}")
            raise RemoteFileError(
                f"read_text on {self.target.address}: {decode_output(err).strip()}", path=path
            )
        return decode_output(out)

    def write_text(self, remote: str, text: str, *, mode: int = 0o644) -> None:
        path = self.expand(remote)
        sftp.write_bytes(self._conn, path, text.encode("utf-8"), mode, self._makedirs)

    def put(self, local: Path, remote: str) -> None:
        source = Path(local)
        dest = self.expand(remote)
        if source.is_dir():
            dirs, files = sftp.local_tree(source, dest)
            self._makedirs(dirs)
            for file, target in files:
                sftp.put_file(self._conn, file, target, self._makedirs)
        elif source.is_file():
            sftp.put_file(self._conn, source, dest, self._makedirs)
        else:
            raise RemoteFileNotFound(str(source), where="put (local source)")

    def get(self, remote: str, local: Path) -> None:
        path = self.expand(remote)
        sftp.download(self._conn, path, Path(local))
