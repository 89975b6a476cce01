"""Running one command on an SSH session channel: open the channel (the only retried step),
send the command and its stdin, collect stdout/stderr/exit status under a deadline.

Once ``exec`` was requested, any failure is reported as "outcome unknown" and never retried
here; the caller reconciles (e.g. finds the job by its token). The socket under all of this
has TCP_NODELAY set (:func:`~hpcbridge.transport.ssh_connect.dial`): without it each small
exec waits for Nagle + delayed ACK.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable

import paramiko

from ..errors import CommandTimeout, TransportError
from .base import STDERR_KEEP
from .ssh_connect import ConnectSettings, SSHConnection

# The logger of the whole SSH transport (its records keep one name across the modules).
log = logging.getLogger("hpcbridge.transport.ssh")

# stdin up to this size is written before reading output: it fits in the server's initial
# channel window (OpenSSH: 2 MiB), so sendall() cannot block on a remote that is itself blocked
# writing stdout. Larger stdin is written from a thread to avoid that deadlock.
INLINE_STDIN = 512 * 1024
RECV_CHUNK = 65536
# After the exit status arrived, wait at most this long (without new data) for EOF. A remote
# background process that inherited stdout would otherwise keep the channel open forever
# (plain `ssh host cmd` hangs in that case).
EXIT_DRAIN_GRACE = 2.0


def open_session(conn: SSHConnection, ensure: Callable[[], paramiko.Transport]) -> paramiko.Channel:
    """A new session channel on the connection ``ensure()`` returns, reconnecting and trying
    again (bounded) when opening it fails."""
    s = conn.settings
    delay = s.retry_backoff
    for attempt in range(1, s.connect_attempts + 1):
        transport = ensure()
        try:
            return transport.open_session(timeout=s.cluster.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # Only a channel-open request went out: no command can have run, so a
            # reconnect and a new attempt are safe here (and only here).
            conn.drop(transport)
            if attempt == s.connect_attempts:
                raise TransportError(
                    f"{s.description}: cannot open a session channel: {exc or type(exc).__name__}",
                    hint="the server may limit sessions (MaxSessions) or be restarting",
                ) from None
            log.info("%s: channel open failed (%s); reconnecting", s.description, exc)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def exec_on_channel(
    chan: paramiko.Channel, settings: ConnectSettings, argv: tuple[str, ...], command: str,
    data: bytes, limit: float, what: str | None,
) -> tuple[int, bytes, bytes]:
    """Run ``command`` on the fresh channel ``chan`` (closed afterwards), feeding it ``data``,
    within ``limit`` seconds: ``(exit status, stdout, stderr)``. ``argv`` names it in errors.

    Raises CommandTimeout past the limit and TransportError when the connection failed while
    starting it or dropped under it; either way its outcome is unknown."""
    shown = " ".join(argv)
    shown = shown if len(shown) <= 200 else shown[:200] + " ..."
    lead = f"{what}: " if what else ""
    address = settings.target.address
    transport = chan.get_transport()
    started = time.monotonic()
    deadline = started + limit
    settings.stats.add(round_trips=1, bytes_up=len(command) + len(data))
    writer: threading.Thread | None = None
    try:
        try:
            chan.exec_command(command)
            # From here on the command may be running: never retry it.
            if len(data) <= INLINE_STDIN:
                send_stdin(chan, data)
            else:
                writer = threading.Thread(target=send_stdin, args=(chan, data), daemon=True,
                                          name="hpcbridge-ssh-stdin")
                writer.start()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(
                f"{lead}connection to {address} failed while starting "
                f"`{shown}` ({exc or type(exc).__name__}); its outcome is unknown",
                hint="it may or may not have run; check before repeating it",
            ) from None
        out, err, timed_out = collect(chan, deadline)
    finally:
        chan.close()
    elapsed = time.monotonic() - started
    settings.stats.add(exec_seconds=elapsed, bytes_down=len(out) + len(err))
    if timed_out:
        raise CommandTimeout(
            f"{lead}`{shown}` on {address} did not finish within {limit:g} s; "
            "its outcome is unknown (the channel was closed; the remote process may go on)",
            hint="raise command_timeout for this cluster if the command is just slow",
        )
    # paramiko leaves exit_status at -1 when no exit-status message came: either the
    # connection died under the command, or the process was killed by a signal.
    status = chan.exit_status
    if status == -1 and (transport is None or not transport.is_active()):
        raise TransportError(
            f"{lead}connection to {address} dropped while `{shown}` was "
            "running; its outcome is unknown",
            hint="it may or may not have run; check before repeating it",
        )
    log.debug("%s: exec %.1f ms status %s: %s", settings.description, elapsed * 1000, status,
              shown)
    return status, out, err


def send_stdin(chan: paramiko.Channel, data: bytes) -> None:
    try:
        if data:
            chan.sendall(data)
        # Always send EOF, even with no stdin: a command that reads stdin (cat, bash -s) would
        # otherwise wait forever.
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        # The remote closed its end (the command exited without reading all of stdin); its
        # exit status tells the rest.
        pass


def collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes, bool]:
    """Read stdout and stderr together until EOF + exit status (or the deadline):
    ``(stdout, stderr, timed_out)``.

    ``select()`` on a paramiko Channel works: ``fileno()`` is a pipe that becomes readable
    when either buffer has data, and stays readable forever after EOF/close. Draining both
    buffers on every wake-up means neither side's window fills up, so large outputs on both
    streams cannot deadlock."""
    out = bytearray()
    err = bytearray()
    exit_seen_at: float | None = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            return bytes(out), bytes(err), True
        select.select([chan], [], [], min(deadline - now, 1.0))
        progressed = False
        while chan.recv_ready():
            chunk = chan.recv(RECV_CHUNK)
            if not chunk:
                break
            out += chunk
            progressed = True
        while chan.recv_stderr_ready():
            chunk = chan.recv_stderr(RECV_CHUNK)
            if not chunk:
                break
            err += chunk
            progressed = True
        if progressed:
            exit_seen_at = None
            continue
        if chan.closed or (chan.eof_received and chan.exit_status_ready()):
            return bytes(out), bytes(err), False
        if chan.exit_status_ready():
            # Exit status but no EOF yet: a leftover background process may hold stdout.
            if exit_seen_at is None:
                exit_seen_at = time.monotonic()
            elif time.monotonic() - exit_seen_at > EXIT_DRAIN_GRACE:
                log.warning("command exited but its output stayed open (a background process?); "
                            "not waiting for it")
                return bytes(out), bytes(err), False
            chan.status_event.wait(0.01)
        elif chan.eof_received:
            # EOF before the exit status: the select pipe is now always readable, so wait on
            # the status event instead of spinning.
            chan.status_event.wait(min(max(deadline - time.monotonic(), 0.0), 0.05))


class ChannelStream:
    """:class:`~hpcbridge.transport.base.CommandStream` over one paramiko session channel
    whose command is already running. stdout is read as it arrives (paramiko buffers at most
    one channel window, so memory stays bounded whatever the transfer size); stderr is drained
    on every wake-up because both streams share the window: left unread, it would stall
    stdout too."""

    def __init__(self, chan: paramiko.Channel, settings: ConnectSettings, shown: str,
                 idle_limit: float, what: str | None) -> None:  # fmt: skip
        self.chan = chan
        self.settings = settings
        self.shown = shown
        self.idle_limit = idle_limit
        self.lead = f"{what}: " if what else ""
        self.err = bytearray()
        self.started = time.monotonic()
        self._stdin_closed = False

    def __enter__(self) -> ChannelStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain_stderr(self) -> None:
        while self.chan.recv_stderr_ready():
            chunk = self.chan.recv_stderr(RECV_CHUNK)
            if not chunk:
                break
            self.err += chunk
            self.settings.stats.add(bytes_down=len(chunk))
        if len(self.err) > STDERR_KEEP:
            del self.err[: len(self.err) - STDERR_KEEP]

    def _broken(self) -> bool:
        transport = self.chan.get_transport()
        return not self.chan.exit_status_ready() and (transport is None or not transport.is_active())

    def _timeout(self) -> CommandTimeout:
        return CommandTimeout(
            f"{self.lead}`{self.shown}` on {self.settings.target.address} sent nothing for "
            f"{self.idle_limit:g} s; its outcome is unknown",
            hint="raise command_timeout for this cluster if the command is just slow",
        )

    def _dropped(self) -> TransportError:
        return TransportError(
            f"{self.lead}connection to {self.settings.target.address} dropped while "
            f"`{self.shown}` was streaming; what arrived may be incomplete",
            hint="nothing is lost on the cluster; the next attempt starts over",
        )

    def read(self, size: int = RECV_CHUNK) -> bytes:
        deadline = time.monotonic() + self.idle_limit
        while True:
            if self.chan.recv_ready():
                chunk = self.chan.recv(size)
                self.settings.stats.add(bytes_down=len(chunk))
                return chunk
            self._drain_stderr()
            if self.chan.eof_received or self.chan.closed:
                if self.chan.recv_ready():
                    continue
                if self._broken():
                    raise self._dropped()
                return b""
            now = time.monotonic()
            if now >= deadline:
                raise self._timeout()
            select.select([self.chan], [], [], min(deadline - now, 1.0))

    def write(self, data: bytes) -> None:
        self.settings.stats.add(bytes_up=len(data))
        try:
            self.chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command stopped reading (exited): finish() tells why

    def close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def finish(self) -> tuple[int, str]:
        while self.read():
            pass
        deadline = time.monotonic() + self.idle_limit
        while not self.chan.exit_status_ready():
            if self._broken():
                raise self._dropped()
            if time.monotonic() >= deadline:
                raise self._timeout()
            self.chan.status_event.wait(0.05)
        self._drain_stderr()
        self.settings.stats.add(exec_seconds=time.monotonic() - self.started)
        return self.chan.exit_status, self.err.decode("utf-8", errors="replace")

    def close(self) -> None:
        try:
            self.chan.close()
        except Exception:  # noqa: BLE001 - close never raises
            pass


def start_stream(chan: paramiko.Channel, settings: ConnectSettings, argv: tuple[str, ...],
                 command: str, idle_limit: float, what: str | None) -> ChannelStream:  # fmt: skip
    """Run ``command`` on the fresh channel ``chan`` and return its live stream. Raises
    TransportError when starting it failed (outcome unknown; the channel is closed)."""
    shown = " ".join(argv)
    shown = shown if len(shown) <= 200 else shown[:200] + " ..."
    settings.stats.add(round_trips=1, bytes_up=len(command))
    try:
        chan.exec_command(command)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        chan.close()
        lead = f"{what}: " if what else ""
        raise TransportError(
            f"{lead}connection to {settings.target.address} failed while starting "
            f"`{shown}` ({exc or type(exc).__name__}); its outcome is unknown",
            hint="it may or may not have run; check before repeating it",
        ) from None
    return ChannelStream(chan, settings, shown, idle_limit, what)
