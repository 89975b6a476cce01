"""The bottom of the stateful layers: config + registry + backends + the command budget.

Everything above (``submission``, ``cycle``, ``service``) works through one ``Runtime``.
Backends are opened on demand, one per cluster, unless the caller injects them
(``Runtime(config, registry, backends={"lab": FakeBackend()})``, as httpx's
``Client(transport=...)``): that is the seam tests and embedding applications use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ClusterConfig, Config, load_config, resolve_db_path
from .errors import ConflictError, HpcBridgeError, TransportError
from .lazylog import get_logger
from .lifecycle import TaskState
from .models import Attempt, Task
from .registry import Registry

# How long limits read from a cluster (sacctmgr, scontrol show config) are trusted.
LIMITS_TTL_SECONDS = 3600.0
# How long prefetch_limits waits for the connection before the caller goes on anyway.
CONNECT_HEAD_START = 0.25

if TYPE_CHECKING:  # backends are opened (and their module imported) on first use, and the
    # slurm package (most of the import time of a command that only reads) with them
    from .backends.base import Backend, PollRequest
    from .slurm.limits import ClusterLimits

log = get_logger(__name__)

# The budget never sleeps longer than this at once; the caller asks again.
MAX_BUDGET_SLEEP = 60.0


class Runtime:
    """One registry + config, and the backends (one per cluster). Not shared by threads
    (a limits read of its own aside, ``prefetch_limits``: it uses a backend, never the
    registry)."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        *,
        backends: Mapping[str, Backend] | None = None,
        source: str = "api",
    ) -> None:
        self.config = config
        self.registry = registry
        self.source = source
        self.data_dir = registry.path.parent
        self._backends: dict[str, Backend] = dict(backends or {})
        self._injected = frozenset(self._backends)
        # Set by a daemon's signal handler: budget waits end early so shutdown is prompt.
        self.stop = threading.Event()
        self._limit_reads: dict[str, _LimitsRead] = {}

    @classmethod
    def open(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        *,
        source: str = "api",
        backends: Mapping[str, Backend] | None = None,
    ) -> Runtime:
        config = load_config(config_path)
        return cls(config, Registry(resolve_db_path(db_path)), backends=backends, source=source)

    def close(self) -> None:
        # A limits read still under way closes its backend when it ends: closing now would
        # wait for it (a connect to a host that is down takes connect_timeout per attempt)
        # after, say, a submission that failed validation while it ran.
        reading = {name for name, read in self._limit_reads.items()
                   if name not in self._injected and read.close_when_done(self._backends[name].close)}  # fmt: skip
        self._limit_reads.clear()
        for name, backend in self._backends.items():
            if name in self._injected or name in reading:
                continue  # the caller's to close, or the read's
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                log.debug("closing backend %s failed", name, exc_info=True)
        self._backends = {k: v for k, v in self._backends.items() if k in self._injected}
        self.registry.close()

    @property
    def lease_dir(self) -> Path:
        return self.data_dir / "leases"

    def cluster(self, name: str | None) -> ClusterConfig:
        return self.config.cluster(name)

    def cluster_limits(self, cluster: str) -> ClusterLimits | None:
        """The cluster's limits (MaxArraySize, the user's MaxSubmitJobs), from the backend,
        kept in ``<data dir>/limits/`` for LIMITS_TTL_SECONDS so that not every submitting
        process asks sacctmgr again. None when the backend has none or they cannot be read.
        Waits for a read ``prefetch_limits`` started."""
        pending = self._limit_reads.pop(cluster, None)
        if pending is not None:
            return pending.result()
        return self._read_limits(cluster)

    def prefetch_limits(self, cluster: str | None) -> None:
        """Start reading ``cluster``'s limits (None: the default cluster's) in a thread of
        their own, unless they are kept on disk already: the read is two sacctmgr queries
        (0.3-0.4 s, most of a first submission of 1,000 tasks), which then overlaps
        validating, registering, claiming and rendering them. ``cluster_limits`` waits for
        it. Never raises: the use reports what fails."""
        try:
            cfg = self.config.cluster(cluster)
            if cfg.name in self._limit_reads or (cfg.max_submit_jobs is not None and cfg.max_array_size is not None):
                return  # under way, or both limits configured: nothing to read
            cluster = cfg.name
            backend = self.backend(cluster)  # opened here: only this thread opens backends
        except HpcBridgeError:
            return
        if getattr(backend, "cluster_limits", None) is None or self._kept_limits(cluster, backend) is not None:
            return
        self._limit_reads[cluster] = read = _LimitsRead(lambda: self._read_limits(cluster), cluster,
                                                        connect=getattr(backend, "connect", None))  # fmt: skip
        read.start()
        # The SSH handshake is a dozen packet exchanges; each waits for the GIL while this
        # thread validates and registers tasks (33 ms alone became 100 ms). So the caller
        # goes on once the connection is up, or after CONNECT_HEAD_START if it is slow (a
        # host that is down: the read keeps trying, and the caller's own use of the
        # connection gets the read's failure, SSHConnection.ensure).
        read.connected.wait(CONNECT_HEAD_START)

    def limits_pending(self, cluster: str) -> bool:
        """A read ``prefetch_limits`` started is still under way."""
        read = self._limit_reads.get(cluster)
        return read is not None and read.is_alive()

    def _limits_file(self, cluster: str) -> Path:
        return self.data_dir / "limits" / (re.sub(r"[^A-Za-z0-9_.-]", "_", cluster) + ".json")

    def _kept_limits(self, cluster: str, backend: Backend) -> ClusterLimits | None:
        """The limits kept on disk, if fresh (also handed to the backend)."""
        from .slurm.limits import ClusterLimits

        path = self._limits_file(cluster)
        try:
            if time.time() - path.stat().st_mtime < LIMITS_TTL_SECONDS:
                limits = ClusterLimits(**json.loads(path.read_text(encoding="utf-8")))
                remember = getattr(backend, "remember_limits", None)
                if remember is not None:
                    remember(limits)
                return limits
        except (OSError, ValueError, TypeError):
            pass  # absent, stale or unreadable: read them again
        return None

    def _read_limits(self, cluster: str) -> ClusterLimits | None:
        backend = self.backend(cluster)
        read = getattr(backend, "cluster_limits", None)
        if read is None:
            return None
        kept = self._kept_limits(cluster, backend)
        if kept is not None:
            return kept
        path = self._limits_file(cluster)
        try:
            limits = read()
        except TransportError as exc:
            # Unreachable: whatever comes next (staging) reports it, with its hint.
            log.debug("cluster %s: limits not read: %s", cluster, exc.message)
            return None
        except HpcBridgeError as exc:
            log.info("cluster %s: cannot read its limits (%s); assuming none", cluster, exc.message)
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(limits)), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            log.debug("cannot keep the limits of %s: %s", cluster, exc)
        return limits

    def backend(self, cluster: str) -> Backend:
        """The backend of ``cluster`` (ConfigError for a cluster the config does not name)."""
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

    def try_transition(
        self,
        task_id: str,
        old: TaskState,
        new: TaskState,
        detail: str,
        *,
        attempt: int | None = None,
        fields: Mapping[str, Any] | None = None,
        expected_attempt: int | None = None,
    ) -> bool:
        """Compare-and-set ``old -> new``; False (and nothing written) if another process
        moved the task first."""
        try:
            self.registry.transition(task_id, old, new, source=self.source, detail=detail,
                                     attempt=attempt, fields=fields,
                                     expected_attempt=expected_attempt)  # fmt: skip
            return True
        except ConflictError as exc:
            log.info("task %s: %s", task_id, exc)
            return False

    def charge(self, cluster: str, commands: int) -> None:
        """Take scheduler-command tokens from the cluster's budget (shared through the
        registry by every process), waiting first when it is spent."""
        cfg = self.config.cluster(cluster)
        if cfg.backend == "local":
            return
        wait = self.registry.take_budget(
            cluster, commands, rate_per_minute=cfg.commands_per_minute,
            burst=max(10.0, cfg.commands_per_minute / 6),
        )  # fmt: skip
        if wait > 0:
            log.info("cluster %s: scheduler command budget spent, waiting %.1f s", cluster, wait)
            self.stop.wait(min(wait, MAX_BUDGET_SLEEP))

    @staticmethod
    def poll_request(task: Task, att: Attempt) -> PollRequest:
        from .backends.base import PollRequest

        return PollRequest(task_id=task.id, attempt=att.number, token=att.token, job_id=att.job_id,
                           work_dir=task.work_dir, backend_ref=att.backend_ref)  # fmt: skip


