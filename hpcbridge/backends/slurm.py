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
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import slurm
from ..config import ClusterConfig
from ..errors import (
    CommandFailed,
    HpcBridgeError,
    SchedulerError,
    SchedulerUnavailable,
    SubmitLimitReached,
    TransportError,
)
from ..lifecycle import TaskState
from ..models import JobInfo, Task
from ..paths import log_name
from ..slurm import limits
from ..slurm.limits import ClusterLimits
from ..transport import Transport
from .base import PollRequest, SubmitOutcome, SubmitRequest
from .batch_fetch import FetchItem, fetch_batch
from .slurm_files import SlurmFilesMixin
from .slurm_inputs import stage_inputs
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
        self._rendered: dict[str, str] = {}  # token -> job script, from plan() to submit()
        self._tz: dt.tzinfo | None = None
        self._tz_read_at = 0.0  # time.monotonic() of the last read
        self._accounting = True
        self._limits: ClusterLimits | None = None
        # Held while the limits are read: a runtime may read them in a thread of its own
        # (Runtime.prefetch_limits) while this thread plans an array and needs them too.
        self._limits_lock = threading.Lock()
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
    def connect(self) -> None:
        """Connect now, if the transport connects at all (SSH): TransportError & co."""
        connect = getattr(self.transport, "connect", None)
        if connect is not None:
            connect()

    def prepare(self, tasks: Sequence[Task]) -> dict[str, str | HpcBridgeError]:
        dirs = {t.id: self.work_dir(t) for t in tasks}
        # No mkdir here: the submission script creates .hpcbridge/<attempt> (and so the work
        # dir) in the same round trip as sbatch, and SFTP uploads create their parents. But
        # do connect: an unreachable cluster must fail here, before the write-ahead commit,
        # not in submit() where every attempt would become "outcome unknown".
        self.connect()
        if not any(t.spec.inputs for t in tasks):
            return dict(dirs)
        errors = stage_inputs(self.transport, self.base_dir(), tasks, dirs,
                              timeout=self.cluster.command_timeout)  # fmt: skip
        return {t.id: errors.get(t.id, dirs[t.id]) for t in tasks}

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

    def submit_script(self, reqs: Sequence[tuple[SubmitRequest, str]],
                      arrays: Sequence[slurm.ArrayJob] = ()) -> str:  # fmt: skip
        """The bulk submission script for rendered requests (see ``slurm.render_submit_script``)."""
        jobs = [slurm.BulkJob(r.token, slurm.marker_dir(self.work_dir(r.task), r.attempt), text)
                for r, text in reqs]  # fmt: skip
        return slurm.render_submit_script(jobs, sbatch=slurm.sbatch_argv(bin_dir=self._bin()),
                                          lanes=self.cluster.submit_parallelism, arrays=arrays)  # fmt: skip

    def cluster_limits(self) -> ClusterLimits:
        """The cluster's MaxArraySize, MaxJobCount and the user's tightest MaxSubmitJobs
        (associations and their QOS), read once per backend in one script: ``id -un``, then
        ``scontrol show config`` and the two ``sacctmgr`` queries side by side (sacctmgr asks
        slurmdbd: 0.2-0.3 s each on the lab, most of the read). A part that cannot be read is
        None (unknown, treated as unlimited)."""
        with self._limits_lock:
            return self._limits if self._limits is not None else self._read_limits()

    def _read_limits(self) -> ClusterLimits:  # under _limits_lock
        self.commands += 1
        sep = shlex.quote(_LIMITS_SEP)
        quiet = [shlex.join(slurm.scrub_env(a)) + " 2>/dev/null" for a in (
            limits.scontrol_config_argv(bin_dir=self._bin()),
            limits.assoc_argv("USER", bin_dir=self._bin()),
            limits.qos_argv(bin_dir=self._bin()))]  # fmt: skip
        # The user name is checked on the cluster too before sacctmgr sees it (a name
        # with a ',' or '=' would be read as more conditions).
        assoc = quiet[1].replace("user=USER", '"user=$u"')
        script = "\n".join([
            "u=$(id -un 2>/dev/null); case $u in ''|*[!A-Za-z0-9._-]*|-*) u= ;; esac",
            '__o=$(mktemp -d) || exit 70; trap \'rm -rf "$__o"\' EXIT',
            f'{quiet[0]} > "$__o/1" &',
            f'if [ -n "$u" ]; then {assoc} > "$__o/2"; fi &',
            f'if [ -n "$u" ]; then {quiet[2]} > "$__o/3"; fi &',
            "wait",
            f"printf '%s\\n' {sep} \"$u\"",
            f'for f in 1 2 3; do printf \'%s\\n\' {sep}; cat "$__o/$f" 2>/dev/null; done',
        ]) + "\n"  # fmt: skip
        res = self.transport.run_script(script, what="reading the cluster's limits")
        texts = (res.stdout.split(_LIMITS_SEP + "\n")[1:] + ["", "", "", ""])[:4]
        user = texts[0].strip()
        self._limits = limits.parse_limits(texts[1], texts[2] if user else "", texts[3] if user else "", user)
        log.info("cluster %s: limits %s", self.cluster.name, self._limits)
        return self._limits

    def _read_array_size(self) -> int | None:
        """MaxArraySize alone, from ``scontrol show config`` (None: not readable)."""
        self.commands += 1
        argv = slurm.scrub_env(limits.scontrol_config_argv(bin_dir=self._bin()))
        res = self.transport.run(argv, timeout=self.cluster.command_timeout, what="scontrol show config")
        return limits.parse_limits(res.stdout, "", "", "").max_array_size if res.ok else None

    def remember_limits(self, limits: ClusterLimits) -> None:
        """Limits read earlier (the runtime keeps them on disk for a while)."""
        self._limits = limits

    def max_array_size(self) -> int:
        """Elements per array: config ``max_array_size``, else the cluster's MaxArraySize."""
        if self.cluster.max_array_size is not None:
            return self.cluster.max_array_size
        if self._limits is None and self._limits_lock.locked():
            # Another thread is reading the limits (Runtime.prefetch_limits): its sacctmgr
            # queries take 0.3 s, slurmdbd's replies held up by Nagle and delayed ACKs, but
            # MaxArraySize comes from slurmctld, which answers `scontrol show config` in ~10 ms.
            found = self._read_array_size()
        else:
            found = self.cluster_limits().max_array_size
        if found is None:
            log.warning("cluster %s: could not read MaxArraySize; assuming Slurm's default %d",
                        self.cluster.name, slurm.DEFAULT_MAX_ARRAY_SIZE)  # fmt: skip
        return found or slurm.DEFAULT_MAX_ARRAY_SIZE

    def array_dir(self, token: str) -> str:
        """Where the array with this token keeps its script, bundle, lock and own logs."""
        return posixpath.join(self.base_dir(), ".hpcbridge", "arrays", token)

    def plan(self, requests: Sequence[SubmitRequest]) -> dict[str, Mapping[str, object]]:
        """Which requests go out as which array element (see ``Backend.plan``)."""
        rendered = []
        self._rendered = {}  # kept for the submit() that follows (rendering is most of a plan)
        for req in requests:
            try:
                rendered.append((req, self.render(req)))
            except HpcBridgeError:
                continue  # submit() rejects it alone
            self._rendered[req.token] = rendered[-1][1]
        refs: dict[str, Mapping[str, object]] = {}
        for job, members in self._plan(rendered)[1]:
            for index, req in zip(job.indexes, members, strict=True):
                refs[req.token] = {"array": job.token, "index": index}
        return refs

    def _plan(self, rendered: Sequence[tuple[SubmitRequest, str]]) -> tuple[
            list[tuple[SubmitRequest, str]], list[tuple[slurm.ArrayJob, list[SubmitRequest]]]]:  # fmt: skip
        """Which requests go out as arrays and which alone. A request planned before its
        write-ahead (``backend_ref``: array token and index) goes exactly as planned, the
        array without the requests that were dropped since; the others are planned here:
        same resource request and arrays allowed share an array. Arrays are only worth asking
        MaxArraySize for when two requests could share one."""
        planned: dict[str, list[tuple[int, int]]] = {}  # array token -> [(position, index)]
        keys: list[tuple[object, ...] | None] = []
        for pos, (req, text) in enumerate(rendered):
            if (element := _planned_element(req.backend_ref)) is not None:
                planned.setdefault(element[0], []).append((pos, element[1]))
                keys.append(None)
                continue
            spec = req.task.spec
            keys.append((spec.max_running, *slurm.array_key(text))
                        if self.cluster.arrays and spec.array else None)  # fmt: skip
        groups: list[tuple[str, list[tuple[int, int]]]] = list(planned.items())
        taken = {pos for members in planned.values() for pos, _ in members}
        candidates = [k for k in keys if k is not None]
        if len(set(candidates)) != len(candidates):  # two requests could share an array
            fresh, _ = slurm.plan_arrays(keys, self.max_array_size())
            for positions in fresh:
                # Named after its first element's attempt token: the registry (and
                # scripts/crash-trials) can tell whose array a job is from its comment alone.
                groups.append(("a-" + rendered[positions[0]][0].token, [(p, i) for i, p in enumerate(positions)]))
                taken.update(positions)
        arrays = []
        for token, members in groups:
            first = rendered[members[0][0]]
            job = slurm.ArrayJob(
                token=token, dir=self.array_dir(token),
                header=slurm.array_key(first[1]),
                members=tuple(slurm.ArrayMember(rendered[p][0].token, self.work_dir(rendered[p][0].task),
                                                rendered[p][0].attempt, rendered[p][1], index=i)
                              for p, i in members),
                max_running=first[0].task.spec.max_running)  # fmt: skip
            arrays.append((job, [rendered[p][0] for p, _ in members]))
        return [r for pos, r in enumerate(rendered) if pos not in taken], arrays

    def submit(self, requests: Sequence[SubmitRequest]) -> list[SubmitOutcome]:
        outcomes: dict[str, SubmitOutcome] = {}
        rendered: list[tuple[SubmitRequest, str]] = []
        planned, self._rendered = self._rendered, {}
        for req in requests:
            try:
                rendered.append((req, planned.get(req.token) or self.render(req)))
            except HpcBridgeError as exc:  # bad option values: this task alone is rejected
                outcomes[req.token] = SubmitOutcome(req.token, error=exc)
        singles, arrays = self._plan(rendered)
        # Remote scripts of at most SUBMIT_CHUNK tasks each; an array is never split.
        Chunk = tuple[list[tuple[SubmitRequest, str]], list[tuple[slurm.ArrayJob, list[SubmitRequest]]]]
        chunks: list[Chunk] = [(singles[i : i + SUBMIT_CHUNK], [])
                               for i in range(0, len(singles), SUBMIT_CHUNK)]  # fmt: skip
        for arr in arrays:
            if chunks and _chunk_size(chunks[-1]) + len(arr[1]) <= SUBMIT_CHUNK:
                chunks[-1][1].append(arr)
            else:
                chunks.append(([], [arr]))
        for jobs, arrs in chunks:
            reqs = [r for r, _ in jobs] + [r for _, members in arrs for r in members]
            index = {r.token: i for a, members in arrs for i, r in zip(a.indexes, members, strict=True)}
            try:
                self.commands += 1
                res = self.transport.run_script(self.submit_script(jobs, [a for a, _ in arrs]),
                                                timeout=self.cluster.command_timeout + len(reqs),
                                                what="submitting jobs")  # fmt: skip
            except TransportError as exc:
                # The script may have run in part: every job of the chunk is "unknown".
                for req in reqs:
                    outcomes[req.token] = SubmitOutcome(req.token, error=exc, unknown=True)
                continue
            outcomes.update(self._parse_submit(res.stdout, res.stderr, reqs, index))
        return [outcomes[r.token] for r in requests]

    def _parse_submit(self, stdout: str, stderr: str, reqs: Sequence[SubmitRequest],
                      index: dict[str, int] | None = None) -> dict[str, SubmitOutcome]:  # fmt: skip
        """Outcomes per token; ``index`` gives an array element's index (its job id is the
        array's id with ``_<index>``)."""
        report = slurm.parse_submit_report(stdout)
        index = index or {}
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
                    job_id = slurm.parse_sbatch(text)
                    if req.token in index:
                        job_id = f"{job_id}_{index[req.token]}"
                    out[req.token] = SubmitOutcome(req.token, job_id=job_id)
                except HpcBridgeError as exc:
                    out[req.token] = SubmitOutcome(req.token, error=exc, unknown=True)
                continue
            err_text = report.errors.get(req.token) or text
            if (reason := slurm.submit_limit_reason(err_text)) is not None:
                # Refused outright for the user's submit limit: no job, the task waits.
                out[req.token] = SubmitOutcome(req.token, error=SubmitLimitReached(
                    argv, rc, err_text, reason=reason, what=f"sbatch for task {req.task.id}",
                    hint="the task waits for a submit slot; `sacctmgr show assoc user=$USER` shows the limit"))  # fmt: skip
                continue
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

        by_element = _elements(live)

        def in_squeue(req: PollRequest) -> JobInfo | None:
            if req.job_id:
                return live.get(req.job_id)
            return (by_token.get(req.token) or by_name.get(slurm.job_name(req.task_id, req.attempt))
                    or by_element.get(_element_key(req)))  # fmt: skip

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
            # A planned array element is named after its array (array.py).
            names += sorted({slurm.array_name(e[0]) for r in unknown if (e := _planned_element(r.backend_ref))})
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
        acct_by_element = _elements(acct)
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
                        or acct_by_name.get(slurm.job_name(req.task_id, req.attempt))
                        or acct_by_element.get(_element_key(req)))  # fmt: skip
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
        elements = _elements(merged)
        out: dict[str, JobInfo] = {}
        for req in requests:
            got = marks.get(req.token, {})
            marked = got.get("job_id", "")
            job_id = req.job_id or (marked if _JOB_ID.fullmatch(marked) else None)
            planned = _planned_element(req.backend_ref)
            if job_id is None and planned and (array_job := got.get("array_job_id", "")).isdigit():
                job_id = f"{array_job}_{planned[1]}"  # sbatch's reply was lost, its marker not
            if job_id is None and (element := elements.get(_marked_element(got.get("array", "")))):
                job_id = element.job_id  # no plan on the attempt (an older one): its element's marker
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
        arrays = {r.token: self.array_dir(e[0]) for r in requests if (e := _planned_element(r.backend_ref))}
        res = self.transport.run_script(slurm.render_marker_probe(dirs, arrays), what="reading job markers")
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
        got = self.fetch_outputs_many([task], {task.id: dest})[task.id]
        if isinstance(got, HpcBridgeError):
            raise got
        return got

    def fetch_outputs_many(self, tasks: Sequence[Task], dests: Mapping[str, Path],
                           ) -> dict[str, list[Path] | HpcBridgeError]:  # fmt: skip
        """One remote command for all ``tasks`` (see :mod:`.batch_fetch`)."""
        # expand(): a custom relative work dir is relative to the remote home.
        items = [FetchItem(t.id, posixpath.normpath(self.transport.expand(self.work_dir(t))),
                           t.spec.outputs, Path(dests[t.id])) for t in tasks]  # fmt: skip
        for item in items:
            item.dest.mkdir(parents=True, exist_ok=True)
        if not items:
            return {}
        self.commands += 1
        return fetch_batch(self.transport, items, idle_timeout=self.cluster.command_timeout)

    def read_log(self, task: Task, attempt: int, stream: str, tail: int | None) -> str:
        path = posixpath.join(self.work_dir(task), log_name(attempt, stream))
        try:
            return self.transport.read_text(path, tail_lines=tail)
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.transport.close()


