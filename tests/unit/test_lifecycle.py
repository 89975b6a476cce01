"""The lifecycle table and the pure transition planner."""

from __future__ import annotations

import itertools

import pytest

from hpcbridge.errors import ConfigError, IllegalTransition
from hpcbridge.lifecycle import (
    IN_FLIGHT,
    TERMINAL,
    TRANSITIONS,
    WAITING,
    RetryPolicy,
    TaskState,
    check_transition,
    parse_retry_on,
    plan_transition,
)

S = TaskState
POLICY = RetryPolicy()


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize("old,new", [(o, n) for o in TaskState for n in TRANSITIONS[o]])
def test_every_legal_move_is_accepted(old: TaskState, new: TaskState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(
    "old,new",
    [(o, n) for o, n in itertools.product(TaskState, TaskState) if n not in TRANSITIONS[o]],
)
def test_every_other_move_raises(old: TaskState, new: TaskState) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        check_transition(old, new)


def test_terminal_states_are_final() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
        assert state.terminal


def test_some_specific_illegal_moves() -> None:
    for old, new in [
        (S.SUCCEEDED, S.RUNNING),
        (S.CREATED, S.RUNNING),  # nothing was submitted
        (S.QUEUED, S.SUCCEEDED),  # success only after outputs are fetched
        (S.RUNNING, S.CREATED),
        (S.CANCELLED, S.QUEUED),
        (S.RETRYING, S.RUNNING),  # a retry is a new attempt, it goes through submitting
    ]:
        with pytest.raises(IllegalTransition):
            check_transition(old, new)


def test_every_non_terminal_state_can_be_cancelled_or_reach_an_end() -> None:
    for state in set(TaskState) - TERMINAL:
        reachable = set()
        frontier = {state}
        while frontier:
            s = frontier.pop()
            for n in TRANSITIONS[s]:
                if n not in reachable:
                    reachable.add(n)
                    frontier.add(n)
        assert S.CANCELLED in reachable, state


def test_exit_zero_goes_through_fetching() -> None:
    plan = plan_transition(S.RUNNING, S.SUCCEEDED, policy=POLICY, attempts_done=1)
    assert plan.path == (S.FETCHING,)


def test_unknown_observation_changes_nothing() -> None:
    assert plan_transition(S.RUNNING, None, policy=POLICY, attempts_done=1).path == ()


def test_same_state_changes_nothing() -> None:
    assert plan_transition(S.QUEUED, S.QUEUED, policy=POLICY, attempts_done=1).path == ()


def test_terminal_task_ignores_late_reports() -> None:
    assert plan_transition(S.CANCELLED, S.RUNNING, policy=POLICY, attempts_done=1).path == ()


def test_preemption_retried_with_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=10, backoff_factor=2)
    plan = plan_transition(S.RUNNING, S.PREEMPTED, policy=policy, attempts_done=1)
    assert plan.path == (S.PREEMPTED,)
    assert plan.resubmit_after == 10
    plan2 = plan_transition(S.RUNNING, S.NODE_FAILED, policy=policy, attempts_done=2)
    assert plan2.path == (S.NODE_FAILED,)
    assert plan2.resubmit_after == 20


def test_retries_exhausted_fail_the_task_and_say_why() -> None:
    policy = RetryPolicy(max_attempts=2)
    plan = plan_transition(S.RUNNING, S.PREEMPTED, policy=policy, attempts_done=2)
    assert plan.path == (S.PREEMPTED, S.FAILED)
    assert plan.resubmit_after is None
    assert "retries exhausted" in plan.reason


def test_deterministic_failures_not_retried_by_default() -> None:
    for outcome in (S.FAILED, S.TIMED_OUT, S.OUT_OF_MEMORY, S.CANCELLED):
        plan = plan_transition(S.RUNNING, outcome, policy=POLICY, attempts_done=1)
        assert plan.path == (outcome,)
        assert plan.resubmit_after is None


def test_policy_can_retry_timeouts() -> None:
    policy = RetryPolicy(retry_on=parse_retry_on(["timed_out"]), max_attempts=2)
    plan = plan_transition(S.RUNNING, S.TIMED_OUT, policy=policy, attempts_done=1)
    assert plan.path == (S.RETRYING,)
    assert plan.resubmit_after is not None


def test_slurm_requeue_records_interruption_then_queue() -> None:
    plan = plan_transition(S.RUNNING, S.NODE_FAILED, policy=POLICY, attempts_done=1,
                           slurm_will_requeue=True)  # fmt: skip
    assert plan.path == (S.NODE_FAILED, S.QUEUED)
    assert plan.resubmit_after is None


def test_waiting_task_comes_back_when_slurm_runs_it_again() -> None:
    assert plan_transition(S.PREEMPTED, S.RUNNING, policy=POLICY, attempts_done=1).path == (S.RUNNING,)
    # preempted -> completing is not a move; the planner routes it through queued
    assert plan_transition(S.PREEMPTED, S.COMPLETING, policy=POLICY, attempts_done=1).path == (
        S.QUEUED,
        S.COMPLETING,
    )


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(backoff_seconds=10, backoff_factor=10, backoff_max_seconds=60)
    assert [policy.backoff(n) for n in (1, 2, 3)] == [10, 60, 60]


def test_policy_round_trips_and_validates() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=parse_retry_on(["preempted", "failed"]))
    assert RetryPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ConfigError, match="unknown retry outcome 'exploded'"):
        parse_retry_on(["exploded"])
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="unknown retry policy key"):
        RetryPolicy.from_dict({"max_attempt": 3})


def test_state_groups_are_disjoint_where_they_must_be() -> None:
    assert not (IN_FLIGHT & TERMINAL)
    assert not (WAITING & TERMINAL)
    assert not (IN_FLIGHT & WAITING)
