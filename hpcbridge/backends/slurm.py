"""Slurm over a transport (SSH or local): staging, batched submission, batched polling.

Round trips per cycle are fixed, whatever the task count: submission is one remote bash
script that writes every job script and runs every ``sbatch`` (one exec), polling is one
``squeue --me`` plus at most one ``sacct`` (plus one marker read for jobs neither knows).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import re
import time
from collections.abc import Sequence
from pathlib import Path

from .. import slurm
from ..config import ClusterConfig
from ..errors import (
    CommandFailed,
    HpcBridgeError,
    SchedulerError,
    SchedulerUnavailable,
    TransportError,
)
from ..models import JobInfo, Task
from ..paths import input_name, log_name, match_outputs
from ..transport import Transport
from .base import PollRequest, SubmitOutcome, SubmitRequest

log = logging.getLogger(__name__)

UNKNOWN_LOOKBACK_SECONDS = 3 * 86400  # how far back sacct looks for a job by name
SUBMIT_CHUNK = 500  # requests per remote script (keeps scripts far below ARG_MAX / memory)


class SlurmBackend:
    name = "slurm"
    scheduler_requeues = True

    def __init__(self, cluster: ClusterConfig, transport: Transport) -> None:
        self.cluster = cluster
        self.transport = transport
        self._base: str | None = None
        self._tz: dt.tzinfo | None = None
        self._accounting = True
        self.commands = 0  # scheduler commands issued (sbatch counted once per batch script)

    # -- paths --------------------------------------------------------------------------
    def base_dir(self) -> str:
        if self._base is None:
            wd = self.cluster.work_dir
            # An absolute work_dir needs no remote lookup of $HOME (an SFTP session).
            self._base = posixpath.normpath(wd if wd.startswith("/") else self.transport.expand(wd))
        return self._base

    def work_dir(self, task: Task) -> str:
        return task.work_dir or posixpath.join(self.base_dir(), task.id)

    def _bin(self) -> str | None:
        return self.cluster.slurm_bin_dir

    def _zone(self) -> dt.tzinfo:
        """The cluster's UTC offset: Slurm prints local times without a zone."""
        if self._tz is None:
            res = self.transport.run(["date", "+%z"], what="reading the cluster's time zone")
            m = re.fullmatch(r"([+-])(\d\d)(\d\d)", res.stdout.strip())
            if res.ok and m:
                delta = dt.timedelta(hours=int(m[2]), minutes=int(m[3]))
                self._tz = dt.timezone(delta if m[1] == "+" else -delta)
            else:
                self._tz = dt.UTC
                log.warning("cluster %s: could not read its time zone (%r); assuming UTC",
                            self.cluster.name, res.stdout.strip())  # fmt: skip
        return self._tz

    # -- staging ------------------------------------------------------------------------
    def prepare(self, tasks: Sequence[Task]) -> dict[str, str | HpcBridgeError]:
        dirs = {t.id: self.work_dir(t) for t in tasks}
        # No mkdir here: the submission script creates .hpcbridge/<attempt> (and so the work
        # dir) in the same round trip as sbatch, and SFTP uploads create their parents. But
        # do connect: an unreachable cluster must fail here, before the write-ahead commit,
        # not in submit() where every attempt would become "outcome unknown".
        connect = getattr(self.transport, "connect", None)
        if connect is not None:
            connect()
        out: dict[str, str | HpcBridgeError] = {}
        for task in tasks:
            try:
                for src in task.spec.inputs:
                    self.transport.put(Path(src), posixpath.join(dirs[task.id], input_name(src)))
                out[task.id] = dirs[task.id]
            except TransportError:
                raise
            except HpcBridgeError as exc:
                out[task.id] = exc
            except OSError as exc:
                out[task.id] = HpcBridgeError(f"cannot upload inputs of task {task.id}: {exc}")
        return out

    # -- submission ---------------------------------------------------------------------
    def render(self, req: SubmitRequest) -> str:
        task = req.task
        return slurm.render_batch_script(
            task_id=task.id,
            attempt=req.attempt,
            token=req.token,
            spec=task.spec,
            resources=slurm.merge_resources(task.spec.resources, self.cluster.defaults),
            work_dir=self.work_dir(task),
            setup=self.cluster.setup,
            env=self.cluster.env,
            exclude_nodes=req.exclude_nodes,
            requeue=task.spec.retry.slurm_requeue,
        )

    def submit_script(self, reqs: Sequence[tuple[SubmitRequest, str]]) -> str:
        """The bulk submission script for rendered requests (see ``slurm.render_submit_script``)."""
        jobs = [slurm.BulkJob(r.token, slurm.marker_dir(self.work_dir(r.task), r.attempt), text)
                for r, text in reqs]  # fmt: skip
        return slurm.render_submit_script(jobs, sbatch=slurm.sbatch_argv(bin_dir=self._bin()),
                                          lanes=self.cluster.submit_parallelism)  # fmt: skip

    def submit(self, requests: Sequence[SubmitRequest]) -> list[SubmitOutcome]:
        outcomes: dict[str, SubmitOutcome] = {}
        rendered: list[tuple[SubmitRequest, str]] = []
        for req in requests:
            try:
                rendered.append((req, self.render(req)))
            except HpcBridgeError as exc:  # bad option values: this task alone is rejected
                outcomes[req.token] = SubmitOutcome(req.token, error=exc)
        for i in range(0, len(rendered), SUBMIT_CHUNK):
            chunk = rendered[i : i + SUBMIT_CHUNK]
            try:
                self.commands += 1
                res = self.transport.run_script(self.submit_script(chunk),
                                                timeout=self.cluster.command_timeout + len(chunk),
                                                what="submitting jobs")  # fmt: skip
            except TransportError as exc:
                # The script may have run in part: every job of the chunk is "unknown".
                for req, _ in chunk:
                    outcomes[req.token] = SubmitOutcome(req.token, error=exc, unknown=True)
                continue
            outcomes.update(self._parse_submit(res.stdout, res.stderr, [r for r, _ in chunk]))
        return [outcomes[r.token] for r in requests]

    def _parse_submit(self, stdout: str, stderr: str, reqs: Sequence[SubmitRequest]) -> dict[str, SubmitOutcome]:
        report = slurm.parse_submit_report(stdout)
        out: dict[str, SubmitOutcome] = {}
        argv = slurm.sbatch_argv(bin_dir=self._bin())
        for req in reqs:
            if req.token not in report.status:
                # The script stopped before this line: sbatch may or may not have run.
                err = TransportError(f"submission script ended early; stderr: {stderr[-500:]!r}")
                out[req.token] = SubmitOutcome(req.token, error=err, unknown=True)
                continue
            rc, text = report.status[req.token]
            if rc == 0:
                try:
                    out[req.token] = SubmitOutcome(req.token, job_id=slurm.parse_sbatch(text))
                except HpcBridgeError as exc:
                    out[req.token] = SubmitOutcome(req.token, error=exc, unknown=True)
                continue
            err_text = report.errors.get(req.token) or text
            failure = SchedulerError(argv, rc, err_text, what=f"sbatch for task {req.task.id}",
                                     hint="check the task's resources against the cluster's "
                                          "partitions and limits (sinfo, sacctmgr show qos)")  # fmt: skip
            out[req.token] = SubmitOutcome(req.token, error=failure,
                                           unknown=slurm.sbatch_outcome_uncertain(err_text))  # fmt: skip
        return out

    # -- polling ------------------------------------------------------------------------
    def _run_query(self, argv: list[str], what: str) -> str:
        self.commands += 1
        res = self.transport.run(argv, timeout=self.cluster.command_timeout, what=what)
        if res.ok:
            return res.stdout
        if slurm.squeue_missing_job_error(res.exit_status, res.stderr):
            return ""
        if what == "sacct" and slurm.accounting_disabled(res.stderr):
            if self._accounting:
                log.warning("cluster %s: sacct unavailable (accounting disabled); finished jobs "
                            "are resolved from their marker files only", self.cluster.name)  # fmt: skip
            self._accounting = False
            return ""
        err = CommandFailed(argv, res.exit_status, res.stderr, what=what)
        raise SchedulerUnavailable(
            f"cluster {self.cluster.name}: {err.message}",
            hint="the scheduler did not answer; tasks are left as they were until it does",
        )

    def poll(self, requests: Sequence[PollRequest]) -> dict[str, JobInfo]:
        if not requests:
            return {}
        tz = self._zone()
        problems: list[str] = []
        rows = slurm.parse_squeue(
            self._run_query(slurm.squeue_argv(bin_dir=self._bin()), "squeue"), tz=tz, problems=problems
        )
        live = {r.job_id: r for r in rows}
        by_token = {slurm.token_from_comment(r.comment): r for r in rows if r.comment}
        # sacct only for what squeue cannot tell: jobs it no longer lists, requeue causes of
        # restarted jobs, and jobs whose submission outcome is unknown (found by job name).
        want_ids = sorted({r.job_id for r in requests if r.job_id and r.job_id not in live}
                          | {j for j, r in live.items() if r.restarts > 0 and _is_ours(r)})  # fmt: skip
        unknown = [r for r in requests if not r.job_id and r.token not in by_token]
        acct: dict[str, JobInfo] = {}
        if want_ids and self._accounting:
            argv = slurm.sacct_argv(want_ids, tz=tz, bin_dir=self._bin())
            acct.update(slurm.parse_sacct(self._run_query(argv, "sacct"), tz=tz, problems=problems))
        if unknown and self._accounting:
            # -j and --name combine as AND in sacct, so unknown outcomes get their own query.
            names = [slurm.job_name(r.task_id, r.attempt) for r in unknown]
            argv = slurm.sacct_argv(names=names, since=time.time() - UNKNOWN_LOOKBACK_SECONDS,
                                    tz=tz, bin_dir=self._bin())  # fmt: skip
            acct.update(slurm.parse_sacct(self._run_query(argv, "sacct"), tz=tz, problems=problems))
        for p in problems:
            log.warning("cluster %s: %s", self.cluster.name, p)
        merged = slurm.merge_views(rows, acct)
        acct_by_token = {slurm.token_from_comment(r.comment): r for r in acct.values() if r.comment}
        out: dict[str, JobInfo] = {}
        missing: list[PollRequest] = []
        for req in requests:
            info = merged.get(req.job_id) if req.job_id else (by_token.get(req.token) or acct_by_token.get(req.token))
            if info is not None and req.job_id is None:
                info = merged.get(info.job_id, info)
            if info is None:
                missing.append(req)
            else:
                out[req.token] = info
        if missing:
            out.update(self._from_markers([r for r in missing if r.job_id and r.work_dir]))
        return out

    def _from_markers(self, requests: Sequence[PollRequest]) -> dict[str, JobInfo]:
        """Jobs neither squeue nor sacct know (accounting off, or purged): read the markers
        the batch script left. Only an exit_code marker ends a job; otherwise it stays absent
        and becomes lost after the grace period."""
        if not requests:
            return {}
        dirs = {r.token: slurm.marker_dir(r.work_dir or "", r.attempt) for r in requests}
        res = self.transport.run_script(slurm.render_marker_probe(dirs), what="reading job markers")
        marks = slurm.parse_marker_report(res.stdout)
        out: dict[str, JobInfo] = {}
        for r in requests:
            info = slurm.job_from_markers(r.job_id, marks.get(r.token, {})) if r.job_id else None
            if info is not None:
                out[r.token] = info
        return out

    # -- cancel / files -----------------------------------------------------------------
    def cancel(self, requests: Sequence[PollRequest]) -> None:
        ids = sorted({r.job_id for r in requests if r.job_id})
        if not ids:
            return
        self.commands += 1
        res = self.transport.run(slurm.scancel_argv(ids, bin_dir=self._bin()), what="scancel")
        if not res.ok:
            # scancel exits non-zero when some ids already ended; the poll tells the truth.
            log.info("cluster %s: scancel exit %s: %s", self.cluster.name, res.exit_status,
                     res.stderr.strip()[-300:])  # fmt: skip
            if slurm.scheduler_unreachable(res.stderr):
                raise SchedulerUnavailable(f"cluster {self.cluster.name}: scancel failed: {res.stderr.strip()[-300:]}")

    def fetch_outputs(self, task: Task, dest: Path) -> list[Path]:
        work = self.work_dir(task)
        files = match_outputs(self.transport.list_files(work), task.spec.outputs)
        copied = []
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.transport.get(posixpath.join(work, rel), target)
            copied.append(target)
        return copied

    def read_log(self, task: Task, attempt: int, stream: str, tail: int | None) -> str:
        path = posixpath.join(self.work_dir(task), log_name(attempt, stream))
        try:
            return self.transport.read_text(path, tail_lines=tail)
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.transport.close()


def _is_ours(row: JobInfo) -> bool:
    return slurm.token_from_comment(row.comment) is not None