def _chunk_size(chunk: tuple[Sequence[object], Sequence[tuple[object, Sequence[object]]]]) -> int:
    return len(chunk[0]) + sum(len(members) for _, members in chunk[1])


_LIMITS_SEP = "HPCB-LIMITS-PART"

_JOB_ID = re.compile(r"\d+(_\d+)?")


def _marked_element(marker: str) -> tuple[str, str] | None:
    """(array token, index) from an element's ``array`` marker (``<array token> <index>``)."""
    token, _, index = marker.partition(" ")
    return (token, index) if token and index.isdigit() else None


def _planned_element(ref: Mapping[str, object]) -> tuple[str, int] | None:
    """(array token, index) of an attempt planned as an array element (its ``backend_ref``
    from ``plan``)."""
    token, index = ref.get("array"), ref.get("index")
    if isinstance(token, str) and isinstance(index, int) and not isinstance(index, bool):
        return token, index
    return None


def _element_key(req: PollRequest) -> tuple[str, str] | None:
    """The key of ``_elements`` under which a planned attempt's element is found."""
    element = _planned_element(req.backend_ref)
    return (element[0], str(element[1])) if element is not None else None


def _elements(rows: Mapping[str, JobInfo]) -> dict[tuple[str, str] | None, JobInfo]:
    """Array elements among ``rows`` by (their array's comment token, index)."""
    out: dict[tuple[str, str] | None, JobInfo] = {}
    for job_id, row in rows.items():
        base, sep, index = job_id.partition("_")
        token = slurm.token_from_comment(row.comment)
        if sep and index.isdigit() and token:
            out[(token, index)] = row
    return out


def _is_ours(row: JobInfo) -> bool:
    return slurm.token_from_comment(row.comment) is not None

