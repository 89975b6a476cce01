"""Leases: how a sync tells a submitter that is still working from one that died.

A process that registers, stages or submits tasks first takes a *lease*: a file under the
registry's ``leases/`` directory on which it holds an exclusive ``flock`` for as long as it
works on them, and whose name it writes on the tasks. The kernel drops the lock when the
process exits, however it exits (``kill -9`` included), so a sync that can take the lock
knows the submitter is gone; one that cannot leaves the tasks alone, however long ``sbatch``
takes. Grace periods for an unfinished submission start only when the lease is found dead.

The registry and the lease files live on the machine that runs hpcbridge (never on the
cluster), so ``flock`` is reliable here: no NFS.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Lease:
    """An exclusive lock held by this process until ``release()`` (or its exit)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.id = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.path = directory / f"{self.id}.lock"
        # Lock a private file, then rename it into place: nobody can ever see the lease's
        # file unlocked while its owner lives (a checker taking the lock reads "dead").
        tmp = directory / f".{self.id}.tmp"
        self._fd: int | None = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.rename(tmp, self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_alive(directory: Path, lease_id: str | None) -> bool:
    """True while the process holding ``lease_id`` lives and has not released it."""
    if not lease_id or "/" in lease_id or lease_id.startswith("."):
        return False
    path = directory / f"{lease_id}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # released, or cleaned up by another checker
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        # We hold it: its owner is gone. Remove the file so the next check is a stat.
        path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)


@contextmanager
def try_lock(path: Path, *, note_pid: bool = False) -> Iterator[bool]:
    """A non-blocking exclusive flock on ``path`` (created 0600, its dir too); yields False
    when another process holds it. The kernel releases it on any exit, kill -9 included.
    ``note_pid``: write this process's pid into the file (for people looking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        if note_pid:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
