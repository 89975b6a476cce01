"""Tasks on the real Slurm lab, reached through the real sshd: every outcome end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hpcbridge.errors import SchedulerUnavailable
from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import HEAT, drive_until, lab_cmd, states_seen, wait_for

pytestmark = pytest.mark.integration
S = TaskState


def test_demo_simulation_queued_running_succeeded_with_outputs(service: Service, tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"nx": 24, "ny": 24, "steps": 400}))
    task = service.submit(
        command=["python3", "heat2d.py", "--params", "params.json", "--sleep-per-step", "0.005"],
        cluster="lab", name="heat", inputs=[str(HEAT), str(params)],
        outputs=["result.json", "field.csv"], metadata={"study": "lab"},
    )  # fmt: skip
    assert task.state == S.QUEUED
    running = drive_until(service, task.id, lambda t: t.state in (S.RUNNING, S.FETCHING, S.SUCCEEDED),
                          60, "the job to start")  # fmt: skip
    done = drive_until(service, task.id, lambda t: t.state.terminal, 90, "the job to end")
    assert done.state == S.SUCCEEDED, done.reason
    seen = states_seen(service, done)
    assert seen[:4] == ["created", "staging", "submitting", "queued"]
    assert "running" in seen or running.state != S.RUNNING
    assert seen[-2:] == ["fetching", "succeeded"]
    [attempt] = service.attempts(task.id)
    assert attempt.job_id and attempt.job_id.isdigit()
    assert attempt.nodes and attempt.nodes.startswith("node")
    assert attempt.partition == "debug"
    assert attempt.exit_code == 0
    assert done.started_at and done.ended_at and done.submitted_at and done.fetched_at
    files = service.download(task.id, tmp_path / "out")
    assert sorted(p.name for p in files) == ["field.csv", "result.json"]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["steps"] == 400 and result["nx"] == 24
    assert "done: step 400" in service.logs(task.id)


def test_outcomes_failed_cancelled_timeout_memory(service: Service) -> None:
    """One batch so the slow ones (time limit ~60-80 s) overlap."""
    tasks = service.submit_many([
        dict(command=["python3", "-c", "import sys; print('bye'); sys.exit(3)"], cluster="lab", name="exit3"),
        dict(command=["sleep", "300"], cluster="lab", name="cancel-me"),
        dict(command=["sleep", "300"], cluster="lab", name="too-long", time="1"),
        dict(command=["python3", "-c", "import time; b = bytearray(600 * 2**20); time.sleep(30)"],
             cluster="lab", name="hog", mem="100M"),
        dict(command=["sh", "-c", "kill -9 $$"], cluster="lab", name="sig9"),
    ])  # fmt: skip
    exit3, cancel, timeout, hog, sig9 = tasks
    assert all(t.state == S.QUEUED for t in tasks), [(t.name, t.state, t.reason) for t in tasks]
    drive_until(service, cancel.id, lambda t: t.state == S.RUNNING, 60, "sleep to run")
    after_kill = service.kill([cancel.id])[0].task
    assert after_kill.state in (S.RUNNING, S.CANCELLED, S.COMPLETING)
    done = service.wait([t.id for t in tasks], timeout=200)
    by_name = {t.name: t for t in done}
    assert by_name["exit3"].state == S.FAILED and by_name["exit3"].exit_code == 3
    assert "exit code 3" in (by_name["exit3"].reason or "")
    assert by_name["cancel-me"].state == S.CANCELLED
    assert by_name["too-long"].state == S.TIMED_OUT
    assert by_name["sig9"].state == S.FAILED
    assert service.attempts(sig9.id)[0].signal == 9 or by_name["sig9"].exit_code not in (None, 0)
    # Without cgroups the lab's OverMemoryKill reports FAILED 0:9, not OUT_OF_MEMORY
    # (docs/LAB.md); with cgroup enforcement it is OUT_OF_MEMORY. Either way not success.
    assert by_name["hog"].state in (S.OUT_OF_MEMORY, S.FAILED), by_name["hog"].state
    assert service.logs(exit3.id).strip() == "bye"


def test_many_tasks_at_once_one_round_trip(service: Service) -> None:
    backend = service.backend("lab")
    stats = backend.transport.stats  # type: ignore[attr-defined]
    before = stats.round_trips
    tasks = service.submit_many(
        [dict(command=["echo", f"task {i}"], cluster="lab", name=f"many-{i}") for i in range(25)]
    )
    # mkdir for all work dirs + the submission script (+ the remote home lookup once).
    assert stats.round_trips - before <= 3, stats.as_dict()
    assert len({t.id for t in tasks}) == 25 and all(t.state == S.QUEUED for t in tasks)
    polls_before = backend.commands  # type: ignore[attr-defined]
    done = service.wait([t.id for t in tasks], timeout=120)
    assert all(t.state == S.SUCCEEDED for t in done), [(t.id, t.state, t.reason) for t in done]
    job_ids = {service.attempts(t.id)[0].job_id for t in tasks}
    assert len(job_ids) == 25
    # Each cycle costs at most squeue + sacct, whatever the number of tasks.
    cycles = sum(1 for t in done for e in service.events(t.id) if e.to_state == "succeeded")
    assert cycles == 25
    assert backend.commands - polls_before < 2 * 25  # type: ignore[attr-defined]


def test_hostile_name_input_and_arguments_over_ssh(service: Service, tmp_path: Path) -> None:
    weird = "in put 'q' \"d\" $(touch pwned) `touch pwned2`; ü ✓.txt"
    src = tmp_path / weird
    src.write_text("payload\n")
    args = ["a'; touch pwned3; echo '", "$(touch pwned4)", "ünï cødé", "*", ""]
    task = service.submit(command=["python3", "-c",
                                   "import sys, json; print(json.dumps(sys.argv[1:])); print(open(sys.argv[1]).read())",
                                   weird, *args],
                          cluster="lab", name=weird, inputs=[str(src)], outputs=["*.txt"])  # fmt: skip
    done = service.wait([task.id], timeout=90)[0]
    assert done.state == S.SUCCEEDED, done.reason
    first = service.logs(task.id).splitlines()[0]
    assert json.loads(first) == [weird, *args]
    assert done.name == weird
    listing = service.backend("lab").transport.run(  # type: ignore[attr-defined]
        ["find", service.backend("lab").base_dir(), "-name", "pwned*"]  # type: ignore[attr-defined]
    )
    assert listing.stdout.strip() == ""
    assert not list(Path.cwd().glob("pwned*"))
    files = service.download(task.id, tmp_path / "dl")
    assert [p.name for p in files] == [weird]


def test_script_task_and_env(service: Service) -> None:
    script = "#!/bin/bash\necho \"value=$MY_VAR\"\necho \"cwd=$(basename \"$PWD\")\"\n"
    task = service.submit(script=script, cluster="lab", env={"MY_VAR": "x y $(z)"})
    done = service.wait([task.id], timeout=60)[0]
    assert done.state == S.SUCCEEDED, done.reason
    out = service.logs(task.id)
    assert "value=x y $(z)" in out
    assert f"cwd={task.id}" in out


def test_rejected_submission_fails_alone(service: Service) -> None:
    tasks = service.submit_many([
        dict(command=["true"], cluster="lab", partition="no-such-partition"),
        dict(command=["true"], cluster="lab"),
    ])  # fmt: skip
    bad, good = tasks
    assert bad.state == S.FAILED
    assert "invalid partition" in (bad.reason or "").lower()
    assert good.state == S.QUEUED
    assert service.wait([good.id], timeout=60)[0].state == S.SUCCEEDED


def test_cli_end_to_end_over_ssh(lab_config: Path, tmp_path: Path) -> None:
    env = {"HPCBRIDGE_CONFIG": str(lab_config), "HPCBRIDGE_DB": str(tmp_path / "cli.db"), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "hpcbridge", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=120)  # fmt: skip
    sub = run("submit", "--cluster", "lab", "--partition", "debug", "--time", "2", "--name", "cli",
              "--wait", "--", "sh", "-c", "echo out; echo err >&2")  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip().splitlines()[-1]
    info = json.loads(run("tasks", "info", task_id, "--json").stdout)
    assert info["state"] == "succeeded"
    assert info["attempts"][0]["job_id"].isdigit()
    assert info["attempts"][0]["nodes"].startswith("node")
    assert run("logs", task_id).stdout == "out\n"
    assert run("logs", task_id, "--stderr").stdout == "err\n"
    human = run("tasks", "info", task_id).stdout
    assert "job " in human and "queued" in human and "succeeded" in human


def test_slurmctld_down_changes_nothing_then_catches_up(service: Service) -> None:
    task = service.submit(command=["sleep", "8"], cluster="lab")
    drive_until(service, task.id, lambda t: t.state == S.RUNNING, 60, "running")
    events_before = len(service.events(task.id))
    lab_cmd("ctld-stop")
    try:
        report = service.sync_cluster("lab")
        assert report.unreachable and "scheduler" in report.unreachable.lower() or report.unreachable
        assert service.get(task.id).state == S.RUNNING
        assert len(service.events(task.id)) == events_before
        with pytest.raises(SchedulerUnavailable):
            service.backend("lab").poll([service.poll_request(service.get(task.id),  # type: ignore[attr-defined]
                                                              service.attempts(task.id)[-1])])  # fmt: skip
    finally:
        lab_cmd("ctld-start")
    done = drive_until(service, task.id, lambda t: t.state.terminal, 90, "catch up")
    assert done.state == S.SUCCEEDED, done.reason


def test_sshd_down_changes_nothing_then_catches_up(service: Service) -> None:
    task = service.submit(command=["sleep", "5"], cluster="lab")
    drive_until(service, task.id, lambda t: t.state == S.RUNNING, 60, "running")
    service.backend("lab").close()  # drop the live connection so the next cycle must reconnect
    lab_cmd("sshd-stop")
    try:
        report = service.sync_cluster("lab")
        assert report.unreachable, report
        assert service.get(task.id).state == S.RUNNING
        # a new task can still be registered; it is submitted once the cluster is back
        queued_later = service.submit(command=["true"], cluster="lab")
        assert queued_later.state == S.CREATED
    finally:
        lab_cmd("sshd-start")
    done = drive_until(service, task.id, lambda t: t.state.terminal, 90, "catch up")
    assert done.state == S.SUCCEEDED
    later = drive_until(service, queued_later.id, lambda t: t.state.terminal, 90, "late submission")
    assert later.state == S.SUCCEEDED


# ------------------------------------------------------------------ Slurm-side truth (issue 9)


@pytest.fixture
def local_service(lab_config: Path, tmp_path: Path) -> Iterator[Service]:
    """A Service whose lab cluster is reached with the local transport: scheduler commands run
    in THIS process's environment, so a test can put a login environment around them."""
    work = tmp_path / "work"
    config = tmp_path / "local.toml"
    config.write_text(
        'default_cluster = "here"\n[clusters.here]\nbackend = "slurm"\ntransport = "local"\n'
        f'work_dir = "{work}"\npartition = "debug"\ntime = "00:05:00"\n'
        "commands_per_minute = 600\n")  # fmt: skip
    svc = Service.open(config, tmp_path / "local.db", source="test")
    yield svc
    active = [t.id for t in svc.list_tasks(states=[s for s in S if not s.terminal])]
    if active:
        try:
            svc.kill(active)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
    svc.close()


