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
from ..lifecycle import TaskState
from ..models import JobInfo, Task
from ..paths import input_name, log_name, match_outputs
from ..transport import Transport
from .base import PollRequest, SubmitOutcome, SubmitRequest
from .slurm_files import SlurmFilesMixin
from .slurm_monitor import SlurmMonitoring
from .slurm_watch import SlurmWatchMixin

log = logging.getLogger(__name__)

UNKNOWN_LOOKBACK_SECONDS = 3 * 86400  # how far back sacct looks for a job by name
SUBMIT_CHUNK = 500  # requests per remote script (keeps scripts far below ARG_MAX / memory)


# How long the cluster's UTC offset is trusted before it is read again (one `date` call).
ZONE_TTL_SECONDS = 600.0


class SlurmBackend(SlurmMonitoring, SlurmFilesMixin, SlurmWatchMixin):
    name = "slurm"
    scheduler_requeues = True

    def __init__(self, cluster: ClusterConfig, transport: Transport) -> None:
        self.cluster = cluster
        self.transport = transport
        self._base: str | None = None
        self._tz: dt.tzinfo | None = None
        self._tz_read_at = 0.0  # time.monotonic() of the last read
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
        """The cluster's UTC offset: Slurm prints local times without a zone. Re-read every
        ZONE_TTL_SECONDS, so a daemon that runs across a DST change follows it."""
        if self._tz is None or time.monotonic() - self._tz_read_at > ZONE_TTL_SECONDS:
            self._tz_read_at = time.monotonic()
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
        res = self.transport.run(slurm.scrub_env(argv), timeout=self.cluster.command_timeout,
                                 what=what)  # fmt: skip
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
        """One squeue, at most two sacct and one marker probe, whatever the task count.

        A job whose row could not be read is answered with ``state=None`` (unknown: change
        nothing), never left out: a missing token means "the scheduler has no record"."""
        if not requests:
            return {}
        tz = self._zone()
        problems: list[str] = []
        sq_bad: list[slurm.BadRow] = []
        rows = slurm.parse_squeue(self._run_query(slurm.squeue_argv(bin_dir=self._bin()), "squeue"),
                                  tz=tz, problems=problems, bad_rows=sq_bad)  # fmt: skip
        sq_unreadable = slurm.Unreadable.of(sq_bad)
        live = slurm.by_job_id(rows)
        by_token = {slurm.token_from_comment(r.comment): r for r in live.values() if r.comment}
        by_name = {r.name: r for r in live.values() if r.name}

        def in_squeue(req: PollRequest) -> JobInfo | None:
            if req.job_id:
                return live.get(req.job_id)
            return by_token.get(req.token) or by_name.get(slurm.job_name(req.task_id, req.attempt))

        def squeue_unknown(req: PollRequest) -> slurm.BadRow | None:
            # squeue is the live truth: a job it printed unreadably (or, with a row naming no
            # job, any job it did not list) must not be judged from sacct's lagging view.
            if in_squeue(req) is not None:
                return None
            return sq_unreadable.find(req.job_id, req.token) or sq_unreadable.blind

        # sacct only for what squeue cannot tell: jobs it no longer lists, requeue causes of
        # restarted jobs, and jobs whose submission outcome is unknown (found by job name).
        asked = [r for r in requests if squeue_unknown(r) is None]
        want_ids = sorted({r.job_id for r in asked if r.job_id and r.job_id not in live}
                          | {j for j, r in live.items() if r.restarts > 0 and _is_ours(r)})  # fmt: skip
        unknown = [r for r in asked if not r.job_id and in_squeue(r) is None]
        acct: dict[str, JobInfo] = {}
        sa_bad: list[slurm.BadRow] = []
        if want_ids and self._accounting:
            argv = slurm.sacct_argv(want_ids, tz=tz, bin_dir=self._bin())
            acct.update(slurm.parse_sacct(self._run_query(argv, "sacct"), tz=tz,
                                          problems=problems, bad_rows=sa_bad))  # fmt: skip
        if unknown and self._accounting:
            # -j and --name combine as AND in sacct, so unknown outcomes get their own query.
            names = [slurm.job_name(r.task_id, r.attempt) for r in unknown]
            argv = slurm.sacct_argv(names=names, since=time.time() - UNKNOWN_LOOKBACK_SECONDS,
                                    tz=tz, bin_dir=self._bin())  # fmt: skip
            acct.update(slurm.parse_sacct(self._run_query(argv, "sacct"), tz=tz,
                                          problems=problems, bad_rows=sa_bad))  # fmt: skip
        sa_unreadable = slurm.Unreadable.of(sa_bad)
        for p in problems:
            log.warning("cluster %s: %s", self.cluster.name, p)
        merged = slurm.merge_views(live.values(), acct)
        acct_by_token = {slurm.token_from_comment(r.comment): r for r in acct.values() if r.comment}
        acct_by_name = {r.name: r for r in acct.values() if r.name}
        out: dict[str, JobInfo] = {}
        missing: list[PollRequest] = []
        for req in requests:
            bad = squeue_unknown(req)
            if bad is not None:
                out[req.token] = slurm.unknown_job(req.job_id, bad)
                continue
            if req.job_id:
                info = merged.get(req.job_id)
            else:
                info = (in_squeue(req) or acct_by_token.get(req.token)
                        or acct_by_name.get(slurm.job_name(req.task_id, req.attempt)))  # fmt: skip
                info = merged.get(info.job_id, info) if info is not None else None
            if info is None and (bad := sa_unreadable.find(req.job_id, req.token)
                                 or (sa_unreadable.blind if req in asked else None)):  # fmt: skip
                info = slurm.unknown_job(req.job_id, bad)
            if info is None:
                missing.append(req)
            else:
                out[req.token] = info
        out.update(self._from_markers(missing, merged))
        return out

    def _from_markers(self, requests: Sequence[PollRequest],
                      merged: dict[str, JobInfo]) -> dict[str, JobInfo]:  # fmt: skip
        """Jobs neither squeue nor sacct know (accounting off, purged, or an attempt whose
        sbatch reply was lost): the markers. The job id the submission script wrote names the
        job of a token-only attempt (looked up among the rows already read); only an
        exit_code marker ends a job; otherwise it stays absent and becomes lost after the
        grace period."""
        marks = self._read_markers([r for r in requests if r.work_dir])
        out: dict[str, JobInfo] = {}
        for req in requests:
            got = marks.get(req.token, {})
            marked = got.get("job_id", "")
            job_id = req.job_id or (marked if marked.isdigit() else None)
            if job_id is None:
                if got.get("submitting") == "1":
                    # Its submission script still runs (inside a slow sbatch): not absent.
                    out[req.token] = JobInfo(job_id="", raw_state="SUBMITTING", state=TaskState.SUBMITTING,
                                             source="marker", reason="submission script still running")  # fmt: skip
                continue
            info = None if req.job_id else merged.get(job_id)
            info = info or slurm.job_from_markers(job_id, got)
            if info is not None:
                out[req.token] = info
        return out

    def _read_markers(self, requests: Sequence[PollRequest]) -> dict[str, dict[str, str]]:
        """token -> {marker file: value} for these attempts, in one round trip (none for no
        attempts)."""
        if not requests:
            return {}
        dirs = {r.token: slurm.marker_dir(r.work_dir or "", r.attempt) for r in requests}
        res = self.transport.run_script(slurm.render_marker_probe(dirs), what="reading job markers")
        return slurm.parse_marker_report(res.stdout)

    # -- cancel / files -----------------------------------------------------------------
    def cancel(self, requests: Sequence[PollRequest]) -> None:
        ids = sorted({r.job_id for r in requests if r.job_id})
        if not ids:
            return
        self.commands += 1
        res = self.transport.run(slurm.scrub_env(slurm.scancel_argv(ids, bin_dir=self._bin())),
                                 what="scancel")  # fmt: skip
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

