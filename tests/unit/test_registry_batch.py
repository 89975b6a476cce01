"""The registry's set-wise writes do what the task-by-task ones do: the same rows, events,
outbox rows and recorded changes, and a compare-and-set that finds its task moved (by
another connection) writes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hpcbridge.errors import IllegalTransition, TaskNotFound
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Attempt, Task, TaskSpec, new_task_id
from hpcbridge.registry import Registry
from hpcbridge.registry_batch import Change, JobRecord

S = TaskState


def tasks(reg: Registry, n: int) -> list[Task]:
    now = time.time()
    made = [Task(id=new_task_id(now + i), spec=TaskSpec(command=("true",), name=f"t{i}"), state=S.CREATED,
                 metadata={"i": str(i)}, created_at=now, updated_at=now) for i in range(n)]  # fmt: skip
    reg.insert_tasks(made, source="test", detail="registered")
    return made


def snapshot(reg: Registry) -> list[tuple[object, ...]]:
    """Everything a transition writes, without ids and times."""
    rows = [tuple(r) for r in reg.conn.execute(
        "SELECT task_id, kind, source, from_state, to_state, attempt, detail FROM events ORDER BY id")]
    rows += [("task", r[0], r[1], r[2], r[3]) for r in reg.conn.execute(
        "SELECT id, state, attempt_count, lease FROM tasks ORDER BY id")]
    rows += [("outbox", r[0]) for r in reg.conn.execute(
        "SELECT e.to_state FROM outbox o JOIN events e ON e.id = o.event_id ORDER BY o.event_id")]
    return rows  # fmt: skip


def test_a_batch_writes_what_one_transition_each_writes(tmp_path: Path) -> None:
    one, many = Registry(tmp_path / "one.db"), Registry(tmp_path / "many.db")
    steps = [(S.CREATED, S.STAGING, {"lease": "L"}, None), (S.STAGING, S.SUBMITTING, {"attempt_count": 1}, 0),
             (S.SUBMITTING, S.QUEUED, None, 1)]  # fmt: skip
    made = tasks(one, 3)
    many.insert_tasks(made, source="test", detail="registered")
    with one.recording() as seen_one, many.recording() as seen_many:
        for old, new, fields, attempt in steps:
            for t in made:
                one.transition(t.id, old, new, source="s", detail=f"{new.value}", attempt=1, fields=fields,
                               expected_attempt=attempt)  # fmt: skip
            assert many.transition_many([Change(t.id, old, new, f"{new.value}", 1, fields, attempt) for t in made],
                                        source="s") == [True] * 3  # fmt: skip
    assert snapshot(one) == snapshot(many)
    assert seen_one == seen_many and len(seen_many) == 9
    assert [r[0] for r in many.conn.execute("SELECT e.to_state FROM outbox o JOIN events e ON e.id = o.event_id")] \
        == ["queued"] * 3  # the one state of these that notifies


def test_a_task_moved_by_another_process_is_skipped_and_nothing_of_it_written(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    a, b, c = tasks(reg, 3)
    other = Registry(tmp_path / "r.db")
    other.transition(b.id, S.CREATED, S.CANCELLED, source="other")
    events_before = reg.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    got = reg.transition_many([Change(t.id, S.CREATED, S.STAGING, "staging") for t in (a, b, c)], source="s")
    assert got == [True, False, True]
    assert reg.get_task(b.id).state == S.CANCELLED
    assert reg.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events_before + 2
    # On the wrong attempt: not applied either.
    assert reg.transition_many([Change(a.id, S.STAGING, S.SUBMITTING, "", 1, {"attempt_count": 1}, 5)],
                               source="s") == [False]  # fmt: skip
    with pytest.raises(TaskNotFound):
        reg.transition_many([Change("nope", S.CREATED, S.STAGING)], source="s")
    with pytest.raises(IllegalTransition):
        reg.transition_many([Change(a.id, S.STAGING, S.SUCCEEDED)], source="s")


def test_a_job_is_recorded_only_on_the_current_submitting_attempt(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    a, b, c = tasks(reg, 3)
    now = time.time()
    for t in (a, b, c):
        reg.transition(t.id, S.CREATED, S.SUBMITTING, source="s", fields={"attempt_count": 1})
    reg.add_attempts([Attempt(task_id=t.id, number=1, token=f"tok-{t.id}", state=S.SUBMITTING, created_at=now,
                              backend_ref={"array": "a-x", "index": i}) for i, t in enumerate((a, b, c))])  # fmt: skip
    reg.update_attempt(b.id, 1, {"state": S.LOST})  # given up by a sync meanwhile
    reg.update_task(c.id, {"attempt_count": 2})  # c moved on to another attempt
    got = reg.record_jobs([JobRecord(t.id, 1, f"9_{i}", {"array": "a-x", "index": i})
                           for i, t in enumerate((a, b, c))], at=now)  # fmt: skip
    assert got == [True, False, False]
    [att] = reg.attempts(a.id)
    assert (att.job_id, att.state, att.backend_ref) == ("9_0", S.QUEUED, {"array": "a-x", "index": 0})
    assert reg.attempts(b.id)[0].job_id is None and reg.attempts(c.id)[0].job_id is None
