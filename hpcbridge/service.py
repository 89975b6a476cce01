"""Use cases: what the CLI, the daemon and the Python API ask for, each one call.

``Service`` sits on top of the layers: ``runtime`` (config, registry, backends, budget),
``submission`` (write-ahead attempts under a lease) and ``cycle`` (one sync cycle per
cluster). It validates what users give it (``SubmitOptions``) and assembles what they read
(``info``), so entry points only format.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import listing
from .config import ClusterConfig, Config
from .deps import format_after, parse_after
from .errors import HpcBridgeError, TaskNotFound, TransportError, UsageError, WaitTimeout
from .lifecycle import ACTIVE, IN_FLIGHT, WAITING, TaskState
from .models import Attempt, Event, Task
from .paths import check_work_path, in_meta_dir, is_log_path
from .registry import Registry
from .runtime import Runtime

# The sync cycle, submission, option checks, reports and monitoring are imported where they
# are used: a command that only reads the registry (`tasks list`) starts without them.
if TYPE_CHECKING:
    from .backends.base import Backend, PollRequest
    from .cycle import SyncReport
    from .notify import DeliveryReport
    from .options import SubmitOptions
    from .outbox import OutboxEntry

log = logging.getLogger(__name__)
S = TaskState

def _mem_bytes(mem: str | None) -> int | None:
    """``--mem`` as the user gave it (``500M``, ``4G``; a bare number is MiB, as sbatch reads it)."""
    if not mem:
        return None
    from .slurm.usage import parse_size

    try:
        return parse_size(mem, unit="M")
    except ValueError:
        return None


# How often kill re-reads a task that a concurrent sync moved under it.
KILL_RETRIES = 5


@dataclass(frozen=True)
class KillResult:
    """What ``kill`` did to one task."""

    task: Task
    recorded: bool  # the cancel (or the end) is in the registry
    note: str = ""


class Service:
    """The use cases over one runtime. Not shared between threads (the API keeps one per
    thread); cheap to open."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @classmethod
    def open(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        *,
        source: str = "api",
        backends: Mapping[str, Backend] | None = None,
    ) -> Service:
        return cls(Runtime.open(config_path, db_path, source=source, backends=backends))

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def data_dir(self) -> Path:
        return self.runtime.data_dir

    def cluster(self, name: str | None) -> ClusterConfig:
        return self.runtime.cluster(name)

    def backend(self, cluster: str) -> Backend:
        return self.runtime.backend(cluster)

    @staticmethod
    def poll_request(task: Task, att: Attempt) -> PollRequest:
        return Runtime.poll_request(task, att)

    # -- submission ------------------------------------------------------------------------
    def submit(self, **options: Any) -> Task:
        """Submit one task; ``options`` are SubmitOptions' fields."""
        return self.submit_many([options])[0]

    def submit_many(self, specs: Sequence[Mapping[str, Any] | SubmitOptions], *,
                    where: str = "task") -> list[Task]:  # fmt: skip
        """Validate every spec (all or nothing), register them, submit them batched."""
        named = (s.get("cluster") if isinstance(s, Mapping) else getattr(s, "cluster", None) for s in specs)
        for cluster in dict.fromkeys(c for c in named if c is None or isinstance(c, str)):
            self.runtime.prefetch_limits(cluster)  # read while the specs are validated
        from .options import SubmitOptions
        from .submission import submit_many

        opts = [s if isinstance(s, SubmitOptions) else
                SubmitOptions.from_mapping(s, where=f"{where} {i + 1}" if len(specs) > 1 else "")
                for i, s in enumerate(specs)]  # fmt: skip
        return submit_many(self.runtime, [self._resolve_after(o) for o in opts])

    def _resolve_after(self, opts: SubmitOptions) -> SubmitOptions:
        """Parents named by prefix or ``last`` become full ids; an unknown parent is an error
        before anything is registered."""
        if not opts.after:
            return opts
        full = []
        for item in opts.after:
            tid, cond = parse_after(item)
            try:
                full.append(format_after(self.resolve(tid), cond))
            except TaskNotFound as exc:
                raise UsageError(f"--after {item}: {exc.message}", hint=exc.hint) from None
        return dataclasses.replace(opts, after=tuple(full))

    # -- queries ---------------------------------------------------------------------------
    def resolve(self, task_id: str) -> str:
        """A full task id from a full id, a unique prefix, or ``last``: the newest task by
        creation (ids sort by creation time, and ``l`` is no digit of an id, so ``last`` can
        never be a prefix). Every use case that takes an id goes through here."""
        if task_id.strip() == "last":
            newest = self.registry.list_tasks(limit=1)
            if not newest:
                raise TaskNotFound("there are no tasks yet, so no 'last' task",
                                   hint="submit one with `hpcbridge submit`")  # fmt: skip
            return newest[0].id
        return self.registry.resolve_id(task_id)

    def get(self, task_id: str) -> Task:
        return self.registry.get_task(self.resolve(task_id))

    def list_tasks(self, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
                   limit: int | None = None) -> list[Task]:  # fmt: skip
        return self.registry.list_tasks(states=states, cluster=cluster, limit=limit)

    def events(self, task_id: str) -> list[Event]:
        return self.registry.events(self.resolve(task_id))

    def attempts(self, task_id: str) -> list[Attempt]:
        return self.registry.attempts(self.resolve(task_id))

    def info(self, task_id: str, *, lines: int = 10) -> dict[str, Any]:
        """Everything known about one task, as plain data (what ``tasks info`` shows);
        ``lines``: how many log lines its ``failure`` section keeps."""
        from .report import task_info
        from .slurm.usage import Thresholds

        task = self.get(task_id)
        thresholds = None
        if task.cluster in self.config.clusters:  # a task whose cluster left the config still shows
            c = self.config.clusters[task.cluster]
            thresholds = Thresholds(min_cpu_efficiency=c.warn_cpu_efficiency_below,
                                    min_mem_efficiency=c.warn_memory_efficiency_below,
                                    max_mem_efficiency=c.warn_memory_peak_above)  # fmt: skip
        return task_info(task, self.registry.attempts(task.id), self.registry.events(task.id),
                         lines=lines, thresholds=thresholds)  # fmt: skip

    def usage_of(self, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The recorded usage of each task's current attempt (one query), by task id."""
        return listing.usage_of(self.registry, task_ids)

    def queue_of(self, task_ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Why each task's current attempt waits, as the last sync saw it, by task id."""
        return {tid: att.queue for tid, att in self.registry.current_attempts(list(task_ids)).items()
                if att.queue}  # fmt: skip

    def set_metadata(self, task_id: str, updates: Mapping[str, str | None]) -> dict[str, str]:
        for key, value in updates.items():
            if not isinstance(key, str) or not key or (value is not None and not isinstance(value, str)):
                raise UsageError(f"metadata must map non-empty str to str, got {key!r}: {value!r}")
        return self.registry.update_metadata(self.resolve(task_id), updates)

    def active_clusters(self) -> list[str]:
        return self.registry.clusters_with_active_tasks(ACTIVE)

    # -- sync ------------------------------------------------------------------------------
    def sync(self, clusters: Sequence[str] | None = None) -> list[SyncReport]:
        """One cycle per cluster (default: every cluster with active tasks)."""
        from .cycle import sync_all

        return sync_all(self.runtime, clusters)

    def sync_cluster(self, cluster: str) -> SyncReport:
        from .cycle import sync_cluster

        return sync_cluster(self.runtime, cluster)

    # -- notifications ---------------------------------------------------------------------
    def outbox(self, *, pending: bool = False, task_id: str | None = None, limit: int = 200,
               everything: bool = False) -> list[OutboxEntry]:  # fmt: skip
        """The newest outbox events a rule wanted (all with ``everything``; only those not
        delivered yet with ``pending``)."""
        from .outbox import entries

        return entries(self.registry, pending=pending, task_id=self.resolve(task_id) if task_id else None,
                       limit=limit, everything=everything)  # fmt: skip

    def deliver(self) -> DeliveryReport:
        """Deliver the due outbox events now (every sync does this after its cycle)."""
        from .notify import deliver

        return deliver(self.runtime)

    def test_notify(self, rule: str) -> list[tuple[str, str | None]]:
        """Send a test message through each target of a ``[[notify]]`` rule."""
        from .notify import send_test

        return send_test(self.runtime, rule)

    # -- cancel ----------------------------------------------------------------------------
    def kill(self, task_ids: Sequence[str]) -> list[KillResult]:
        """Cancel tasks. One without a job ends ``cancelled`` at once; one whose job exists
        (or may exist) is marked and its job cancelled; it becomes ``cancelled`` when the
        scheduler confirms (sync). A sync that moves the task meanwhile is retried on."""
        ids = [self.resolve(t) for t in task_ids]
        results: dict[str, KillResult] = {}
        by_cluster: dict[str, list[PollRequest]] = {}
        for tid in ids:
            results[tid] = self._mark_cancel(tid, by_cluster)
        for cluster, reqs in by_cluster.items():
            try:
                self.runtime.charge(cluster, 1)
                self.backend(cluster).cancel(reqs)
            except TransportError as exc:
                for r in reqs:
                    self.registry.add_event(r.task_id, "warning",
                                            f"cancel not delivered ({exc.message}); sync retries it",
                                            source=self.runtime.source)  # fmt: skip
        for cluster in by_cluster:
            try:
                self.sync_cluster(cluster)
            except HpcBridgeError as exc:
                log.warning("cluster %s: %s", cluster, exc.message)
        return [KillResult(self.registry.get_task(t), results[t].recorded, results[t].note) for t in ids]

    def _mark_cancel(self, tid: str, by_cluster: dict[str, list[PollRequest]]) -> KillResult:
        rt = self.runtime
        for _ in range(KILL_RETRIES):
            task = self.registry.get_task(tid)
            if task.state.terminal:
                return KillResult(task, recorded=False, note=f"already {task.state.value}")
            if task.state in (S.CREATED, S.STAGING, *WAITING, S.FETCHING):
                if rt.try_transition(tid, task.state, S.CANCELLED, "cancelled by user",
                                     fields={"reason": "cancelled by user", "ended_at": time.time(),
                                             "cancel_requested": True}):  # fmt: skip
                    return KillResult(self.registry.get_task(tid), recorded=True)
                continue  # moved meanwhile: look again
            # A job exists or may exist: mark it; the sync cancels the job, or ends the task
            # once it knows no job was made.
            try:
                self.registry.update_task(tid, {"cancel_requested": True}, expected=task.state)
            except HpcBridgeError:
                continue
            self.registry.add_event(tid, "info", "cancel requested", source=rt.source)
            att = self.registry.current_attempts([tid]).get(tid)
            if task.state in IN_FLIGHT and att is not None and (att.job_id or att.backend_ref):
                by_cluster.setdefault(task.cluster, []).append(rt.poll_request(task, att))
            return KillResult(task, recorded=True, note="cancel requested")
        return KillResult(self.registry.get_task(tid), recorded=False,
                          note="the task kept changing; try again")  # fmt: skip

    # -- wait ------------------------------------------------------------------------------
    def wait(self, task_ids: Sequence[str], *, timeout: float | None = None,
             on_progress: Callable[[list[Task]], None] | None = None,
             interval: float | None = None) -> list[Task]:  # fmt: skip
        """Block until every task is terminal (driving sync meanwhile); return them.

        Raises WaitTimeout (a TimeoutError) when ``timeout`` passes first; tasks keep running."""
        ids = [self.resolve(t) for t in task_ids]
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.1
        tasks = self.registry.get_tasks(ids)
        while True:
            if on_progress is not None:
                on_progress(tasks)
            pending = [t for t in tasks if not t.state.terminal]
            if not pending:
                return tasks
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"wait timeout: {len(pending)} of {len(ids)} task(s) not finished after {timeout} s "
                    f"(e.g. {pending[0].id} is {pending[0].state.value})",
                    hint="the tasks keep running; wait again later or check `hpcbridge tasks info`",
                )
            started = time.monotonic()
            for cluster in sorted({t.cluster for t in pending}):
                try:
                    self.sync_cluster(cluster)
                except HpcBridgeError as exc:
                    if not exc.transient:
                        raise
                    log.warning("cluster %s: %s", cluster, exc.message)
            tasks = self.registry.refresh(tasks)
            if all(t.state.terminal for t in tasks):
                continue  # the cycle that ended them: no sleep before saying so
            remote = any(self.cluster(t.cluster).backend != "local" for t in pending)
            cap = interval if interval is not None else (3.0 if remote else 1.0)
            # One cycle every ``cap`` seconds, its own duration included (the command budget
            # still bounds what a cycle may run).
            sleep = max(0.0, min(delay, cap) - (time.monotonic() - started))
            if deadline is not None:
                sleep = max(0.0, min(sleep, deadline - time.monotonic()))
            time.sleep(sleep)
            delay = min(delay * 1.5, cap)

    # -- logs and outputs ------------------------------------------------------------------
    def logs(self, task_id: str, *, stream: str = "stdout", tail: int | None = None,
             attempt: int | None = None) -> str:  # fmt: skip
        task = self.get(task_id)
        n = attempt or task.attempt_count
        if n < 1 or task.work_dir is None:
            return ""
        return self.backend(task.cluster).read_log(task, n, stream, tail)

    def follow_logs(self, task_id: str, *, stream: str = "stdout", tail: int | None = None,
                    attempt: int | None = None) -> Iterator[str]:  # fmt: skip
        """Yield the log's text, then whatever is appended, until the task ends (each line
        exactly once; a new attempt or a truncated file starts over)."""
        task = self.get(task_id)
        seen = self.logs(task.id, stream=stream, attempt=attempt)
        if tail is None:
            yield seen
        elif tail:
            yield "".join(seen.splitlines(keepends=True)[-tail:])
        while True:
            done = self.get(task.id).state.terminal
            if not done:
                time.sleep(1.0 if self.cluster(task.cluster).backend == "local" else 3.0)
                self.sync_cluster(task.cluster)
            now = self.logs(task.id, stream=stream, attempt=attempt)
            yield now[len(seen):] if now.startswith(seen) else now
            seen = now
            if done:
                return

    def top(self, task_id: str) -> dict[str, Any]:
        """What a running task uses now, sampled from the scheduler (one command, through the
        budget): ``rss_bytes``, ``max_rss_bytes``, ``cpu_seconds``, ``cpu_percent`` (since
        it started, of its CPUs), disk I/O, ``sampled_at``; ``note`` says why a figure is
        missing (not running, no accounting gathered, a backend without monitoring)."""
        from .backends.slurm_monitor import MonitoringBackend

        task = self.get(task_id)
        out: dict[str, Any] = {"id": task.id, "state": task.state.value, "alloc_cpus": task.spec.resources.cpus or 1,
                               "alloc_mem_bytes": _mem_bytes(task.spec.resources.mem)}  # fmt: skip
        att = self.registry.current_attempts([task.id]).get(task.id)
        backend = self.backend(task.cluster)
        if task.state != S.RUNNING or att is None or not att.job_id:
            return {**out, "note": f"the task is {task.state.value}, not running"}
        if not isinstance(backend, MonitoringBackend):
            return {**out, "note": f"cluster {task.cluster} has no live usage (local backend)"}
        self.runtime.charge(task.cluster, 1)
        live = backend.live_usage([self.poll_request(task, att)]).get(att.token)
        if live is None:
            return {**out, "note": "no running step reported yet (the job may be starting or ending)"}
        out.update(live)
        if live.get("gathered") is False:
            out["note"] = "the site's accounting gathers nothing (jobacct_gather/none): no figures"
        started = att.started_at or task.started_at
        if live.get("cpu_seconds") is not None and started:
            elapsed = max(1e-9, live.get("sampled_at", time.time()) - started)
            out["cpu_percent"] = 100.0 * live["cpu_seconds"] / (elapsed * out["alloc_cpus"])
        return out

    def download(self, task_id: str, dest: str | os.PathLike[str] | None = None) -> list[Path]:
        """Copy the task's outputs into ``dest`` (default: ./<task id>). Outputs fetched at
        success are copied from the local store; otherwise they are fetched now."""
        task = self.get(task_id)
        target = Path(dest) if dest is not None else Path.cwd() / task.id
        store = Path(task.output_dir or self.data_dir / "outputs" / task.id)
        if task.fetched_at is None or not store.exists():
            if task.work_dir is None:
                raise UsageError(f"task {task.id} has no outputs yet (state {task.state.value})")
            store.mkdir(parents=True, exist_ok=True)
            self.backend(task.cluster).fetch_outputs(task, store)
        import shutil

        copied = []
        for src in sorted(p for p in store.rglob("*") if p.is_file()):
            out = target / src.relative_to(store)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
            copied.append(out)
        return copied

    # -- the work dir, live ----------------------------------------------------------------
    def _staged(self, task_id: str) -> Task:
        task = self.get(task_id)
        if task.work_dir is None:
            raise UsageError(f"task {task.id} has no work dir yet (state {task.state.value})",
                             hint="its files appear once it is staged; try again in a moment")  # fmt: skip
        return task

    def files(self, task_id: str) -> dict[str, Any]:
        """Every file under the task's work dir (one round trip), as plain data:
        ``{"work_dir", "files": [{"path", "size", "mtime", "meta"}], "newest": {"path",
        "age_seconds"} | None}``. ``meta`` marks hpcbridge's own ``.hpcbridge/`` dir;
        ``newest`` is the most recently modified file the task wrote, its stdout/stderr logs
        included, hpcbridge's markers not (as Inductiva's last-modified-file). Ages are
        measured with this machine's clock against the cluster's mtimes."""
        task = self._staged(task_id)
        listing = self.backend(task.cluster).list_work_dir(task)
        now = time.time()
        progress = [f for f in listing if not in_meta_dir(f.path) or is_log_path(f.path)]
        newest = max(progress, key=lambda f: (f.mtime, f.path), default=None)
        return {
            "work_dir": task.work_dir,
            "files": [{"path": f.path, "size": f.size, "mtime": f.mtime, "meta": in_meta_dir(f.path)}
                      for f in listing],  # fmt: skip
            "newest": None if newest is None else
                      {"path": newest.path, "age_seconds": round(max(0.0, now - newest.mtime), 1)},  # fmt: skip
        }

    def tail(self, task_id: str, path: str, lines: int | None = 10) -> str:
        """The last ``lines`` lines (None: all) of the file ``path`` under the task's work
        dir, read where it is (one round trip). UsageError for a path outside the work dir
        (absolute, ``..``, or a symlink leaving it: checked where the file is read),
        RemoteFileNotFound when there is no such file."""
        rel = check_work_path(path)
        task = self._staged(task_id)
        return self.backend(task.cluster).read_work_file(task, rel, lines)

    def follow_file(self, task_id: str, path: str, lines: int | None = 10, *,
                    interval: float | None = None) -> Iterator[str]:  # fmt: skip
        """Yield the last ``lines`` lines (None: all) of ``path`` under the task's work dir,
        then whatever is appended, until the task ends; drives sync meanwhile.

        Each line is yielded exactly once: while the task runs only complete lines are
        yielded (a line still being written waits for its newline); what is left without one
        comes when the task has ended. A file that is truncated or replaced (its text no
        longer starts with what was yielded) starts over from its first line. A file that
        does not exist yet is waited for; one that never appeared raises RemoteFileNotFound
        once the task has ended. Each round re-reads the whole file (one round trip every
        ``interval`` seconds, default 1 locally and 3 on a cluster)."""
        rel = check_work_path(path)
        task = self.get(task_id)
        pause = interval if interval is not None else (
            1.0 if self.cluster(task.cluster).backend == "local" else 3.0)  # fmt: skip
        seen = ""  # what was yielded; ends at a line end while the task runs
        first = True
        missing: FileNotFoundError | None = None
        while True:
            task = self.get(task.id)
            done = task.state.terminal
            text: str | None = None
            if task.work_dir is not None:
                try:
                    text = self.backend(task.cluster).read_work_file(task, rel, None)
                    missing = None
                except FileNotFoundError as exc:
                    missing = exc
                except TransportError as exc:
                    if done or not exc.transient:
                        raise
                    log.warning("task %s: reading %s: %s; trying again", task.id, rel, exc.message)
            if text is not None:
                if not text.startswith(seen):
                    seen = ""  # truncated or replaced: start over
                new = text[len(seen):]
                if not done:
                    new = new[: new.rfind("\n") + 1]
                shown = new if not first or lines is None else (
                    "".join(new.splitlines(keepends=True)[-lines:]) if lines else "")  # fmt: skip
                if shown:
                    yield shown
                seen += new
            first = False
            if done:
                if text is None and missing is not None:
                    raise missing
                return
            time.sleep(pause)
            try:
                self.sync_cluster(task.cluster)
            except HpcBridgeError as exc:
                if not exc.transient:
                    raise
                log.warning("cluster %s: %s", task.cluster, exc.message)