def test_login_environment_changes_nothing_submitted_or_read(
    local_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch applies SBATCH_* over the #SBATCH lines and squeue/sacct print what their
    variables say: with a hostile login environment the task still runs where its spec says
    and is read correctly (issue 9 item 6)."""
    for name, value in {
        "SBATCH_PARTITION": "low", "SBATCH_TIMELIMIT": "1", "SBATCH_JOB_NAME": "renamed",
        "SLURM_TIME_FORMAT": "relative", "SQUEUE_FORMAT": "%i %T", "SQUEUE_PARTITION": "high",
        "SQUEUE_SORT": "-i", "SACCT_FORMAT": "JobID", "SLURM_EXIT_ERROR": "7",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    task = local_service.submit(command=["sh", "-c", "echo $SLURM_JOB_PARTITION"], name="env")
    assert task.state == S.QUEUED, task.reason
    done = drive_until(local_service, task.id, lambda t: t.state.terminal, 90, "the job to end")
    assert done.state == S.SUCCEEDED, done.reason
    (attempt,) = local_service.attempts(task.id)
    assert attempt.partition == "debug"
    assert local_service.logs(task.id).strip() == "debug"
    assert done.started_at and done.ended_at  # times were read (not relative, not dropped)

    def accounted() -> str:
        return subprocess.run(["env", "-u", "SACCT_FORMAT", "-u", "SLURM_TIME_FORMAT", "sacct",
                               "-X", "-n", "-P", "-j", str(attempt.job_id), "-o",
                               "Partition,JobName"], capture_output=True, text=True,
                              timeout=30).stdout.strip()  # fmt: skip

    # 22.05's sacct lags with a transient "allocation" row: wait for the job's own row.
    wait_for(lambda: "hpcb-" in accounted(), 30, "sacct's row of the job")
    assert accounted().splitlines()[-1].startswith("debug|hpcb-")


def test_held_job_is_held_and_comes_back_when_released(service: Service) -> None:
    """`sbatch --hold` (an allowed extra option) pends with JobHeldUser: shown as held; after
    `scontrol release` it is queued again and runs (issue 9 item 9)."""
    task = service.submit(command=["true"], cluster="lab", sbatch_options=["--hold"])
    held = drive_until(service, task.id, lambda t: t.state == S.HELD, 60, "held")
    (attempt,) = service.attempts(task.id)
    assert attempt.reason == "JobHeldUser"
    subprocess.run(["scontrol", "release", str(attempt.job_id)], check=True, timeout=30)
    done = drive_until(service, held.id, lambda t: t.state.terminal, 90, "released job to end")
    assert done.state == S.SUCCEEDED, done.reason
    assert "held" in states_seen(service, done)


def test_a_reserved_sbatch_option_is_refused_before_anything_is_registered(service: Service) -> None:
    """Refused at submit (one clear error naming the proper option): nothing registered, no
    job made (the renderer refuses it too, for a task stored by an older version)."""
    from hpcbridge.errors import UsageError

    with pytest.raises(UsageError) as exc:
        service.submit(command=["true"], cluster="lab", sbatch_options=["--comment=mine"])
    assert "--metadata" in (exc.value.hint or "")
    assert service.list_tasks() == []


def test_multi_node_hostlist_is_read_and_excluded_on_retry(service: Service) -> None:
    """A two-node job on node1 and node3 shows NodeList node[1,3]; a retry excluding exactly
    those nodes (as a hostlist, and as the comma-split pieces an older cycle stored) submits
    and lands on node2 (issue 9 item 10)."""
    from hpcbridge.backends.base import SubmitRequest
    from hpcbridge.models import Resources

    task = service.submit(command=["sleep", "2"], cluster="lab",
                          sbatch_options=["--nodes=2", "--exclude=node2"])  # fmt: skip
    running = drive_until(service, task.id, lambda t: t.state in (S.RUNNING, S.COMPLETING)
                          or t.state.terminal, 60, "the two-node job to start")  # fmt: skip
    assert running.state != S.FAILED, running.reason
    backend = service.backend("lab")
    (att,) = service.attempts(task.id)
    info = backend.poll([service.poll_request(service.get(task.id), att)])[att.token]
    assert (info.nodes, info.node_names) == ("node[1,3]", ("node1", "node3"))
    done = drive_until(service, task.id, lambda t: t.state.terminal, 60, "the two-node job to end")
    assert done.state == S.SUCCEEDED, done.reason
    first = service.get(task.id)
    one_node = replace(first, spec=replace(first.spec, resources=Resources()))
    for n, excluded in enumerate([info.node_names, ("node[1", "3]")], start=2):
        retry = SubmitRequest(task=one_node, attempt=n, token=f"{att.token}r{n}",
                              exclude_nodes=tuple(excluded))  # fmt: skip
        (out,) = backend.submit([retry])
        assert out.job_id, out.error
        try:
            got = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                req = replace(service.poll_request(service.get(task.id), att),
                              attempt=n, token=retry.token, job_id=out.job_id)  # fmt: skip
                got = backend.poll([req]).get(retry.token)
                if got and got.nodes:
                    break
                time.sleep(0.5)
            assert got is not None and got.nodes == "node2", got
        finally:
            backend.cancel([replace(service.poll_request(service.get(task.id), att),
                                    attempt=n, token=retry.token, job_id=out.job_id)])  # fmt: skip


def test_cancel_signals_the_task_once(service: Service) -> None:
    """scancel TERMs every process of the job; the wrapper must not add a second TERM while
    the task is checkpointing (issue 9 item 15)."""
    script = ("import signal, sys, time\n"
              "n = 0\n"
              "def h(s, f):\n"
              "    global n\n"
              "    n += 1\n"
              "signal.signal(signal.SIGTERM, h)\n"
              "print('ready', flush=True)\n"
              "t = time.monotonic()\n"
              "while not n and time.monotonic() - t < 120:\n"
              "    time.sleep(0.05)\n"
              "time.sleep(2)  # checkpointing: KillWait (5 s) leaves time for this\n"
              "print('terms', n, flush=True)\n")  # fmt: skip
    task = service.submit(command=["python3", "-c", script], cluster="lab", name="term-once")
    drive_until(service, task.id, lambda t: "ready" in service.logs(t.id), 60, "the task to run")
    service.kill([task.id])
    done = drive_until(service, task.id, lambda t: t.state.terminal, 60, "the cancel")
    assert done.state == S.CANCELLED, done.reason
    wait_for(lambda: "terms" in service.logs(task.id), 30, "the task's last line")
    assert service.logs(task.id).splitlines()[-1] == "terms 1"
