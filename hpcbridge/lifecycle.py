"""The task lifecycle: states, the transition table and the retry policy, kept as data.

Everything here is pure. ``plan_transition`` is the single place that decides what a task
becomes after the scheduler reported something; the service only applies its answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import ConfigError
from .states import ACTIVE as ACTIVE
from .states import IN_FLIGHT as IN_FLIGHT
from .states import JOB_STATES, WAITING, S, TaskState
from .states import OUTCOMES as OUTCOMES
from .states import TERMINAL as TERMINAL
from .states import TRANSITIONS as TRANSITIONS
from .states import check_transition as check_transition

# The states and the transition table live in ``states`` (what `tasks list` imports) and
# are re-exported here: `from hpcbridge.lifecycle import TaskState` works everywhere.


# Outcomes that a retry policy may name, with the user-facing spelling.
RETRYABLE_NAMES: Mapping[str, TaskState] = {
    "preempted": S.PREEMPTED,
    "node_failed": S.NODE_FAILED,
    "failed": S.FAILED,
    "timed_out": S.TIMED_OUT,
    "out_of_memory": S.OUT_OF_MEMORY,
    "lost": S.LOST,
}


def parse_retry_on(names: Iterable[str]) -> frozenset[TaskState]:
    out = set()
    for name in names:
        if name not in RETRYABLE_NAMES:
            raise ConfigError(
                f"unknown retry outcome {name!r}",
                hint=f"allowed: {', '.join(sorted(RETRYABLE_NAMES))}",
            )
        out.add(RETRYABLE_NAMES[name])
    return frozenset(out)


@dataclass(frozen=True)
class RetryPolicy:
    """When a task whose attempt ended badly gets a new attempt.

    ``max_attempts`` counts hpcbridge attempts (sbatch calls); Slurm's own requeues of the same
    job id do not use up attempts; Slurm bounds those itself (``MaxBatchRequeue`` in
    slurm.conf, 5 by default), after which the job ends and this policy decides.
    """

    max_attempts: int = 3
    retry_on: frozenset[TaskState] = field(
        default_factory=lambda: frozenset({S.PREEMPTED, S.NODE_FAILED})
    )
    backoff_seconds: float = 5.0
    backoff_factor: float = 2.0
    backoff_max_seconds: float = 600.0
    exclude_failed_nodes: bool = True
    slurm_requeue: bool = True  # let Slurm requeue the job itself (--requeue / --no-requeue)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_seconds < 0 or self.backoff_max_seconds < 0 or self.backoff_factor < 1:
            raise ConfigError("backoff must be >= 0 with a factor >= 1")
        bad = self.retry_on - set(RETRYABLE_NAMES.values())
        if bad:
            raise ConfigError(f"cannot retry on {sorted(s.value for s in bad)}")

    def backoff(self, attempts_done: int) -> float:
        """Seconds to wait before attempt ``attempts_done + 1``."""
        delay = self.backoff_seconds * self.backoff_factor ** max(0, attempts_done - 1)
        return float(min(delay, self.backoff_max_seconds))

    def to_dict(self) -> dict[str, object]:
        return {
            "max_attempts": self.max_attempts,
            "retry_on": sorted(s.value for s in self.retry_on),
            "backoff_seconds": self.backoff_seconds,
            "backoff_factor": self.backoff_factor,
            "backoff_max_seconds": self.backoff_max_seconds,
            "exclude_failed_nodes": self.exclude_failed_nodes,
            "slurm_requeue": self.slurm_requeue,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, strict: bool = True) -> RetryPolicy:
        """From config (``strict``: unknown keys are errors) or from a stored task (keys an
        older or newer hpcbridge wrote are ignored, so old registries stay readable)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown and not strict:
            data = {k: v for k, v in data.items() if k in known}
        elif unknown:
            raise ConfigError(
                f"unknown retry policy key(s) {sorted(unknown)}", hint=f"allowed: {sorted(known)}"
            )
        kwargs: dict[str, object] = dict(data)
        for key, value in kwargs.items():
            expected = _POLICY_TYPES.get(key)
            if expected is not None and (
                isinstance(value, bool) != (expected is bool) or not isinstance(value, expected)
            ):
                kind = "true or false" if expected is bool else "a whole number" if expected is int else "a number"
                raise ConfigError(f"retry policy key {key} must be {kind}, got {value!r}")
        if "retry_on" in kwargs:
            raw = kwargs["retry_on"]
            if isinstance(raw, str) or not isinstance(raw, Iterable):
                raise ConfigError("retry_on must be a list of outcome names")
            kwargs["retry_on"] = parse_retry_on(str(x) for x in raw)
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"invalid retry policy: {exc}") from None


