"""Recovery on the real Slurm lab: preemption (REQUEUE and CANCEL), the retry budget, node
failure (Slurm-side requeue and hpcbridge-side resubmission with --exclude) and a checkpoint
signal reaching the simulation. Everything goes through the real sshd and real sync cycles.

The lab is shared: every job submitted here as root is cancelled by its id, and every node
taken down is resumed, in a ``finally``. Tasks use ``--exclusive`` so a fault injected on
"their" node hits no colleague's job and the preempting job has to displace only ours.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Task
from hpcbridge.service import Service

from .conftest import HEAT, drive_until, lab_cmd, states_seen, wait_for

pytestmark = pytest.mark.integration
S = TaskState

HEAT_ARGS = ["python3", "heat2d.py", "--nx", "24", "--ny", "24", "--steps", "400",
             "--sleep-per-step", "0.05", "--checkpoint-every", "20"]  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def root_sbatch(*args: str) -> str:
    """Submit a job as root (not the lab user hpcbridge polls as); return its id."""
    res = _run("sbatch", "--parsable", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split(";")[0]


def root_scancel(*job_ids: str) -> None:
    ids = [j for j in job_ids if j]
    if ids:
        _run("scancel", *ids)


def show_job(job_id: str) -> dict[str, str]:
    """``scontrol -o show job`` as root, as a dict ({} once the job left the controller)."""
    res = _run("scontrol", "-o", "show", "job", job_id)
    out: dict[str, str] = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(\S*)", res.stdout.strip()):
        out.setdefault(m[1], m[2])
    return out


def sacct_states(job_id: str) -> list[str]:
    """Every instance's state of a job as ``sacct -D -X`` shows it, oldest first."""
    res = _run("sacct", "-n", "-P", "-D", "-X", "-o", "State", "-j", job_id)
    return [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]


def heat_task(service: Service, partition: str, name: str, **kw: object) -> Task:
    return service.submit(
        command=HEAT_ARGS, cluster="lab", name=name, partition=partition, inputs=[str(HEAT)],
        outputs=["result.json"], sbatch_options=["--exclusive"], **kw,
    )  # fmt: skip


def wait_running_with_checkpoint(service: Service, task: Task, timeout: float = 90) -> Task:
    """Drive until the task runs and heat2d has written at least one checkpoint (step 40)."""
    running = drive_until(service, task.id, lambda t: t.state == S.RUNNING, timeout, f"{task.name} to run")
    wait_for(lambda: "step 40/" in service.logs(task.id), 30, f"{task.name} to checkpoint")
    return running


def current_attempt(service: Service, task: Task):  # type: ignore[no-untyped-def]
    return service.attempts(task.id)[-1]


def node_of(service: Service, task: Task) -> str:
    att = current_attempt(service, task)
    assert att.nodes and re.fullmatch(r"node\d", att.nodes), att.nodes
    return att.nodes


def result_json(service: Service, task: Task, tmp_path: Path) -> dict[str, object]:
    files = service.download(task.id, tmp_path / f"out-{task.id}")
    [res] = [p for p in files if p.name == "result.json"]
    return json.loads(res.read_text())


def state_events(service: Service, task: Task) -> list[tuple[str, str, str]]:
    return [(e.from_state or "", e.to_state or "", e.detail or "")
            for e in service.events(task.id) if e.kind == "state"]  # fmt: skip


def history(service: Service, task: Task) -> str:
    """Every event and attempt of a task, one per line (for assertion messages)."""
    lines = [f"{e.kind} {e.from_state or ''}->{e.to_state or ''} a{e.attempt}: {e.detail}"
             for e in service.events(task.id)]  # fmt: skip
    lines += [f"attempt {a.number}: job {a.job_id} {a.state} restarts={a.restarts} nodes={a.nodes} "
              f"exit={a.exit_code} sig={a.signal} reason={a.reason}" for a in service.attempts(task.id)]  # fmt: skip
    return "\n" + "\n".join(lines)