class _LimitsRead(threading.Thread):
    """A cluster's limits read in the background; ``result()`` waits, then returns them or
    raises what the read raised."""

    def __init__(self, read: Callable[[], ClusterLimits | None], cluster: str, *,
                 connect: Callable[[], None] | None = None) -> None:  # fmt: skip
        super().__init__(name=f"hpcbridge-limits-{cluster}", daemon=True)
        self._read = read
        self._connect = connect
        self.connected = threading.Event()  # set once connecting ended, either way
        self._value: ClusterLimits | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = False
        self._close: Callable[[], None] | None = None

    def run(self) -> None:
        try:
            if self._connect is not None:
                try:
                    self._connect()
                except HpcBridgeError as exc:  # unreachable: no limits (as _read_limits), and
                    # no second round of connect attempts; the submission reports the error
                    log.debug("limits not read: %s", exc.message)
                    return
            self.connected.set()
            self._value = self._read()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._error = exc
        finally:
            self.connected.set()
            with self._lock:
                self._done, close = True, self._close
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - nobody waits for this thread any more
                    log.debug("closing after a limits read failed", exc_info=True)

    def close_when_done(self, close: Callable[[], None]) -> bool:
        """Have the read call ``close`` when it ends; False if it has ended (call it yourself)."""
        with self._lock:
            if self._done:
                return False
            self._close = close
            return True

    def result(self) -> ClusterLimits | None:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value
