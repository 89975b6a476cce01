"""Job arrays and dependencies on the real Slurm lab, through the real sshd (issue: sweeps).

A 300-task sweep goes out as two arrays (max_array_size = 200) and every task comes back
with its own output; one element killed, one failing with a retry policy and one preempted
each touch only their own task; a chain A -> B runs B only after A succeeded, and B is
cancelled with the reason when A fails."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpcbridge import projects as proj
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Task
from hpcbridge.service import Service

from .conftest import lab_service, states_seen
from .test_recovery import history, preempt, root_scancel

pytestmark = pytest.mark.integration
S = TaskState
ELEMENT = re.compile(r"^(\d+)_(\d+)$")


def config_with(lab_config: Path, tmp_path: Path, *lines: str) -> Path:
    text = lab_config.read_text().splitlines()
    at = text.index("[clusters.lab]") + 1
    text[at:at] = list(lines)
    path = tmp_path / "arrays.toml"
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.fixture
def svc(lab_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    cfg = config_with(lab_config, tmp_path, "max_array_size = 200")
    monkeypatch.setenv("HPCBRIDGE_CONFIG", str(cfg))
    yield from lab_service(cfg, tmp_path / "registry.db")


def job_of(svc: Service, task: Task) -> str:
    return svc.attempts(task.id)[-1].job_id or ""


def drive(svc: Service, ids: list[str], done: Callable[[list[Task]], bool], timeout: float,
          what: str) -> list[Task]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        svc.sync_cluster("lab")
        tasks = [svc.get(i) for i in ids]
        if done(tasks):
            return tasks
        if time.monotonic() > deadline:
            states = {t.id: t.state.value for t in tasks}
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {states}")
        time.sleep(1.0)


def all_ended(tasks: list[Task]) -> bool:
    return all(t.state.terminal for t in tasks)


def test_300_tasks_go_out_as_two_arrays_and_each_gets_its_own_output(svc: Service, tmp_path: Path) -> None:
    tasks = proj.sweep(svc, ["bash", "-c", 'echo "result $0" > out.txt', "{i}"],
                       grid={"i": [str(i) for i in range(300)]}, cluster="lab", project="arrays300",
                       name="echo", outputs=["out.txt"], cpus=1, time="00:02:00")  # fmt: skip
    ids = [t.id for t in tasks]
    jobs = [job_of(svc, t) for t in tasks]
    assert all(ELEMENT.match(j) for j in jobs), jobs[:5]
    arrays = sorted({ELEMENT.match(j)[1] for j in jobs})  # type: ignore[index]
    assert len(arrays) == 2, arrays  # 300 at max_array_size 200: one array of 200, one of 100
    assert sorted(int(ELEMENT.match(j)[2]) for j in jobs) == sorted([*range(200), *range(100)])  # type: ignore[index]

    done = drive(svc, ids, all_ended, 300, "300 array tasks to end")
    assert [t.state for t in done] == [S.SUCCEEDED] * 300, {t.id: t.reason for t in done if t.state != S.SUCCEEDED}
    for i, t in enumerate(done):
        out = Path(t.output_dir or "") / "out.txt"
        assert out.read_text().strip() == f"result {i}", (t.id, out)
        assert t.metadata.get("i") == str(i)
        assert t.attempt_count == 1
    summary = proj.summary(svc, "arrays300")
    assert summary.counts.get("succeeded") == 300


def test_a_killed_an_failing_and_a_preempted_element_each_touch_only_their_task(svc: Service) -> None:
    # i=0 runs long and is killed; i=1 fails once (exit 3) and succeeds on its retry; i=2 and
    # i=3 just run. All four in one array in partition `low` (PreemptMode=REQUEUE), 1 node each.
    script = ('case $0 in 0) exec sleep 120 ;; 1) if [ -e tried ]; then exit 0; fi; touch tried; exit 3 ;; '
              '*) sleep 20 ;; esac')
    tasks = proj.sweep(svc, ["bash", "-c", script, "{i}"], grid={"i": ["0", "1", "2", "3"]},
                       cluster="lab", name="mixed", cpus=3, time="00:05:00", partition="low",
                       retry_on=["failed", "preempted"], max_attempts=3)  # fmt: skip
    ids = [t.id for t in tasks]
    first = [job_of(svc, t) for t in tasks]
    assert len({ELEMENT.match(j)[1] for j in first}) == 1, first  # type: ignore[index]

    # Wait until 0, 2 and 3 run (1 may already have failed and gone round).
    drive(svc, ids, lambda ts: all(ts[i].state == S.RUNNING for i in (0, 2, 3)), 90, "elements to run")
    svc.kill([ids[0]])
    node3 = svc.attempts(ids[3])[-1].nodes or ""
    assert node3, history(svc, svc.get(ids[3]))
    preemptor = preempt(node3)
    try:
        done = drive(svc, ids, all_ended, 240, "the four tasks to end")
    finally:
        root_scancel(preemptor)
    t0, t1, t2, t3 = done
    assert t0.state == S.CANCELLED, history(svc, t0)
    assert (t1.state, t1.attempt_count) == (S.SUCCEEDED, 2), history(svc, t1)
    retry_job = svc.attempts(t1.id)[-1].job_id or ""
    assert not ELEMENT.match(retry_job), retry_job  # the one retry went out alone, not in an array
    assert t3.state == S.SUCCEEDED and "preempted" in states_seen(svc, t3), history(svc, t3)
    # The siblings never saw any of it.
    assert (t2.state, t2.attempt_count) == (S.SUCCEEDED, 1), history(svc, t2)
    assert svc.attempts(t2.id)[-1].restarts == 0
    assert "preempted" not in states_seen(svc, t2) and "cancelled" not in states_seen(svc, t2)
    assert svc.attempts(t0.id)[-1].job_id == first[0]  # the element itself was cancelled


def test_a_chain_runs_b_after_a_and_cancels_b_when_a_fails(svc: Service) -> None:
    a = svc.submit(command=["bash", "-c", "sleep 3; echo a > a.txt"], cluster="lab", name="A", time="00:02:00")
    b = svc.submit(command=["true"], cluster="lab", name="B", after=[a.id], time="00:02:00")
    bad = svc.submit(command=["bash", "-c", "exit 1"], cluster="lab", name="A-bad", time="00:02:00")
    orphan = svc.submit(command=["true"], cluster="lab", name="B-bad", after=[f"{bad.id[:9]}:ok"], time="00:02:00")
    # Children wait in hpcbridge, with no job, until their parent ended.
    assert svc.get(b.id).state == S.CREATED and not svc.attempts(b.id)
    done = drive(svc, [a.id, b.id, bad.id, orphan.id], all_ended, 180, "the chain")
    a2, b2, bad2, orphan2 = done
    assert a2.state == S.SUCCEEDED and b2.state == S.SUCCEEDED, (history(svc, a2), history(svc, b2))
    started_b = svc.attempts(b.id)[0].created_at or 0
    assert started_b >= (a2.ended_at or 0) - 1, (started_b, a2.ended_at)  # B went out after A ended
    assert bad2.state == S.FAILED
    assert orphan2.state == S.CANCELLED and not svc.attempts(orphan.id)
    assert f"parent {bad.id} failed" in (orphan2.reason or ""), orphan2.reason
