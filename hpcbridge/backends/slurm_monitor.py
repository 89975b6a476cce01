"""Monitoring through Slurm's own accounting: what finished jobs used, why queued jobs wait,
what running jobs use now. One batched command per kind, whatever the task count.

``MonitoringBackend`` is the optional capability the sync cycle looks for; the Slurm backend
has it through ``SlurmMonitoring``. A backend without it (local processes) simply shows no
usage and no queue insight.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .. import slurm
from ..config import ClusterConfig
from ..slurm.queue import explain_reason, parse_pending, pending_positions, pending_queue_argv
from ..slurm.usage import parse_sstat, parse_usage, sacct_usage_argv, sstat_argv, sstat_not_running
from .base import PollRequest

if TYPE_CHECKING:  # importing the transports pulls in paramiko: not for every CLI start
    from ..transport import Transport

log = logging.getLogger(__name__)

# sacct still shows these for a job whose accounting row is not final (22.05 lags squeue).
_NOT_FINAL = frozenset({"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING"})


@runtime_checkable
class MonitoringBackend(Protocol):
    """What a backend offers for monitoring, in one round trip per call."""

    def usage(self, requests: Sequence[PollRequest]) -> dict[str, dict[str, Any]]:
        """Resource usage of finished jobs by token (``Usage.to_dict()`` shape: cpu_seconds,
        max_rss_bytes, cpu/mem/time_efficiency, core_hours, alloc_cpus, alloc_mem_bytes,
        elapsed_seconds, ...). A job whose accounting is not final yet is left out (ask
        again next cycle). Raises TransportError / SchedulerUnavailable like ``poll``."""
        ...

    def queue_insight(self, requests: Sequence[PollRequest],
                      partitions: Sequence[str]) -> dict[str, dict[str, Any]]:  # fmt: skip
        """Why each queued job waits, by token: ``{reason, detail, explanation, action,
        blocking, known, position, of, estimated_start}`` (position among the pending jobs
        of its partition, 1 = next; None when it is not in line, e.g. held)."""
        ...

    def live_usage(self, requests: Sequence[PollRequest]) -> dict[str, dict[str, Any]]:
        """What running jobs use now (``LiveUsage.to_dict()``: rss_bytes, max_rss_bytes,
        cpu_seconds, disk read/write, sampled_at, gathered); a job with no running step is
        left out."""
        ...


class SlurmMonitoring:
    """Mixin for SlurmBackend: usage from ``sacct`` step lines, queue insight from one
    ``squeue`` over the pending jobs, live usage from ``sstat``."""

    cluster: ClusterConfig
    transport: Transport

    if TYPE_CHECKING:  # provided by SlurmBackend

        def _run_query(self, argv: list[str], what: str) -> str: ...
        def _bin(self) -> str | None: ...
        def _zone(self) -> dt.tzinfo: ...

    def usage(self, requests: Sequence[PollRequest]) -> dict[str, dict[str, Any]]:
        by_job = {r.job_id: r.token for r in requests if r.job_id}
        if not by_job:
            return {}
        problems: list[str] = []
        text = self._run_query(sacct_usage_argv(sorted(by_job), bin_dir=self._bin()), "sacct")
        got = parse_usage(text, problems)
        for p in problems:
            log.warning("cluster %s: %s", self.cluster.name, p)
        return {by_job[jid]: u.to_dict() for jid, u in got.items()
                if jid in by_job and u.state.split()[0] not in _NOT_FINAL}  # fmt: skip

    def queue_insight(self, requests: Sequence[PollRequest],
                      partitions: Sequence[str]) -> dict[str, dict[str, Any]]:  # fmt: skip
        by_job = {r.job_id: r.token for r in requests if r.job_id}
        if not by_job:
            return {}
        parts = [p for p in partitions if p]
        argv = pending_queue_argv(partitions=parts or None, bin_dir=self._bin())
        rows = parse_pending(self._run_query(argv, "squeue"), tz=self._zone())
        positions = pending_positions(rows, by_job)
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            token = by_job.get(row.job_id)
            if token is None:
                continue
            reason = explain_reason(row.reason)
            pos = positions.get(row.job_id)
            out[token] = {**reason.to_dict(), "reason": reason.code,
                          "position": pos[0] if pos else None, "of": pos[1] if pos else None,
                          "estimated_start": row.estimated_start}  # fmt: skip
            out[token].pop("code", None)
        return out

    def live_usage(self, requests: Sequence[PollRequest]) -> dict[str, dict[str, Any]]:
        by_job = {r.job_id: r.token for r in requests if r.job_id}
        if not by_job:
            return {}
        res = self.transport.run(slurm.scrub_env(sstat_argv(sorted(by_job), bin_dir=self._bin())),
                                 timeout=self.cluster.command_timeout, what="sstat")  # fmt: skip
        if not res.ok and not sstat_not_running(res.stderr):
            log.info("cluster %s: sstat exit %s: %s", self.cluster.name, res.exit_status,
                     res.stderr.strip()[-300:])  # fmt: skip
        live = parse_sstat(res.stdout, sampled_at=time.time())
        return {by_job[jid]: v.to_dict() for jid, v in live.items() if jid in by_job}

