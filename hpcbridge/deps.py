"""Dependencies between tasks (``submit --after ID[:ok|any|notok]``). Pure.

hpcbridge decides a dependency itself, from the registry, instead of handing it to Slurm's
``--dependency``: a parent may be resubmitted under a new job id (a retry after preemption)
or live on another cluster, and Slurm would then hold the child forever
(``DependencyNeverSatisfied``) or cancel it. A child waits ``created`` until every parent has
ended; a condition that can no longer be met cancels it with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import UsageError
from .lifecycle import TERMINAL, TaskState

CONDITIONS = ("ok", "any", "notok")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def parse_after(text: str) -> tuple[str, str]:
    """``"ID"`` / ``"ID:ok"`` / ``"ID:any"`` / ``"ID:notok"`` -> (task id, condition)."""
    tid, _, cond = text.strip().partition(":")
    cond = cond or "ok"
    if not _ID.match(tid) or cond not in CONDITIONS:
        raise UsageError(f"invalid dependency {text!r}",
                         hint="use --after TASK_ID[:ok|any|notok], e.g. --after 01hq3v7k:ok")  # fmt: skip
    return tid, cond


def format_after(task_id: str, condition: str) -> str:
    return f"{task_id}:{condition}"


@dataclass(frozen=True)
class Decision:
    """What a child's dependencies say now: ``ready``, or wait (``never`` False), or never
    (``never`` True, with the reason)."""

    ready: bool
    never: bool = False
    reason: str = ""


def decide(after: Sequence[str], parents: Mapping[str, TaskState | None]) -> Decision:
    """``parents``: task id -> its state (None: no such task). All conditions must hold."""
    waiting: list[str] = []
    for item in after:
        tid, cond = parse_after(item)
        state = parents.get(tid)
        if state is None:
            return Decision(False, True, f"parent task {tid} does not exist")
        if state not in TERMINAL:
            waiting.append(tid)
            continue
        ok = state == TaskState.SUCCEEDED
        if cond == "ok" and not ok:
            return Decision(False, True, f"parent {tid} {state.value} (needed: succeeded)")
        if cond == "notok" and ok:
            return Decision(False, True, f"parent {tid} succeeded (needed: not ok)")
    if waiting:
        return Decision(False, reason="waiting for " + ", ".join(waiting))
    return Decision(True)
