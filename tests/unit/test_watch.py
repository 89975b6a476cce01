"""The sync cycle's watch (issue 12 items 3-5) on a FakeBackend: walltime warnings, stall
detection with its two-reading guard and its actions, watched files, one watch command per
cycle for all running tasks; and the real watch script run on this machine (hostile names,
a symlink out of the work dir, grep -E regexes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hpcbridge import outbox
from hpcbridge.backends.slurm_watch import (
    WatchRequest,
    parse_watch_output,
    run_watch_locally,
    watch_stdin,
)
from hpcbridge.config import parse_config
from hpcbridge.errors import BackendError
from hpcbridge.lifecycle import TaskState
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.testing import FakeBackend

S = TaskState


def make(tmp_path: Path, **cluster: object) -> tuple[Service, FakeBackend]:
    fake = FakeBackend()
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000, **cluster}
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": fake}, source="test")), fake


def notices(svc: Service, kind: str) -> list[outbox.OutboxEntry]:
    return [e for e in outbox.entries(svc.registry, everything=True) if e.notice.kind == kind]


def test_walltime_near_once_per_attempt_from_start_and_limit(tmp_path) -> None:
    svc, fake = make(tmp_path)
    near = svc.submit(command=["x"], name="near", time="10")  # 10 minutes
    far = svc.submit(command=["x"], name="far", time="01:00:00")
    fake.set_state("near", 1, S.RUNNING, start_time=time.time() - 9.5 * 60, nodes="n1")
    fake.set_state("far", 1, S.RUNNING, start_time=time.time() - 9.5 * 60, nodes="n1")
    svc.sync_cluster("lab")
    svc.sync_cluster("lab")
    (e,) = notices(svc, "walltime_near")
    assert e.notice.task_id == near.id and "of its 10 min time limit left" in e.notice.detail
    assert far.id not in {x.notice.task_id for x in notices(svc, "walltime_near")}
    assert fake.calls_to("watch") == [], "walltime needs no command"
    svc.close()


def test_a_stall_needs_two_stale_readings_fires_once_and_clears(tmp_path) -> None:
    svc, fake = make(tmp_path, stall_after="60s")
    t = svc.submit(command=["x"], name="t")
    fake.set_state("t", 1, S.RUNNING, start_time=time.time() - 3600, nodes="n2")
    fake.set_files("t", {"out.dat": "x"}, mtime=time.time() - 600)
    svc.sync_cluster("lab")  # first stale reading (maybe NFS): nothing yet
    assert notices(svc, "stalled") == []
    svc.sync_cluster("lab")
    svc.sync_cluster("lab")
    (e,) = notices(svc, "stalled")
    assert "stalled on n2: no file in its work dir changed for 10 min" in e.notice.detail
    assert svc.get(t.id).state is S.RUNNING, "on_stall = notify only tells"
    fake.set_files("t", {"out.dat": "xy"})  # moves again: cleared
    svc.sync_cluster("lab")
    assert any("stall over" in ev.detail for ev in svc.events(t.id))
    fake.set_files("t", {"out.dat": "xy", ".hpcbridge/attempt-1.err": ""}, mtime=time.time() - 600)
    fake.set_files("t", {"out.dat": "xyz"}, mtime=time.time() - 600)
    for _ in range(2):
        svc.sync_cluster("lab")
    assert len(notices(svc, "stalled")) == 2, "a second stall is a second event"
    assert len(fake.calls_to("watch")) == 6 and all(len(c.args[0]) == 1 for c in fake.calls_to("watch"))
    svc.close()


def test_on_stall_cancel_ends_cancelled_with_the_reason(tmp_path) -> None:
    svc, fake = make(tmp_path)
    t = svc.submit(command=["x"], name="t", stall_after="1m", on_stall="cancel")
    fake.set_state("t", 1, S.RUNNING, start_time=time.time() - 3600, nodes="n1")
    fake.set_files("t", {"a": "1"}, mtime=time.time() - 3600)
    for _ in range(3):
        svc.sync_cluster("lab")
    task = svc.get(t.id)
    assert task.state is S.CANCELLED, task
    assert task.reason and task.reason.startswith("stalled on n1: no file in its work dir changed"), task.reason
    assert len(fake.calls_to("cancel")) >= 1


def test_on_stall_requeue_makes_a_new_attempt_without_the_node(tmp_path) -> None:
    svc, fake = make(tmp_path, stall_after="1m", on_stall="requeue", retry={"backoff_seconds": 0.1})
    t = svc.submit(command=["x"], name="t", max_attempts=3)
    fake.set_state("t", 1, S.RUNNING, start_time=time.time() - 3600, nodes="n3")
    fake.set_files("t", {"a": "1"}, mtime=time.time() - 3600)
    for _ in range(3):
        svc.sync_cluster("lab")
    task = svc.get(t.id)
    assert "n3" in task.excluded_nodes, task
    assert task.reason and "stalled on n3" in task.reason
    wait_until = time.time() + 30
    while len(svc.attempts(t.id)) < 2 and time.time() < wait_until:  # after the retry backoff
        svc.sync_cluster("lab")
        time.sleep(0.2)
    assert len(svc.attempts(t.id)) == 2
    assert "n3" in fake.submitted[-1].task.excluded_nodes
    svc.close()


def test_watched_files_fire_once_each_in_the_same_command(tmp_path) -> None:
    svc, fake = make(tmp_path)
    tasks = [svc.submit(command=["x"], name=f"t{i}", watch_file=["done.txt", "log.txt:conver(ged|gence)"])
             for i in range(5)]  # fmt: skip
    for i in range(5):
        fake.set_state(f"t{i}", 1, S.RUNNING, start_time=time.time())
    fake.set_files("t0", {"log.txt": "step 1\n"})
    svc.sync_cluster("lab")
    assert notices(svc, "file_appeared") == [] and notices(svc, "file_matched") == []
    fake.set_files("t0", {"log.txt": "step 2\nconverged\n", "done.txt": ""})
    fake.set_files("t3", {"done.txt": ""})
    svc.sync_cluster("lab")
    svc.sync_cluster("lab")
    assert sorted(e.notice.task_id for e in notices(svc, "file_appeared")) == sorted([tasks[0].id, tasks[3].id])
    (m,) = notices(svc, "file_matched")
    assert m.notice.task_id == tasks[0].id and "log.txt matches" in m.notice.detail
    calls = fake.calls_to("watch")
    assert len(calls) == 3 and all(len(c.args[0]) == 5 for c in calls), "one command per cycle for all"
    svc.close()


def test_the_watch_script_on_this_machine(tmp_path) -> None:
    work = tmp_path / "w o'rk $(x)"
    (work / "sub").mkdir(parents=True)
    log = work / "sub" / "log; rm -rf ~.txt"
    log.write_text("residual 1e-3\nconverged after 9 steps\n")
    old = time.time() - 7200
    os.utime(log, (old, old))
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    (work / "link").symlink_to(secret)
    empty = tmp_path / "empty"
    empty.mkdir()
    reqs = [WatchRequest("a", str(work), items=(("sub/log; rm -rf ~.txt", r"converged after [0-9]+"),
                                               ("sub/log; rm -rf ~.txt", None), ("nope", None),
                                               ("link", "password"), ("link", None),
                                               ("sub/log; rm -rf ~.txt", r"diverged"))),
            WatchRequest("b", str(empty)), WatchRequest("c", str(tmp_path / "missing"), items=(("x", None),))]  # fmt: skip
    got = run_watch_locally(reqs)
    assert abs(got.now - time.time()) < 5
    assert got.newest["a"] == pytest.approx(old, abs=1), "the symlink's target is not the work dir's"
    assert got.newest["b"] is None and got.newest["c"] is None
    assert got.hits["a"] == {0: True, 1: True, 2: False, 3: False, 4: False, 5: False}
    assert got.hits["c"] == {0: False}
    assert b"\0" in watch_stdin(reqs) and not (tmp_path / "x").exists()


def test_watch_output_parsing_skips_bad_lines_and_needs_the_clock() -> None:
    got = parse_watch_output("N 100\nT a 90.5\nT b -\ngarbage\nF a 0 1\nF a x 1\n")
    assert got.now == 100 and got.newest == {"a": 90.5, "b": None} and got.hits == {"a": {0: True}}
    with pytest.raises(BackendError, match="clock"):
        parse_watch_output("T a 1\n")