# The type each retry policy key must have in a config file (bool is no number here).
_POLICY_TYPES: Mapping[str, type | tuple[type, ...]] = {
    "max_attempts": int,
    "backoff_seconds": (int, float),
    "backoff_factor": (int, float),
    "backoff_max_seconds": (int, float),
    "exclude_failed_nodes": bool,
    "slurm_requeue": bool,
}


@dataclass(frozen=True)
class Plan:
    """What to do with a task after an observation: the states to pass through, in order
    (each a legal step from the previous), and whether a new attempt is due later."""

    path: tuple[TaskState, ...]
    resubmit_after: float | None = None  # seconds; None = no new attempt
    reason: str = ""

    @property
    def final(self) -> TaskState | None:
        return self.path[-1] if self.path else None


def plan_transition(
    current: TaskState,
    observed: TaskState | None,
    *,
    policy: RetryPolicy,
    attempts_done: int,
    slurm_will_requeue: bool = False,
) -> Plan:
    """Decide the next state(s) of a task from what the backend observed for its job.

    ``observed`` is the lifecycle state the backend mapped the scheduler's report to, or None
    when the report was not understood (unknown code): then nothing changes, never a guess.
    ``slurm_will_requeue`` is True when the scheduler itself keeps the job alive (Slurm
    requeued it under the same job id), in which case the interruption is recorded but no new
    attempt is made.
    """
    if observed is None or observed == current or current.terminal:
        return Plan(())
    path: list[TaskState] = []

    if observed == S.SUCCEEDED:
        # Exit 0 is not success until the outputs are home.
        observed = S.FETCHING

    if observed in JOB_STATES or observed == S.FETCHING:
        if current in WAITING and observed not in (S.QUEUED, S.HELD, S.RUNNING):
            # e.g. preempted -> completing: go through queued for a legal, honest path.
            path.append(S.QUEUED)
        path.append(observed)
        return Plan(_legal(current, path))

    # A bad outcome for the current attempt.
    if slurm_will_requeue and observed in (S.PREEMPTED, S.NODE_FAILED):
        # Slurm requeued it (same job id); record the interruption and wait in the queue.
        return Plan(_legal(current, [observed, S.QUEUED]), reason="requeued by Slurm")
    retry = observed in policy.retry_on and attempts_done < policy.max_attempts
    if retry:
        waiting = observed if observed in (S.PREEMPTED, S.NODE_FAILED) else S.RETRYING
        return Plan(
            _legal(current, [waiting]),
            resubmit_after=policy.backoff(attempts_done),
            reason=f"{observed.value}; attempt {attempts_done + 1} of {policy.max_attempts} due",
        )
    if observed in (S.PREEMPTED, S.NODE_FAILED):
        # Interrupted and not retried (budget spent or policy): the task has failed.
        why = (
            f"{observed.value}; retries exhausted ({attempts_done} of {policy.max_attempts})"
            if observed in policy.retry_on
            else f"{observed.value}; not retried by policy"
        )
        return Plan(_legal(current, [observed, S.FAILED]), reason=why)
    return Plan(_legal(current, [observed]))


def _legal(current: TaskState, path: list[TaskState]) -> tuple[TaskState, ...]:
    prev = current
    out: list[TaskState] = []
    for state in path:
        if state == prev:
            continue
        check_transition(prev, state)
        out.append(state)
        prev = state
    return tuple(out)