def preempt(node: str) -> str:
    """A high-priority job that needs ``node`` whole: preempts whatever low job is on it."""
    return root_sbatch("-p", "high", "-w", node, "--exclusive", "-t", "2", "-J", "hpcb-test-preemptor",
                       "-o", "/dev/null", "--wrap", "sleep 5")  # fmt: skip


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Root job ids to cancel at the end of the test."""
    ids: list[str] = []
    yield ids
    root_scancel(*ids)


# --------------------------------------------------------------------------- preemption


def test_preempted_requeue_mode_same_attempt_resumes_from_checkpoint(
    service: Service, cleanup: list[str], tmp_path: Path
) -> None:  # fmt: skip
    task = heat_task(service, "low", "preempt-requeue")
    wait_running_with_checkpoint(service, task)
    att = current_attempt(service, task)
    job_id, node = att.job_id, node_of(service, task)
    assert job_id
    cleanup.append(preempt(node))
    # Slurm requeues the victim itself: PREEMPTED never shows in squeue; the restart count goes
    # up on the same job id and sacct -D names the earlier instance PREEMPTED.
    back = drive_until(service, task.id, lambda t: "preempted" in states_seen(service, t), 60,
                       "the preemption to be recorded")  # fmt: skip
    assert back.state in (S.QUEUED, S.RUNNING), back.state
    done = drive_until(service, task.id, lambda t: t.state.terminal, 120, "the task to finish")
    assert done.state == S.SUCCEEDED, history(service, done)
    print(history(service, done))  # shown with -rP: what Slurm and hpcbridge did

    events = state_events(service, done)
    seen = [to for _, to, _ in events]
    i = seen.index("preempted")
    assert seen[i - 1] == "running" and seen[i + 1] == "queued", history(service, done)
    detail = events[i][2]
    assert "PREEMPTED" in detail and "requeued by Slurm" in detail and job_id in detail, detail
    assert seen[i + 1:].count("running") >= 1 and seen[-2:] == ["fetching", "succeeded"], seen
    [only] = service.attempts(task.id)
    assert done.attempt_count == 1
    assert only.job_id == job_id and only.restarts >= 1, only
    assert sacct_states(job_id)[0] == "PREEMPTED", sacct_states(job_id)
    result = result_json(service, done, tmp_path)
    assert result["final_step"] == 400 and int(result["resumes"]) >= 1, result  # type: ignore[call-overload]
    assert "resumed from checkpoint at step" in service.logs(task.id)


def test_preempted_cancel_mode_new_attempt_same_work_dir(
    service: Service, cleanup: list[str], tmp_path: Path
) -> None:  # fmt: skip
    task = heat_task(service, "lowc", "preempt-cancel", max_attempts=3)
    wait_running_with_checkpoint(service, task)
    first = current_attempt(service, task)
    work_dir = service.get(task.id).work_dir
    cleanup.append(preempt(node_of(service, task)))
    # PreemptMode=CANCEL: the job ends PREEMPTED for good; hpcbridge waits out the backoff
    # (5 s) and submits attempt 2 in the same work dir, where the checkpoint is.
    waiting = drive_until(service, task.id, lambda t: t.state != S.RUNNING, 60, "the preemption")
    assert waiting.state in (S.COMPLETING, S.PREEMPTED), history(service, waiting)
    waiting = drive_until(service, task.id, lambda t: t.state == S.PREEMPTED, 30, "preempted")
    assert waiting.next_attempt_at and waiting.next_attempt_at > time.time() - 2, history(service, waiting)
    assert "attempt 2 of 3 due" in (waiting.reason or ""), waiting.reason
    done = drive_until(service, task.id, lambda t: t.state.terminal, 150, "the task to finish")
    assert done.state == S.SUCCEEDED, history(service, done)
    print(history(service, done))  # shown with -rP: what Slurm and hpcbridge did

    seen = states_seen(service, done)
    i = seen.index("preempted")
    assert seen[i:i + 3] == ["preempted", "submitting", "queued"], history(service, done)
    a1, a2 = service.attempts(task.id)
    assert done.attempt_count == 2
    assert a1.job_id == first.job_id and a1.state == S.PREEMPTED and a1.restarts == 0, history(service, done)
    assert a2.job_id and a2.job_id != a1.job_id and a2.state == S.SUCCEEDED, history(service, done)
    assert done.work_dir == work_dir
    assert sacct_states(a1.job_id or "") == ["PREEMPTED"]
    # The backoff was respected: attempt 2 was created no sooner than 5 s after the preemption.
    pre_at = next(e.at for e in service.events(task.id) if e.to_state == "preempted")
    assert a2.created_at and a2.created_at - pre_at >= 4.5, (a2.created_at, pre_at)
    result = result_json(service, done, tmp_path)
    assert result["final_step"] == 400 and int(result["resumes"]) >= 1, result  # type: ignore[call-overload]
    assert "resumed from checkpoint at step" in service.logs(task.id, attempt=2)


def test_preempted_with_no_retry_left_fails_naming_the_cause(service: Service, cleanup: list[str]) -> None:
    task = heat_task(service, "lowc", "preempt-budget", max_attempts=1)
    wait_running_with_checkpoint(service, task)
    cleanup.append(preempt(node_of(service, task)))
    done = drive_until(service, task.id, lambda t: t.state.terminal, 60, "the task to end")
    assert done.state == S.FAILED, history(service, done)
    print(history(service, done))
    assert "preempted" in (done.reason or "") and "retries exhausted (1 of 1)" in (done.reason or ""), done.reason
    seen = states_seen(service, done)
    assert seen[-2:] == ["preempted", "failed"], seen
    [only] = service.attempts(task.id)
    assert only.state == S.PREEMPTED and only.job_id, history(service, done)
    assert done.attempt_count == 1 and done.next_attempt_at is None
    # Nothing further is submitted: another cycle leaves the task and its attempts alone.

    service.sync_cluster("lab")
    assert len(service.attempts(task.id)) == 1 and service.get(task.id).state == S.FAILED


# --------------------------------------------------------------------------- node failure


@pytest.fixture
def downed() -> Iterator[list[str]]:
    """Nodes taken down by the test; always resumed."""
    nodes: list[str] = []
    yield nodes
    for node in nodes:
        lab_cmd("node-resume", node)


def test_node_failure_slurm_requeues_and_task_resumes_elsewhere(
    service: Service, downed: list[str], tmp_path: Path
) -> None:  # fmt: skip
    task = heat_task(service, "debug", "node-fail")
    wait_running_with_checkpoint(service, task)
    job_id, node = current_attempt(service, task).job_id, node_of(service, task)
    assert job_id
    downed.append(node)
    lab_cmd("node-down", node)
    back = drive_until(service, task.id, lambda t: "node_failed" in states_seen(service, t), 60,
                       "the node failure to be recorded")  # fmt: skip
    assert node in back.excluded_nodes, history(service, back)
    done = drive_until(service, task.id, lambda t: t.state.terminal, 120, "the task to finish")
    assert done.state == S.SUCCEEDED, history(service, done)
    print(history(service, done))  # shown with -rP: what Slurm and hpcbridge did

    events = state_events(service, done)
    seen = [to for _, to, _ in events]
    i = seen.index("node_failed")
    assert seen[i - 1] == "running" and seen[i + 1] == "queued", history(service, done)
    assert "NODE_FAIL" in events[i][2] and "requeued by Slurm" in events[i][2], events[i]
    [only] = service.attempts(task.id)
    assert only.job_id == job_id and only.restarts >= 1, history(service, done)
    assert only.nodes and only.nodes != node, history(service, done)  # ran again elsewhere
    assert sacct_states(job_id)[0] == "NODE_FAIL", sacct_states(job_id)
    assert node in done.excluded_nodes
    result = result_json(service, done, tmp_path)
    assert result["final_step"] == 400 and int(result["resumes"]) >= 1, result  # type: ignore[call-overload]


def test_node_failure_without_slurm_requeue_resubmits_excluding_the_node(
    service: Service, downed: list[str], tmp_path: Path
) -> None:  # fmt: skip
    task = heat_task(service, "debug", "node-fail-noreq", requeue=False, max_attempts=2)
    wait_running_with_checkpoint(service, task)
    first_job, node = current_attempt(service, task).job_id, node_of(service, task)
    assert first_job
    downed.append(node)
    lab_cmd("node-down", node)
    failed = drive_until(service, task.id, lambda t: t.state == S.NODE_FAILED, 60, "node_failed")
    assert failed.excluded_nodes == (node,), history(service, failed)
    second = drive_until(service, task.id, lambda t: t.attempt_count == 2 and t.state in (S.QUEUED, S.RUNNING),
                         60, "attempt 2 to be queued")  # fmt: skip
    a2 = current_attempt(service, second)
    assert a2.job_id and a2.job_id != first_job
    assert show_job(a2.job_id).get("ExcNodeList") == node, show_job(a2.job_id)
    done = drive_until(service, task.id, lambda t: t.state.terminal, 120, "the task to finish")
    assert done.state == S.SUCCEEDED, history(service, done)
    print(history(service, done))  # shown with -rP: what Slurm and hpcbridge did
    a1, a2 = service.attempts(task.id)
    assert a1.state == S.NODE_FAILED and a1.restarts == 0, history(service, done)
    assert a2.nodes and a2.nodes != node and a2.state == S.SUCCEEDED, history(service, done)
    assert sacct_states(first_job) == ["NODE_FAIL"]
    seen = states_seen(service, done)
    i = seen.index("node_failed")
    assert seen[i - 1:i + 3] == ["running", "node_failed", "submitting", "queued"], seen
    result = result_json(service, done, tmp_path)
    assert int(result["resumes"]) >= 1, result  # type: ignore[call-overload]


# --------------------------------------------------------------------------- signals


def test_checkpoint_signal_reaches_the_simulation(service: Service) -> None:
    """``scancel --signal=USR1 --batch`` hits the batch shell, which passes it on to heat2d:
    it checkpoints and exits 128+10 (a failure the default policy does not retry)."""
    task = heat_task(service, "debug", "usr1")
    wait_running_with_checkpoint(service, task)
    job_id = current_attempt(service, task).job_id
    assert job_id
    res = _run("scancel", "--signal=USR1", "--batch", job_id)
    assert res.returncode == 0, res.stderr
    done = drive_until(service, task.id, lambda t: t.state.terminal, 60, "the task to end")
    log = service.logs(task.id)
    m = re.search(r"checkpointed at step (\d+) on signal (?:SIG)?USR1", log)
    assert m and 40 <= int(m[1]) < 400, log[-2000:]
    assert done.state == S.FAILED and done.exit_code == 138, history(service, done)
    assert len(service.attempts(task.id)) == 1


def test_slurmd_killed_job_requeued_after_slurmd_timeout(service: Service, tmp_path: Path) -> None:
    """A dead slurmd (the node stops answering): Slurm declares the node down after
    SlurmdTimeout (~30 s here) and requeues the job (NODE_FAIL), as with a node set down.

    Measured: the job's processes outlive slurmd (its slurmstepd keeps running and reports the
    job's end to slurmctld itself) - a 30 s run finished and ended COMPLETED before Slurm
    noticed. So the first instance runs slowly (~120 s) and the requeued one fast; slurmd
    comes back as soon as the requeue is seen: on registering, slurmctld has the stale
    instance killed ("Registered PENDING JobId=... on node") before the new one may start
    (11 s later), so exactly one instance finishes, resumed from a mid-run checkpoint."""
    script = (
        'pace=0.1; [ "${SLURM_RESTART_COUNT:-0}" = 0 ] || pace=0.02\n'
        "exec python3 heat2d.py --nx 24 --ny 24 --steps 1200 --checkpoint-every 20 --sleep-per-step $pace\n"
    )
    task = service.submit(script=script, cluster="lab", name="slurmd-kill", partition="debug",
                          inputs=[str(HEAT)], outputs=["result.json"], sbatch_options=["--exclusive"])  # fmt: skip
    wait_running_with_checkpoint(service, task)
    job_id, node = current_attempt(service, task).job_id, node_of(service, task)
    assert job_id
    lab_cmd("slurmd-kill", node)
    try:
        failed = drive_until(service, task.id, lambda t: "node_failed" in states_seen(service, t), 90,
                             "Slurm to notice the dead slurmd")  # fmt: skip
    finally:
        # Back at once: on registering, the old instance (its slurmstepd outlived slurmd) is
        # killed by slurmctld as no longer belonging there.
        lab_cmd("slurmd-start", node)
        lab_cmd("node-resume", node)
    assert node in failed.excluded_nodes, history(service, failed)
    done = drive_until(service, task.id, lambda t: t.state.terminal, 120, "the task to finish")
    assert done.state == S.SUCCEEDED, history(service, done)
    print(history(service, done))
    seen = states_seen(service, done)
    i = seen.index("node_failed")
    assert seen[i - 1:i + 2] == ["running", "node_failed", "queued"], seen
    [only] = service.attempts(task.id)
    assert only.job_id == job_id and only.restarts >= 1
    assert sacct_states(job_id)[0] == "NODE_FAIL", sacct_states(job_id)
    result = result_json(service, done, tmp_path)
    assert result["final_step"] == 1200 and int(result["resumes"]) >= 1, result  # type: ignore[call-overload]
    log = service.logs(task.id)
    m = re.search(r"resumed from checkpoint at step (\d+)", log)
    assert m and 40 <= int(m[1]) < 1200, log[-3000:]
    assert log.count("done: step 1200") == 1, log[-3000:]  # the stale instance never finished
