"""The sync cycle and the submission engine through their public seams: a Service on a
runtime whose backend is ``hpcbridge.testing.FakeBackend`` (no Slurm, no lab).

Each test here walks one failure path of issue "exactly once and nothing but the truth".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import hpcbridge
from hpcbridge.backends.base import SubmitOutcome, SubmitRequest
from hpcbridge.config import parse_config
from hpcbridge.errors import TransportError, UsageError
from hpcbridge.leases import Lease, lease_alive
from hpcbridge.lifecycle import TaskState
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.submission import record_outcome
from hpcbridge.testing import ABSENT, FakeBackend

S = TaskState


def make_service(tmp_path: Path, backend: FakeBackend, **cluster: object) -> Service:
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000,
             "submit_grace_seconds": 0, "lost_grace_seconds": 60, **cluster}  # fmt: skip
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": backend}, source="test"))


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def svc(tmp_path: Path, fake: FakeBackend):
    s = make_service(tmp_path, fake)
    yield s
    s.close()


def other_process(svc: Service, tmp_path: Path, fake: FakeBackend) -> Service:
    """A second Service on the same registry: another process's sync."""
    return Service(Runtime(svc.config, Registry(tmp_path / "r.db"), backends={"lab": fake}, source="sync"))


# ---------------------------------------------------------------- 1. a live submission
def test_a_sync_during_a_slow_sbatch_never_submits_a_second_job(svc, fake, tmp_path) -> None:
    """submit_grace_seconds = 0 and a sync in the middle of sbatch: still one job."""
    syncer = other_process(svc, tmp_path, fake)
    real_submit = fake.submit
    reports = []

    def slow_sbatch(requests):
        for _ in range(3):  # cron fires while sbatch is still busy
            reports.append(syncer.sync_cluster("lab"))
        return real_submit(requests)

    fake.submit = slow_sbatch  # type: ignore[method-assign]
    task = svc.submit(command=["true"])
    fake.submit = real_submit  # type: ignore[method-assign]
    assert task.state == S.QUEUED
    assert len(fake.submitted) == 1 and len(fake.jobs) == 1
    assert [a.number for a in svc.attempts(task.id)] == [1]
    assert all(not r.changes for r in reports), reports
    syncer.close()


def test_an_unknown_outcome_waits_for_the_grace_after_its_submitter_is_gone(tmp_path, fake) -> None:
    svc = make_service(tmp_path, fake, submit_grace_seconds=3600)
    fake.fail_submit("t", "unknown", job_created=False)
    task = svc.submit(command=["true"], name="t")
    assert task.state == S.SUBMITTING
    assert not lease_alive(svc.runtime.lease_dir, svc.get(task.id).lease), "released after submit"
    svc.sync_cluster("lab")
    t = svc.get(task.id)
    assert t.state == S.SUBMITTING and t.lease_lost_at is not None  # the grace starts now
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.SUBMITTING and len(fake.submitted) == 1


def test_a_sync_leaves_a_task_with_a_live_lease_alone(svc, fake) -> None:
    """A row written by a submitter that still lives is never resubmitted, however old."""
    fake.fail_submit("t", "unknown", job_created=False)
    task = svc.submit(command=["true"], name="t")
    held = Lease(svc.runtime.lease_dir)  # the submitter is back at work on it
    svc.registry.update_task(task.id, {"lease": held.id, "lease_lost_at": None})
    for _ in range(3):
        svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.SUBMITTING and len(fake.submitted) == 1
    held.release()
    svc.sync_cluster("lab")  # now the submitter is gone: grace 0 -> written off
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.RETRYING


