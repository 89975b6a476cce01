"""The sync loop: cycles at an interval with jitter, backs off per cluster while it is
unreachable, and stops cleanly on SIGTERM/SIGINT (after the cycle in progress, so no
transaction is cut short)."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from types import FrameType

from .errors import HpcBridgeError
from .service import Service

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 600.0


def run_daemon(service: Service, *, interval: float, clusters: list[str] | None = None,
               max_cycles: int | None = None) -> int:  # fmt: skip
    """Run until signalled (or ``max_cycles``); return the number of cycles run."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the current cycle", signal.Signals(signum).name)
        stop.set()
        service.runtime.stop.set()  # a budget wait ends at once

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    failures: dict[str, int] = {}
    next_try: dict[str, float] = {}
    cycles = 0
    try:
        while not stop.is_set():
            names = clusters or service.active_clusters()
            now = time.monotonic()
            due = [c for c in names if next_try.get(c, 0.0) <= now]
            try:
                if not due:  # nothing to sync: notifications still go out
                    service.deliver()
                for report in service.sync(due) if due else []:
                    for tid, old, new in report.changes:
                        log.info("task %s: %s -> %s", tid, old, new)
                    if report.unreachable:
                        failures[report.cluster] = failures.get(report.cluster, 0) + 1
                        delay = min(interval * 2 ** failures[report.cluster], MAX_BACKOFF_SECONDS)
                        next_try[report.cluster] = time.monotonic() + delay
                        log.warning("cluster %s unreachable (%d in a row); next try in %.0f s",
                                    report.cluster, failures[report.cluster], delay)  # fmt: skip
                    else:
                        failures.pop(report.cluster, None)
                        next_try.pop(report.cluster, None)
                    for err in report.errors:
                        log.error("cluster %s: %s", report.cluster, err)
            except HpcBridgeError as exc:
                # A cycle that fails leaves every task as it was; the next one tries again.
                log.error("sync cycle failed: %s", exc)
            except Exception:  # noqa: BLE001 - a long-running loop must outlive one bad cycle
                # Every write is a transaction, so an unexpected error (a bug, a full disk)
                # leaves the registry consistent; log it with its traceback and carry on
                # rather than leave every task unwatched until someone restarts the daemon.
                log.exception("sync cycle crashed; the next cycle tries again")
            cycles += 1
            if max_cycles is not None and cycles >= max_cycles:
                break
            stop.wait(interval * random.uniform(0.9, 1.1))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return cycles
