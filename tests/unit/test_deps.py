"""Dependencies between tasks (``--after``): the decision (pure) and the engine holding a child
until its parent ended, through a Service on a FakeBackend (the lab test is
tests/integration/test_arrays.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcbridge.deps import decide, parse_after
from hpcbridge.errors import UsageError
from hpcbridge.lifecycle import TaskState
from hpcbridge.testing import FakeBackend

from .test_cycle import make_service

S = TaskState


@pytest.mark.parametrize("text, expected", [
    ("abc", ("abc", "ok")), ("abc:ok", ("abc", "ok")), ("abc:any", ("abc", "any")),
    ("abc:notok", ("abc", "notok")),
])  # fmt: skip
def test_parse_after(text: str, expected: tuple[str, str]) -> None:
    assert parse_after(text) == expected


@pytest.mark.parametrize("bad", ["", ":ok", "abc:maybe", "a b", "$(id):ok", "abc:ok:ok"])
def test_parse_after_refuses_nonsense_with_a_hint(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_after(bad)
    assert "--after" in (err.value.hint or "")


def test_decide() -> None:
    assert not decide(["p:ok"], {"p": S.RUNNING}).ready
    assert decide(["p:ok"], {"p": S.RUNNING}).reason == "waiting for p"
    assert decide(["p:ok"], {"p": S.SUCCEEDED}).ready
    never = decide(["p:ok"], {"p": S.TIMED_OUT})
    assert never.never and "parent p timed_out" in never.reason
    assert decide(["p:notok"], {"p": S.FAILED}).ready
    assert decide(["p:notok"], {"p": S.SUCCEEDED}).never
    assert decide(["p:any"], {"p": S.CANCELLED}).ready
    assert decide(["p:ok", "q:any"], {"p": S.SUCCEEDED, "q": S.QUEUED}).reason == "waiting for q"
    assert decide(["p"], {"p": None}).never


def test_a_child_waits_without_a_job_and_goes_once_its_parent_succeeded(tmp_path: Path) -> None:
    fake = FakeBackend()
    svc = make_service(tmp_path, fake)
    parent = svc.submit(command=["true"], name="p")
    child = svc.submit(command=["true"], name="c", after=[parent.id[:10]])  # a prefix works
    assert svc.get(child.id).spec.after == (f"{parent.id}:ok",)
    fake.set_state("p", 1, S.RUNNING)
    svc.sync_cluster("lab")
    assert svc.get(child.id).state == S.CREATED and not svc.attempts(child.id)
    assert [r.task.spec.name for r in fake.submitted] == ["p"]
    fake.set_state("p", 1, S.SUCCEEDED, exit_code=0)
    for _ in range(3):
        svc.sync_cluster("lab")
    assert svc.get(parent.id).state == S.SUCCEEDED
    assert svc.get(child.id).state in (S.QUEUED, S.SUBMITTING, S.RUNNING, S.SUCCEEDED)
    assert [r.task.spec.name for r in fake.submitted] == ["p", "c"]
    # A parent that already succeeded lets a new child go at once.
    late = svc.submit(command=["true"], name="late", after=[parent.id])
    assert svc.get(late.id).state == S.QUEUED
    svc.close()


def test_a_child_of_a_failed_parent_is_cancelled_with_the_reason(tmp_path: Path) -> None:
    fake = FakeBackend()
    svc = make_service(tmp_path, fake)
    parent = svc.submit(command=["false"], name="p")
    child = svc.submit(command=["true"], name="c", after=[f"{parent.id}:ok"])
    other = svc.submit(command=["true"], name="o", after=[f"{parent.id}:notok"])
    fake.set_state("p", 1, S.FAILED, exit_code=1)
    for _ in range(3):
        svc.sync_cluster("lab")
    c = svc.get(child.id)
    assert c.state == S.CANCELLED and f"parent {parent.id} failed" in (c.reason or ""), c.reason
    assert not svc.attempts(child.id)
    assert svc.get(other.id).state != S.CANCELLED  # notok: the failure is its cue
    assert "o" in [r.task.spec.name for r in fake.submitted]
    svc.close()


def test_an_unknown_parent_is_refused_before_anything_is_registered(tmp_path: Path) -> None:
    svc = make_service(tmp_path, FakeBackend())
    with pytest.raises(UsageError) as err:
        svc.submit(command=["true"], after=["zzzzzzzz"])
    assert "--after zzzzzzzz" in err.value.message
    assert svc.list_tasks() == []
    svc.close()