def test_no_restaging_under_a_live_submitter(svc, fake) -> None:
    """Created/staging tasks follow the same rule: orphan only once the lease is dead."""
    opts = hpcbridge.SubmitOptions(command=("true",))
    held = Lease(svc.runtime.lease_dir)
    from hpcbridge.options import build_spec

    spec, meta = build_spec(opts, svc.cluster("lab"))
    from hpcbridge.models import Task, new_task_id

    now = time.time() - 3600  # long past any orphan timeout
    tid = new_task_id(now)
    svc.registry.insert_task(Task(id=tid, spec=spec, state=S.CREATED, metadata=meta, created_at=now,
                                  updated_at=now, lease=held.id), source="test")  # fmt: skip
    svc.sync_cluster("lab")
    assert fake.calls_to("prepare") == [] and svc.get(tid).state == S.CREATED
    held.release()
    svc.sync_cluster("lab")
    assert svc.get(tid).state == S.QUEUED and len(fake.calls_to("prepare")) == 1


# ---------------------------------------------------------------- 2. compare-and-set on attempts
def test_a_late_reply_for_a_given_up_attempt_moves_nothing_and_its_job_is_cancelled(svc, fake) -> None:
    fake.fail_submit("t", "unknown", job_created=False)
    task = svc.submit(command=["true"], name="t", max_attempts=3)
    (a1,) = svc.attempts(task.id)
    svc.sync_cluster("lab")  # lease found dead
    svc.sync_cluster("lab")  # grace 0: attempt 1 given up, retrying
    assert svc.get(task.id).state == S.RETRYING
    svc.registry.update_task(task.id, {"next_attempt_at": 0})
    svc.sync_cluster("lab")  # attempt 2 goes out
    t = svc.get(task.id)
    assert (t.state, t.attempt_count) == (S.QUEUED, 2)
    # The lost submitter's reply for attempt 1 arrives at last:
    req = SubmitRequest(task=t, attempt=1, token=a1.token)
    assert record_outcome(svc.runtime, req, SubmitOutcome(a1.token, job_id="4242")) is True
    t2 = svc.get(task.id)
    assert (t2.state, t2.attempt_count) == (S.QUEUED, 2)
    assert any("4242 was created after the attempt was given up" in e.detail for e in svc.events(task.id))


def test_a_job_that_turns_up_for_a_given_up_attempt_is_cancelled(svc, fake) -> None:
    fake.fail_submit("t", "unknown", job_created=True)  # the job exists, the reply was lost
    fake.script("t", 1, ABSENT, ABSENT, S.QUEUED)  # ... and squeue shows it only late
    task = svc.submit(command=["true"], name="t", max_attempts=2)
    svc.sync_cluster("lab")
    svc.sync_cluster("lab")  # written off as never submitted (grace 0)
    assert svc.get(task.id).state == S.RETRYING
    stray = fake.job("t", 1)
    svc.sync_cluster("lab")  # the stray shows up: cancelled, the task is not adopted by it
    assert stray.cancelled
    t = svc.get(task.id)
    assert (t.state, t.attempt_count) == (S.RETRYING, 1), "not adopted by the stray job"
    assert any("turned up for an attempt already given up" in e.detail for e in svc.events(task.id))


# ---------------------------------------------------------------- 3. never-submitted attempts count
def test_never_submitted_attempts_count_against_max_attempts(svc, fake) -> None:
    fake.fail_submit("t", "unknown", job_created=False, times=10)
    task = svc.submit(command=["true"], name="t", max_attempts=1)
    for _ in range(5):
        svc.sync_cluster("lab")
    t = svc.get(task.id)
    assert t.state == S.FAILED and "never submitted" in (t.reason or "")
    assert len(fake.submitted) == 1


def test_never_submitted_retries_back_off(svc, fake) -> None:
    fake.fail_submit("t", "unknown", job_created=False, times=10)
    task = svc.submit(command=["true"], name="t", max_attempts=3)
    svc.sync_cluster("lab")
    svc.sync_cluster("lab")
    t = svc.get(task.id)
    assert t.state == S.RETRYING and (t.next_attempt_at or 0) > time.time() + 1


