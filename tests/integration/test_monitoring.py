"""Monitoring on the real lab (issue "monitoring"): usage that agrees with sacct, live usage
while it runs, why a task waits behind a job that holds every node, and a failure's last
stderr line in `tasks info` and `tasks wait`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service
from hpcbridge.slurm.usage import parse_duration, parse_size

from .conftest import drive_until, wait_for

pytestmark = pytest.mark.integration
S = TaskState

HOG = ("import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); t = time.time()\n"
       "while time.time() - t < 8: pass\n")  # fmt: skip


def sacct_row(job_id: str, fields: str) -> list[dict[str, str]]:
    res = subprocess.run(["sacct", "-j", job_id, "-n", "-P", f"--format={fields}"],
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    names = fields.split(",")
    return [dict(zip(names, line.split("|"), strict=False)) for line in res.stdout.splitlines() if line]


def test_usage_agrees_with_sacct_and_top_shows_rss_while_it_runs(service: Service) -> None:
    task = service.submit(command=["python3", "-c", HOG], cluster="lab", mem="1G", cpus=1, time="00:05:00")
    drive_until(service, task.id, lambda t: t.state == S.RUNNING or t.state.terminal, 60, "the hog to run")
    samples = []

    def big_rss() -> bool:
        top = service.top(task.id)
        samples.append(top)
        return (top.get("rss_bytes") or 0) > 200 * 2**20 or top["state"] != "running"

    wait_for(big_rss, 30, "sstat to show the hog's memory")
    top = samples[-1]
    assert top["rss_bytes"] > 200 * 2**20 and top["alloc_mem_bytes"] == 2**30, top
    assert top["cpu_percent"] is not None and top["sampled_at"], top

    done = drive_until(service, task.id, lambda t: t.state.terminal, 120, "the hog to end")
    assert done.state == S.SUCCEEDED, done.reason
    att = drive_until(service, task.id, lambda t: bool(service.attempts(t.id)[-1].usage), 60,
                      "usage to be recorded") and service.attempts(task.id)[-1]  # fmt: skip
    usage = att.usage or {}
    rows = sacct_row(str(att.job_id), "JobID,MaxRSS,TotalCPU,Elapsed,AllocCPUS")
    peak = max(parse_size(r["MaxRSS"], unit="K") or 0 for r in rows)
    assert usage["max_rss_bytes"] >= peak > 250 * 2**20, (usage, rows)
    alloc = next(r for r in rows if r["JobID"] == att.job_id)
    expected = (parse_duration(alloc["TotalCPU"]) or 0) / ((parse_duration(alloc["Elapsed"]) or 1) * int(alloc["AllocCPUS"]))
    assert usage["cpu_efficiency"] == pytest.approx(expected, rel=0.02), (usage, alloc)
    info = service.info(task.id)
    assert info["usage"]["max_rss_bytes"] == usage["max_rss_bytes"] and "CPU" in info["usage"]["summary"]


def test_a_task_behind_a_job_holding_every_node_shows_why_and_when(service: Service) -> None:
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", "-N3", "-p", "debug", "-t", "5",
                              "-J", "hpcb-test-blocker", "-o", "/dev/null", "--wrap", "sleep 300"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()  # fmt: skip
    try:
        wait_for(lambda: "RUNNING" in subprocess.run(["squeue", "-h", "-j", blocker, "-o", "%T"],
                 capture_output=True, text=True, timeout=30).stdout, 60, "the blocker to run")  # fmt: skip
        task = service.submit(command=["true"], cluster="lab", time="00:01:00")

        def explained(t) -> bool:
            q = service.info(t.id)["queue"] or {}
            return bool(q.get("estimated_start")) and q.get("position") is not None

        drive_until(service, task.id, explained, 90, "a reason, a position and an estimated start")
        q = service.info(task.id)["queue"]
        assert q["reason"] in ("Resources", "Priority"), q
        assert q["explanation"] and q["action"] and q["position"] >= 1 and q["of"] >= q["position"]
        shown = subprocess.run([sys.executable, "-m", "hpcbridge", "tasks", "info", task.id],
                               capture_output=True, text=True, timeout=60, env=dict(os.environ))  # fmt: skip
        assert f"waiting   {q['reason']}:" in shown.stdout and "position" in shown.stdout, shown.stdout
    finally:
        subprocess.run(["scancel", blocker], timeout=30)


def test_an_error_line_and_exit_2_show_in_info_and_wait(service: Service, lab_config: Path) -> None:
    script = "import sys; print('reading mesh'); sys.stderr.write('error: mesh.h5 is corrupt\\n'); sys.exit(2)"
    task = service.submit(command=["python3", "-c", script], cluster="lab")
    res = subprocess.run([sys.executable, "-m", "hpcbridge", "tasks", "wait", task.id, "--timeout", "120"],
                         capture_output=True, text=True, timeout=180, env=dict(os.environ))  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert f"{task.id} failed" in res.stdout
    assert "exit code 2" in res.stderr and "error: mesh.h5 is corrupt" in res.stderr, res.stderr
    info = json.loads(subprocess.run([sys.executable, "-m", "hpcbridge", "tasks", "info", task.id, "--json"],
                                     capture_output=True, text=True, timeout=60, env=dict(os.environ)).stdout)  # fmt: skip
    assert info["failure"]["tail"][-1] == "error: mesh.h5 is corrupt"
    assert info["failure"]["exit"] == "exit code 2" and info["failure"]["hint"]
