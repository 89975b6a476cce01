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
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Task
from hpcbridge.service import Service

from .conftest import HEAT, drive_until, states_seen, wait_for

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