# ---------------------------------------------------------------- 4. kill is never lost
def test_a_task_cancelled_while_submitting_ends_cancelled(svc, fake) -> None:
    fake.fail_submit("t", "unknown", job_created=False)
    task = svc.submit(command=["true"], name="t")
    (res,) = svc.kill([task.id])
    assert res.recorded
    for _ in range(3):
        svc.sync_cluster("lab")
    t = svc.get(task.id)
    assert t.state == S.CANCELLED and len(fake.submitted) == 1


def test_a_task_cancelled_while_submitting_has_its_late_job_cancelled(svc, fake) -> None:
    fake.fail_submit("t", "unknown", job_created=True)
    task = svc.submit(command=["sleep", "1000"], name="t")
    svc.kill([task.id])
    for _ in range(3):
        svc.sync_cluster("lab")
    assert fake.job("t").cancelled
    assert svc.get(task.id).state == S.CANCELLED


def test_kill_retries_when_a_sync_moves_the_task_first(svc, fake) -> None:
    task = svc.submit(command=["true"], name="t", max_attempts=2, retry_on=["failed"])
    fake.set_state("t", 1, S.FAILED, exit_code=1)
    rt = svc.runtime
    real = rt.try_transition
    raced = []

    def sync_wins_once(task_id, old, new, detail, **kw):
        if new == S.CANCELLED and not raced:
            raced.append(1)
            svc.registry.update_task(task_id, {"next_attempt_at": 0})
            svc.sync_cluster("lab")  # retrying -> submitting -> queued under kill's feet
        return real(task_id, old, new, detail, **kw)

    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.RETRYING
    rt.try_transition = sync_wins_once  # type: ignore[method-assign]
    (res,) = svc.kill([task.id])
    rt.try_transition = real  # type: ignore[method-assign]
    assert raced and res.recorded
    fake.set_state("t", 2, S.QUEUED)
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.CANCELLED


# ---------------------------------------------------------------- 9. held and launch failures
def test_held_jobs_show_as_held_and_come_back(svc, fake) -> None:
    task = svc.submit(command=["true"], name="t")
    fake.set_state("t", 1, S.HELD, reason="JobHeldUser")
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.HELD
    assert svc.info(task.id)["state"] == "held"
    fake.set_state("t", 1, S.RUNNING)
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.RUNNING


def test_a_launch_failure_held_by_slurm_is_cancelled_and_retried_on_another_node(svc, fake) -> None:
    task = svc.submit(command=["true"], name="t")
    fake.set_state("t", 1, S.NODE_FAILED, nodes="c[01-02]", extra={"node_names": ("c01", "c02")},
                   job_alive=True, reason="launch failed requeued held")  # fmt: skip
    svc.sync_cluster("lab")
    t = svc.get(task.id)
    assert t.state == S.NODE_FAILED and t.excluded_nodes == ("c01", "c02")
    assert fake.job("t", 1).cancelled, "the held job must go before a new attempt"
    svc.registry.update_task(task.id, {"next_attempt_at": 0})
    svc.sync_cluster("lab")
    assert fake.submitted[-1].exclude_nodes == ("c01", "c02")


# ---------------------------------------------------------------- 12/13. one bad thing
def test_one_task_that_breaks_the_cycle_is_recorded_and_the_others_go_on(svc, fake) -> None:
    good = svc.submit(command=["true"], name="good", outputs=["out.txt"])
    bad = svc.submit(command=["true"], name="bad", outputs=["out.txt"])
    fake.set_state("good", None, S.SUCCEEDED)
    fake.set_state("bad", None, S.SUCCEEDED)
    fake.set_outputs("good", {"out.txt": "ok"})
    real_fetch = fake.fetch_outputs_many

    class Boom:  # a result whose handling breaks, for that one task
        def __iter__(self):
            raise RuntimeError("boom in fetch")

    def fetch(tasks, dests):
        got = real_fetch(tasks, dests)
        return {tid: Boom() if tid == bad.id else files for tid, files in got.items()}

    fake.fetch_outputs_many = fetch  # type: ignore[method-assign]
    report = svc.sync_cluster("lab")
    assert svc.get(good.id).state == S.SUCCEEDED
    b = svc.get(bad.id)
    assert b.state == S.FETCHING and "boom in fetch" in (b.reason or "")
    assert any("boom in fetch" in e.detail for e in svc.events(bad.id))
    assert any("boom in fetch" in e for e in report.errors)


