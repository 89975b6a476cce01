"""Use cases: submit, query, cancel, wait, logs, download. Where registry and backend meet.

The sync cycle (status polling, transitions, retries, fetching) lives in ``sync.py``; this
module holds what a user asks for directly and the submission path shared with sync.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .backends.base import Backend, PollRequest, SubmitRequest
from .config import ClusterConfig, Config, load_config, resolve_db_path
from .errors import (
    ConflictError,
    HpcBridgeError,
    RegistryError,
    TransportError,
    UsageError,
)
from .lifecycle import ACTIVE, WAITING, RetryPolicy, TaskState, parse_retry_on
from .models import Attempt, Event, Resources, Task, TaskSpec, new_task_id, new_token
from .registry import Registry

log = logging.getLogger(__name__)
S = TaskState

SPEC_KEYS = frozenset(
    {
        "command", "script", "cluster", "name", "inputs", "outputs", "metadata", "env",
        "time", "cpus", "mem", "gres", "partition", "account", "qos", "sbatch_options",
        "signal", "max_attempts", "retry_on", "requeue", "exclude_failed_nodes",
    }
)  # fmt: skip


class Service:
    """One registry + config, and the backends opened on demand (one per cluster)."""

    def __init__(self, config: Config, registry: Registry, *, source: str = "api") -> None:
        self.config = config
        self.registry = registry
        self.source = source
        self.data_dir = registry.path.parent
        self._backends: dict[str, Backend] = {}

    @classmethod
    def open(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        *,
        source: str = "api",
    ) -> Service:
        config = load_config(config_path)
        return cls(config, Registry(resolve_db_path(db_path)), source=source)

    def close(self) -> None:
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                log.debug("closing backend failed", exc_info=True)
        self._backends.clear()
        self.registry.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- backends --------------------------------------------------------------------------
    def cluster(self, name: str | None) -> ClusterConfig:
        return self.config.cluster(name)

    def backend(self, cluster: str) -> Backend:
        if cluster not in self._backends:
            cfg = self.config.cluster(cluster)
            if cfg.backend == "local":
                from .backends.local import LocalBackend

                self._backends[cluster] = LocalBackend(self.data_dir / "work")
            else:
                from .backends.slurm import SlurmBackend
                from .transport import make_transport

                self._backends[cluster] = SlurmBackend(cfg, make_transport(cfg))
        return self._backends[cluster]

    # -- building specs --------------------------------------------------------------------
    def build_spec(self, **kw: Any) -> tuple[TaskSpec, dict[str, str]]:
        """Validate ``submit`` keywords into a TaskSpec (+ metadata). Nothing is written."""
        unknown = set(kw) - SPEC_KEYS
        if unknown:
            raise UsageError(f"unknown task option(s) {sorted(unknown)}", hint=f"allowed: {sorted(SPEC_KEYS)}")
        cfg = self.config.cluster(kw.get("cluster"))
        command = kw.get("command")
        if isinstance(command, str):
            raise UsageError(
                "command must be a list of arguments, not a string",
                hint="pass ['python3', 'sim.py', '--n', '10'], or script='...' to use a shell",
            )
        inputs = []
        for item in kw.get("inputs") or ():
            path = Path(item).expanduser()
            if not path.exists():
                raise UsageError(f"input {str(item)!r} does not exist")
            inputs.append(str(path.resolve()))
        policy = cfg.retry
        changes: dict[str, Any] = {}
        if kw.get("max_attempts") is not None:
            changes["max_attempts"] = int(kw["max_attempts"])
        if kw.get("retry_on") is not None:
            changes["retry_on"] = parse_retry_on(kw["retry_on"])
        if kw.get("requeue") is not None:
            changes["slurm_requeue"] = bool(kw["requeue"])
        if kw.get("exclude_failed_nodes") is not None:
            changes["exclude_failed_nodes"] = bool(kw["exclude_failed_nodes"])
        if changes:
            policy = RetryPolicy.from_dict({**policy.to_dict(), **{k: v for k, v in changes.items() if k != "retry_on"}})
            if "retry_on" in changes:
                policy = replace(policy, retry_on=changes["retry_on"])
        resources = Resources(
            time=_opt_str(kw.get("time")),
            cpus=int(kw["cpus"]) if kw.get("cpus") is not None else None,
            mem=_opt_str(kw.get("mem")),
            gres=_opt_str(kw.get("gres")),
            partition=_opt_str(kw.get("partition")),
            account=_opt_str(kw.get("account")),
            qos=_opt_str(kw.get("qos")),
            sbatch_options=tuple(kw.get("sbatch_options") or ()),
            signal=_opt_str(kw.get("signal")),
        )
        if resources.cpus is not None and resources.cpus < 1:
            raise UsageError(f"cpus must be >= 1, got {resources.cpus}")
        spec = TaskSpec(
            command=tuple(command or ()),
            script=kw.get("script"),
            name=str(kw.get("name") or ""),
            cluster=cfg.name,
            inputs=tuple(inputs),
            outputs=tuple(kw.get("outputs") or ()),
            env=dict(kw.get("env") or {}),
            resources=resources,
            retry=policy,
        )
        metadata = dict(kw.get("metadata") or {})
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise UsageError(f"metadata must map str to str, got {key!r}: {value!r}")
        return spec, metadata

    # -- submission ------------------------------------------------------------------------
    def submit(self, **kw: Any) -> Task:
        return self.submit_many([kw])[0]

    def submit_many(self, specs: Sequence[Mapping[str, Any]]) -> list[Task]:
        """Register every task first (all-or-nothing validation), then start them batched per
        cluster: one staging pass and one submission round trip per cluster."""
        built = [self.build_spec(**dict(s)) for s in specs]
        now = time.time()
        for _ in range(3):
            tasks = []
            for spec, metadata in built:
                task_id = new_task_id(now)
                tasks.append(Task(id=task_id, spec=spec, state=S.CREATED, metadata=metadata,
                                  created_at=now, updated_at=now,
                                  output_dir=str(self.data_dir / "outputs" / task_id)))  # fmt: skip
            try:  # one transaction for the whole batch
                self.registry.insert_tasks(tasks, source=self.source, detail="task registered")
                break
            except sqlite3.IntegrityError:  # an id made in the same ms by another process
                log.info("task id collision with another process; drawing new ids")
        else:
            raise RegistryError("could not allocate unique task ids after 3 tries")
        by_cluster: dict[str, list[Task]] = {}
        for task in tasks:
            by_cluster.setdefault(task.cluster, []).append(task)
        for cluster, group in by_cluster.items():
            try:
                self.start_attempts(cluster, group)
            except TransportError as exc:
                for task in group:
                    self.registry.add_event(
                        task.id, "warning",
                        f"cluster {cluster} unreachable ({exc.message}); the next sync submits it",
                        source=self.source,
                    )  # fmt: skip
                if not exc.transient:
                    # Host key or credentials: retrying will not help until the user acts.
                    ids = ", ".join(t.id for t in group)
                    raise type(exc)(
                        f"{exc.message}\n  task(s) {ids} registered but not submitted; "
                        "`hpcbridge sync` submits them once this is fixed",
                        hint=exc.hint,
                    ) from exc
        return [self.registry.get_task(t.id) for t in tasks]

    def start_attempts(self, cluster: str, tasks: Sequence[Task]) -> None:
        """Stage (if needed) and submit a new attempt for each task, write-ahead.

        The attempt row, with its token, is committed before the backend is asked to submit;
        the token rides in the job (comment/markers), so a crash at any point afterwards is
        reconciled by finding the job by token rather than submitting again.
        """
        if not tasks:
            return
        backend = self.backend(cluster)
        # Claim each new task with a compare-and-set: a sync in another process may be
        # starting the same task; whoever moves it first stages it, the other skips it.
        need_stage = [t for t in tasks if t.state == S.STAGING or (
            t.state == S.CREATED
            and self._try_transition(t.id, S.CREATED, S.STAGING, "staging inputs"))]  # fmt: skip
        staged: dict[str, str] = {}
        if need_stage:
            try:
                results = backend.prepare([t for t in need_stage])
            except TransportError:
                for t in need_stage:
                    # next_attempt_at marks it as handed over: sync may start it right away.
                    self._try_transition(t.id, S.STAGING, S.CREATED, "staging interrupted: cluster unreachable",
                                         fields={"next_attempt_at": time.time()})  # fmt: skip
                raise
            for t in need_stage:
                res = results.get(t.id)
                if isinstance(res, str):
                    staged[t.id] = res
                elif res is not None and res.transient:
                    self._try_transition(t.id, S.STAGING, S.CREATED, f"staging failed, will retry: {res}",
                                         fields={"next_attempt_at": time.time()})  # fmt: skip
                else:
                    self._try_transition(t.id, S.STAGING, S.FAILED, f"staging failed: {res}",
                                         fields={"reason": f"staging failed: {res}", "ended_at": time.time()})  # fmt: skip
        # Charge the scheduler budget before the write-ahead commit: a budget wait after it
        # would eat into the submit grace period that sync gives an unfinished submission.
        self.charge(cluster, 1)
        requests: list[SubmitRequest] = []
        now = time.time()
        for t in tasks:
            current = S.STAGING if t.state in (S.CREATED, S.STAGING) else t.state
            if current == S.STAGING and t.id not in staged:
                continue  # not ours to stage, or staging failed
            if current not in (S.STAGING, *WAITING):
                continue
            number = t.attempt_count + 1
            token = new_token()
            fields: dict[str, Any] = {"attempt_count": number, "next_attempt_at": None}
            if t.id in staged:
                fields["work_dir"] = staged[t.id]
            try:
                with self.registry.transaction() as conn:
                    # State first: the compare-and-set decides who submits this attempt, and a
                    # loser rolls back before writing an attempt row.
                    self.registry.transition(
                        t.id, current, S.SUBMITTING, source=self.source, attempt=number,
                        detail=f"attempt {number}: submitting (token {token})", fields=fields, conn=conn,
                    )  # fmt: skip
                    self.registry.add_attempt(
                        Attempt(task_id=t.id, number=number, token=token, state=S.SUBMITTING, created_at=now),
                        conn,
                    )  # fmt: skip
            except (ConflictError, sqlite3.IntegrityError) as exc:
                log.info("task %s: not submitted, changed meanwhile: %s", t.id, exc)
                continue
            task = self.registry.get_task(t.id)
            requests.append(SubmitRequest(task=task, attempt=number, token=token,
                                          exclude_nodes=task.excluded_nodes))  # fmt: skip
        if not requests:
            return
        outcomes = backend.submit(requests)
        by_token = {o.token: o for o in outcomes}
        for req in requests:
            out = by_token.get(req.token)
            self._record_submit(req, out)

    def _record_submit(self, req: SubmitRequest, out: Any) -> None:
        tid, n = req.task.id, req.attempt
        now = time.time()
        if out is not None and out.job_id:
            with self.registry.transaction() as conn:
                self.registry.update_attempt(
                    tid, n, {"job_id": out.job_id, "submitted_at": now, "last_seen_at": now,
                             "backend_ref": out.backend_ref, "state": S.QUEUED}, conn,
                )  # fmt: skip
                task = self.registry.get_task(tid)
                fields = {} if task.submitted_at else {"submitted_at": now}
                if task.state == S.SUBMITTING:
                    self.registry.transition(
                        tid, S.SUBMITTING, S.QUEUED, source=self.source, attempt=n,
                        detail=f"attempt {n}: job {out.job_id} submitted", fields=fields, conn=conn,
                    )  # fmt: skip
            log.info("task %s attempt %s: submitted as job %s", tid, n, out.job_id)
            return
        error = out.error if out is not None else None
        if out is None or out.unknown or (error is not None and error.transient):
            self.registry.add_event(
                tid, "warning",
                f"attempt {n}: submission outcome unknown ({error}); the next sync looks for the job by token",
                source=self.source, attempt=n,
            )  # fmt: skip
            return
        reason = f"submission rejected: {error}"
        with self.registry.transaction() as conn:
            self.registry.update_attempt(tid, n, {"state": S.FAILED, "reason": reason, "ended_at": now}, conn)
            self._try_transition(tid, S.SUBMITTING, S.FAILED, reason, attempt=n, conn=conn,
                                 fields={"reason": reason, "ended_at": now})  # fmt: skip

    def _try_transition(
        self, task_id: str, old: TaskState, new: TaskState, detail: str, *,
        attempt: int | None = None, fields: Mapping[str, Any] | None = None, conn: Any = None,
    ) -> bool:  # fmt: skip
        try:
            self.registry.transition(task_id, old, new, source=self.source, detail=detail,
                                     attempt=attempt, fields=fields, conn=conn)  # fmt: skip
            return True
        except ConflictError as exc:
            log.info("task %s: %s", task_id, exc)
            return False

    def charge(self, cluster: str, commands: int) -> None:
        """Take scheduler-command tokens from the cluster's shared budget, sleeping if needed."""
        cfg = self.config.cluster(cluster)
        if cfg.backend == "local":
            return
        wait = self.registry.take_budget(
            cluster, commands, rate_per_minute=cfg.commands_per_minute,
            burst=max(10.0, cfg.commands_per_minute / 6),
        )  # fmt: skip
        if wait > 0:
            log.info("cluster %s: scheduler command budget spent, waiting %.1f s", cluster, wait)
            time.sleep(min(wait, 60.0))

    # -- queries ---------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        return self.registry.get_task(self.registry.resolve_id(task_id))

    def resolve(self, task_id: str) -> str:
        return self.registry.resolve_id(task_id)

    def list_tasks(self, *, states: Iterable[TaskState] | None = None, cluster: str | None = None,
             limit: int | None = None) -> list[Task]:  # fmt: skip
        return self.registry.list_tasks(states=states, cluster=cluster, limit=limit)

    def events(self, task_id: str) -> list[Event]:
        return self.registry.events(self.resolve(task_id))

    def attempts(self, task_id: str) -> list[Attempt]:
        return self.registry.attempts(self.resolve(task_id))

    def set_metadata(self, task_id: str, updates: Mapping[str, str | None]) -> dict[str, str]:
        for key, value in updates.items():
            if not isinstance(key, str) or not key or (value is not None and not isinstance(value, str)):
                raise UsageError(f"metadata must map non-empty str to str, got {key!r}: {value!r}")
        return self.registry.update_metadata(self.resolve(task_id), updates)

    # -- cancel ----------------------------------------------------------------------------
    def kill(self, task_ids: Sequence[str]) -> list[Task]:
        """Cancel tasks. One without a job ends ``cancelled`` at once; one with a job is marked
        and its job cancelled; it becomes ``cancelled`` when the scheduler confirms (sync)."""
        ids = [self.resolve(t) for t in task_ids]
        by_cluster: dict[str, list[PollRequest]] = {}
        for tid in ids:
            task = self.registry.get_task(tid)
            if task.state.terminal:
                continue
            if task.state in (S.CREATED, S.STAGING, *WAITING, S.FETCHING):
                self._try_transition(tid, task.state, S.CANCELLED, "cancelled by user",
                                     fields={"reason": "cancelled by user", "ended_at": time.time(),
                                             "cancel_requested": True})  # fmt: skip
                continue
            self.registry.update_task(tid, {"cancel_requested": True})
            self.registry.add_event(tid, "info", "cancel requested", source=self.source)
            att = self.registry.current_attempts([tid]).get(tid)
            if att is not None and (att.job_id or att.backend_ref):
                by_cluster.setdefault(task.cluster, []).append(self.poll_request(task, att))
        for cluster, reqs in by_cluster.items():
            try:
                self.charge(cluster, 1)
                self.backend(cluster).cancel(reqs)
            except TransportError as exc:
                for r in reqs:
                    self.registry.add_event(r.task_id, "warning",
                                            f"cancel not delivered ({exc.message}); sync retries it",
                                            source=self.source)  # fmt: skip
        from .sync import sync_cluster

        for cluster in by_cluster:
            sync_cluster(self, cluster)
        return [self.registry.get_task(t) for t in ids]

    @staticmethod
    def poll_request(task: Task, att: Attempt) -> PollRequest:
        return PollRequest(task_id=task.id, attempt=att.number, token=att.token, job_id=att.job_id,
                           work_dir=task.work_dir, backend_ref=att.backend_ref)  # fmt: skip

    # -- wait --------------------------------------------------------------------------------
    def wait(self, task_ids: Sequence[str], *, timeout: float | None = None,
             on_progress: Any = None, interval: float | None = None) -> list[Task]:  # fmt: skip
        """Block until every task is terminal (driving sync meanwhile); return them.

        Raises TimeoutError when ``timeout`` passes first (tasks keep running)."""
        from .sync import sync_cluster

        ids = [self.resolve(t) for t in task_ids]
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.1
        while True:
            tasks = [self.registry.get_task(t) for t in ids]
            if on_progress is not None:
                on_progress(tasks)
            pending = [t for t in tasks if not t.state.terminal]
            if not pending:
                return tasks
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(pending)} of {len(ids)} task(s) not finished after {timeout} s "
                    f"(e.g. {pending[0].id} is {pending[0].state.value})"
                )
            for cluster in sorted({t.cluster for t in pending}):
                try:
                    sync_cluster(self, cluster)
                except HpcBridgeError as exc:
                    if not exc.transient:
                        raise
                    log.warning("cluster %s: %s", cluster, exc.message)
            remote = any(self.config.cluster(t.cluster).backend != "local" for t in pending)
            cap = interval if interval is not None else (3.0 if remote else 1.0)
            sleep = min(delay, cap)
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

    def fetch(self, task: Task) -> list[Path]:
        dest = Path(task.output_dir or self.data_dir / "outputs" / task.id)
        dest.mkdir(parents=True, exist_ok=True)
        return self.backend(task.cluster).fetch_outputs(task, dest)

    def download(self, task_id: str, dest: str | os.PathLike[str] | None = None) -> list[Path]:
        """Copy the task's outputs into ``dest`` (default: ./<task id>). Outputs fetched at
        success are copied from the local store; otherwise they are fetched now."""
        task = self.get(task_id)
        target = Path(dest) if dest is not None else Path.cwd() / task.id
        store = Path(task.output_dir or self.data_dir / "outputs" / task.id)
        if task.fetched_at is None or not store.exists():
            if task.work_dir is None:
                raise UsageError(f"task {task.id} has no outputs yet (state {task.state.value})")
            self.fetch(task)
        copied = []
        for src in sorted(p for p in store.rglob("*") if p.is_file()):
            rel = src.relative_to(store)
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
            copied.append(out)
        return copied

    def active_clusters(self) -> list[str]:
        return self.registry.clusters_with_active_tasks(ACTIVE)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)

