"""The sync cycle's watch over running tasks: walltime warnings, stalls and watched files.

* ``walltime_near``: a running attempt with less than ``walltime_warn_fraction`` (default
  10%) of its time limit left, from the attempt's start time and the limit; no command.
  Once per attempt.
* ``stalled``: the newest file in the work dir (the job's stdout and stderr included, they
  live in ``.hpcbridge/``) is older than ``stall_after`` (the task's ``--stall-after``, else
  the cluster's). NFS can serve a stale mtime to the login node for a while (attribute
  caching, ``actimeo``): a task is stalled only after two consecutive stale readings, one
  cycle apart. Once per stall; cleared when files move again. Then ``on_stall``: notify
  only, cancel (the task ends ``cancelled`` with the stall as its reason), or requeue (a new
  attempt, the node excluded, as after a node failure).
* ``file_appeared`` / ``file_matched``: a watched path exists / its regex matches. Once per
  attempt and item.

Stall and file checks are ONE command per cycle per cluster for every watched running task
(``backends/slurm_watch.py``), charged to the command budget. What was already said lives on
the attempt (``watch`` JSON) and is written in the transaction of the notice it gates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from .backends.slurm_watch import WatchingBackend, WatchRequest, WatchResult
from .config import ClusterConfig
from .errors import ConflictError
from .events import parse_watch
from .lifecycle import TaskState
from .models import Attempt, Task
from .reconcile import Effects
from .runtime import Runtime
from .slurm.usage import time_limit_seconds

log = logging.getLogger(__name__)
S = TaskState

STALE_READINGS = 2  # consecutive stale readings before a task is stalled (NFS caches)


def _span(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s} s"
    return f"{s // 60} min" if s < 7200 else f"{s / 3600:.1f} h"


def walltime_left(att: Attempt, limit: float | None, now: float) -> float | None:
    """Seconds the running attempt has left of its time limit (None: no limit or start)."""
    if limit is None or att.started_at is None:
        return None
    return limit - (now - att.started_at)


def stall_threshold(task: Task, cfg: ClusterConfig) -> float | None:
    return task.spec.stall_after if task.spec.stall_after is not None else cfg.stall_after


def watch_running(rt: Runtime, cluster: str, effects: Effects) -> None:
    """Walltime warnings, then one watch command for stalls and files (see module doc)."""
    reg = rt.registry
    cfg = rt.cluster(cluster)
    running = reg.list_tasks(states=[S.RUNNING], cluster=cluster, newest_first=False)
    if not running:
        return
    atts = reg.current_attempts([t.id for t in running])
    now = time.time()
    for t in running:
        att = atts.get(t.id)
        if att is None or (att.watch or {}).get("walltime_warned"):
            continue
        limit = time_limit_seconds(t.spec.resources.time or cfg.defaults.time)
        left = walltime_left(att, limit, now)
        if left is not None and limit and left < cfg.walltime_warn_fraction * limit:
            watch = {**(att.watch or {}), "walltime_warned": True}
            reg.add_notice(t.id, "walltime_near",
                           f"attempt {att.number}: {_span(left)} of its {_span(limit)} time limit left",
                           source=rt.source, attempt=att.number, watch=watch)  # fmt: skip
            log.info("task %s attempt %s: walltime near (%s left)", t.id, att.number, _span(left))
    watched = [t for t in running if t.work_dir and t.id in atts
               and (stall_threshold(t, cfg) is not None or t.spec.watch_files)]  # fmt: skip
    backend = rt.backend(cluster)
    if not watched or not isinstance(backend, WatchingBackend):
        return
    atts = reg.current_attempts([t.id for t in watched])  # with the walltime marks
    requests = [WatchRequest(atts[t.id].token, str(t.work_dir), t.id, t.name,
                             tuple(parse_watch(i) for i in t.spec.watch_files)) for t in watched]  # fmt: skip
    rt.charge(cluster, 1)
    result = backend.watch(requests)  # TransportError: the cycle ends here, nothing written
    for t in watched:
        try:
            _apply(rt, t, atts[t.id], result, cfg, effects)
        except ConflictError as exc:  # moved by another process meanwhile: next cycle
            log.info("task %s: %s", t.id, exc)


def _apply(rt: Runtime, t: Task, att: Attempt, result: WatchResult, cfg: ClusterConfig,
           effects: Effects) -> None:  # fmt: skip
    reg = rt.registry
    old: Mapping[str, Any] = att.watch or {}
    w: dict[str, Any] = dict(old)
    threshold = stall_threshold(t, cfg)
    if threshold is not None and att.token in result.newest:
        newest = result.newest[att.token]
        age = result.now - (newest if newest is not None else att.started_at or result.now)
        if age > threshold:
            w["stale"] = int(w.get("stale", 0)) + 1
            if w["stale"] >= STALE_READINGS and not w.get("stalled"):
                _stalled(rt, t, att, w, age, threshold, cfg, effects)
                return  # written with its notice; the files wait for the next cycle
        else:
            if w.get("stalled"):
                reg.add_event(t.id, "info", f"attempt {att.number}: files move again; stall over",
                              source=rt.source, attempt=att.number)  # fmt: skip
            w["stale"], w["stalled"] = 0, False
    hits = result.hits.get(att.token, {})
    seen = list(w.get("seen", []))
    for i, item in enumerate(t.spec.watch_files):
        if hits.get(i) and item not in seen:
            seen.append(item)
            w["seen"] = seen
            path, regex = parse_watch(item)
            kind, what = ("file_matched", f"{path} matches {regex!r}") if regex else ("file_appeared", f"{path} appeared")
            reg.add_notice(t.id, kind, f"attempt {att.number}: {what} in the work dir", source=rt.source,
                           attempt=att.number, watch=w)  # fmt: skip
    if w != dict(old):
        reg.update_attempt(t.id, att.number, {"watch": w})


def _stalled(rt: Runtime, t: Task, att: Attempt, w: dict[str, Any], age: float, threshold: float,
             cfg: ClusterConfig, effects: Effects) -> None:  # fmt: skip
    reg = rt.registry
    action = t.spec.on_stall or cfg.on_stall
    node = f" on {att.nodes}" if att.nodes else ""
    why = f"stalled{node}: no file in its work dir changed for {_span(age)} (stall_after {_span(threshold)})"
    w["stalled"] = True
    if action in ("cancel", "requeue"):
        w["cancel_reason"] = why
        w["requeue"] = action == "requeue"
    with reg.transaction():
        reg.add_notice(t.id, "stalled", f"attempt {att.number}: {why}; on_stall = {action}",
                       source=rt.source, attempt=att.number, watch=w)  # fmt: skip
        if action == "cancel":  # kept asking each cycle until the scheduler confirms
            reg.update_task(t.id, {"cancel_requested": True}, expected=S.RUNNING)
    log.warning("task %s attempt %s: %s; on_stall = %s", t.id, att.number, why, action)
    if action in ("cancel", "requeue"):
        effects.cancel.append((t, att))


__all__ = ["watch_running"]