@pytest.mark.parametrize("pattern", ["./", ".", "", "/etc/passwd", "../x", "a/../../b"])
def test_output_patterns_naming_the_work_dir_or_outside_it_are_refused(svc, pattern) -> None:
    with pytest.raises(UsageError, match="output pattern"):
        svc.submit(command=["true"], outputs=[pattern])
    assert svc.list_tasks() == []


def test_missing_outputs_use_the_output_matcher_and_can_fail_the_task(svc, fake) -> None:
    soft = svc.submit(command=["true"], name="soft", outputs=["results/*.h5", "log.txt"])
    hard = svc.submit(command=["true"], name="hard", outputs=["*.h5"], require_outputs=True)
    fake.set_state("soft", None, S.SUCCEEDED)
    fake.set_state("hard", None, S.SUCCEEDED)
    fake.set_outputs("soft", {"results/a.h5": "x"})
    svc.sync_cluster("lab")
    s, h = svc.get(soft.id), svc.get(hard.id)
    assert s.state == S.SUCCEEDED and "['log.txt']" in (s.reason or "") and "warning" in (s.reason or "")
    assert h.state == S.FAILED and "outputs missing" in (h.reason or "")


def test_a_cluster_that_left_the_config_is_reported_and_the_others_sync(tmp_path, fake) -> None:
    svc = make_service(tmp_path, fake)
    task = svc.submit(command=["true"])
    svc.close()
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000}
    config = parse_config({"default_cluster": "other", "clusters": {"other": table}})
    other = FakeBackend()
    svc = Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"other": other}))
    other_task = svc.submit(command=["true"])
    reports = {r.cluster: r for r in svc.sync()}
    assert "not in the config" in reports["lab"].errors[0]
    assert reports["other"].ok and other.calls_to("poll")
    assert svc.info(task.id)["state"] == "queued"  # still readable
    assert svc.get(other_task.id).state == S.QUEUED
    svc.close()


# ---------------------------------------------------------------- 15. the API from any thread
def test_a_task_handle_works_from_another_thread(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "api.db"))
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    hpcbridge.configure()
    task = hpcbridge.submit(["true"])
    seen: list[object] = []

    def worker() -> None:
        try:
            seen.append(task.status)
            task.metadata["from"] = "thread"
        except Exception as exc:  # noqa: BLE001 - reported below
            seen.append(exc)

    th = threading.Thread(target=worker)
    th.start()
    th.join(30)
    assert seen and isinstance(seen[0], TaskState), seen
    assert task.metadata["from"] == "thread"
    task.wait(timeout=30)


# ---------------------------------------------------------------- diagnostics kept
def test_a_failed_attempt_keeps_its_log_tails_once(svc, fake) -> None:
    task = svc.submit(command=["python3", "sim.py"], name="t", max_attempts=1)
    fake.set_log("t", 1, "stderr", "reading mesh\nerror: mesh.h5: No such file or directory\n")
    fake.set_log("t", 1, "stdout", "step 1\n")
    fake.set_state("t", 1, S.FAILED, exit_code=2, nodes="node3")
    svc.sync_cluster("lab")
    (att,) = svc.attempts(task.id)
    assert att.stderr_tail and "No such file" in att.stderr_tail and att.stdout_tail == "step 1\n"
    fail = svc.info(task.id, lines=1)["failure"]
    assert {k: fail[k] for k in ("attempt", "exit", "node", "stream", "tail")} == {
        "attempt": 1, "exit": "exit code 2", "node": "node3", "stream": "stderr",
        "tail": ["error: mesh.h5: No such file or directory"]}  # fmt: skip
    assert "exit code 2" in fail["summary"] and "mesh.h5" in (fail["hint"] or ""), fail
    reads = len(fake.calls_to("read_log"))
    svc.sync_cluster("lab")
    assert len(fake.calls_to("read_log")) == reads, "fetched once, when the attempt ended"


