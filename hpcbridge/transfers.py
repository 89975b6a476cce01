"""Who watches file transfers: a context-local observer that the SFTP transport reports the
bytes of each upload and download to (paramiko's put/get callbacks). The CLI sets one on a
terminal to show bytes and rate; the library itself never prints. A new thread starts with
no observer (threads do not inherit context variables), so a background sync stays silent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# (direction "upload" or "download", file name, bytes done, bytes in all or None)
TransferObserver = Callable[[str, str, int, int | None], None]

_observer: ContextVar[TransferObserver | None] = ContextVar("hpcbridge_transfer_observer", default=None)


@contextmanager
def observe_transfers(observer: TransferObserver | None) -> Iterator[None]:
    """Report the transfers made inside the block to ``observer`` (None: to no one)."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


def watching() -> bool:
    return _observer.get() is not None


def transfer_callback(direction: str, name: str) -> Callable[[int, int], None] | None:
    """A paramiko-style ``callback(done, total)`` for one file, or None when no one watches."""
    observer = _observer.get()
    if observer is None:
        return None

    def report(done: int, total: int) -> None:
        observer(direction, name, done, total or None)

    return report


__all__ = ["TransferObserver", "observe_transfers", "transfer_callback", "watching"]