def test_a_signal_is_decoded_and_stdout_stands_in_for_an_empty_stderr(svc, fake) -> None:
    task = svc.submit(command=["true"], name="t", max_attempts=1)
    fake.set_log("t", 1, "stdout", "allocating\n")
    fake.set_state("t", 1, S.FAILED, exit_code=0, signal=9)
    svc.sync_cluster("lab")
    fail = svc.info(task.id)["failure"]
    assert fail["exit"] == "killed by signal 9 (SIGKILL)" and fail["stream"] == "stdout"
    assert fail["tail"] == ["allocating"]


# ---------------------------------------------------------------- monitoring wiring
class MonitoredFake(FakeBackend):
    """FakeBackend plus the monitoring capability, answering from dicts the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.usage_by_job: dict[str, dict] = {}
        self.queue_by_job: dict[str, dict] = {}
        self.monitor_calls: list[str] = []

    def usage(self, requests):
        self.monitor_calls.append("usage")
        return {r.token: self.usage_by_job[r.job_id] for r in requests if r.job_id in self.usage_by_job}

    def queue_insight(self, requests, partitions):
        self.monitor_calls.append("queue")
        return {r.token: self.queue_by_job[r.job_id] for r in requests if r.job_id in self.queue_by_job}

    def live_usage(self, requests):
        return {}


USAGE = {"job_id": "1000", "state": "COMPLETED", "cpu_seconds": 30.0, "max_rss_bytes": 300 << 20,
         "cpu_efficiency": 0.25, "mem_efficiency": 0.29, "time_efficiency": 0.05, "core_hours": 0.033,
         "alloc_cpus": 4, "alloc_mem_bytes": 1 << 30, "elapsed_seconds": 30, "timelimit_seconds": 600}  # fmt: skip


def test_usage_is_collected_once_when_final_and_shown_with_warnings(tmp_path) -> None:
    fake = MonitoredFake()
    svc = make_service(tmp_path, fake)
    task = svc.submit(command=["true"], name="t")
    fake.set_state("t", 1, S.SUCCEEDED)
    svc.sync_cluster("lab")  # accounting not final yet: nothing stored, asked again
    assert svc.attempts(task.id)[0].usage is None and fake.monitor_calls == ["usage"]
    fake.usage_by_job["1000"] = USAGE
    svc.sync_cluster("lab")
    assert svc.attempts(task.id)[0].usage == USAGE
    use = svc.info(task.id)["usage"]
    assert use["cpu_efficiency"] == 0.25 and "CPU 25% of 4 core(s)" in use["summary"]
    assert any("CPU" in w for w in use["warnings"]) and any("memory" in w.lower() for w in use["warnings"])
    calls = list(fake.monitor_calls)
    svc.sync_cluster("lab")
    assert fake.monitor_calls == calls, "no accounting call once every ended job has its usage"
    svc.close()


def test_queued_tasks_get_their_wait_explained_in_one_call_per_cycle(tmp_path) -> None:
    fake = MonitoredFake()
    svc = make_service(tmp_path, fake)
    a = svc.submit(command=["true"], name="a")
    b = svc.submit(command=["true"], name="b")
    for job in ("1000", "1001"):
        fake.queue_by_job[job] = {"reason": "Resources", "explanation": "waiting for resources",
                                  "action": "wait", "position": 2, "of": 5, "estimated_start": 2e9}  # fmt: skip
    svc.sync_cluster("lab")
    assert fake.monitor_calls == ["queue"]
    q = svc.info(a.id)["queue"]
    assert (q["reason"], q["position"], q["of"]) == ("Resources", 2, 5) and q["estimated_start"]
    assert svc.info(b.id)["queue"]["reason"] == "Resources"
    fake.set_state("a", 1, S.RUNNING)
    svc.sync_cluster("lab")
    assert svc.info(a.id)["queue"] is None  # only a waiting task shows why it waits
    svc.close()


def test_phases_find_where_the_time_went_and_queue_counts_from_eligible(tmp_path) -> None:
    fake = MonitoredFake()
    svc = make_service(tmp_path, fake)
    task = svc.submit(command=["true"], name="t")
    fake.queue_by_job["1000"] = {"reason": "Dependency", "explanation": "x", "action": "y",
                                 "position": None, "of": None, "estimated_start": None}  # fmt: skip
    svc.sync_cluster("lab")
    assert svc.attempts(task.id)[0].eligible_at is None  # held back by a dependency: not in line
    fake.queue_by_job["1000"] = {**fake.queue_by_job["1000"], "reason": "Priority", "position": 1, "of": 1}
    svc.sync_cluster("lab")
    att = svc.attempts(task.id)[0]
    assert att.eligible_at is not None and att.eligible_at >= (att.submitted_at or 0)
    now = time.time()
    fake.set_state("t", 1, S.SUCCEEDED, start_time=now - 20, end_time=now - 5)
    svc.registry.update_attempt(task.id, 1, {"submitted_at": now - 100, "eligible_at": now - 40})
    svc.sync_cluster("lab")
    ph = svc.info(task.id)["phases"]
    (a1,) = ph["attempts"]
    assert a1["eligible_wait"] == pytest.approx(60, abs=0.5) and a1["queue"] == pytest.approx(20, abs=0.5)
    assert a1["run"] == pytest.approx(15, abs=0.5) and a1["fetch"] is not None
    assert ph["dominant"] == "eligible_wait" and ph["total_seconds"] > 0
    svc.close()


# ---------------------------------------------------------------- outputs at scale
def test_the_fetch_step_is_one_batch_per_cluster_per_cycle(svc, fake) -> None:
    tasks = [svc.submit(command=["true"], name=f"f{i}", outputs=["out.txt"]) for i in range(12)]
    for i, t in enumerate(tasks):
        fake.set_state(t.name, None, S.SUCCEEDED)
        fake.set_outputs(t.name, {"out.txt": f"mine {i}"})
    fake.fail_fetch(tasks[3].id)  # its work dir is gone: that task alone fails
    svc.sync_cluster("lab")
    batches = [c for c in fake.calls if c.method == "fetch_outputs_many"]
    assert len(batches) == 1 and {t.id for t in batches[0].args[0]} == {t.id for t in tasks}
    assert not [c for c in fake.calls if c.method == "fetch_outputs"]
    for i, t in enumerate(tasks):
        got = svc.get(t.id)
        if i == 3:
            assert got.state == S.FAILED and "fetching outputs failed" in (got.reason or "")
            continue
        assert got.state == S.SUCCEEDED
        assert (Path(svc.runtime.data_dir) / "outputs" / t.id / "out.txt").read_text() == f"mine {i}"


def test_a_broken_fetch_stream_leaves_every_task_fetching_for_the_next_cycle(svc, fake) -> None:
    tasks = [svc.submit(command=["true"], name=f"b{i}", outputs=["out.txt"]) for i in range(3)]
    for t in tasks:
        fake.set_state(t.name, None, S.SUCCEEDED)
        fake.set_outputs(t.name, {"out.txt": "x"})
    fake.fail("fetch_outputs_many", TransportError("stream ended early"))
    report = svc.sync_cluster("lab")
    assert all(svc.get(t.id).state == S.FETCHING for t in tasks)
    assert any("stream ended early" in e for e in report.errors)
    svc.sync_cluster("lab")
    assert all(svc.get(t.id).state == S.SUCCEEDED for t in tasks)
