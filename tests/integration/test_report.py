"""`hpcbridge report` on the real Slurm lab, read in a real headless browser: a small sweep
where one task succeeds (with a CPU efficiency low enough to be flagged: 2 CPUs asked, one
sleeping process), one fails writing to stderr, and one is preempted in REQUEUE mode (Slurm
puts the same job back in the queue and runs it again). The report must show all of it, the
page must render with the timeline in its screenshot, and it must load nothing.

Set ``HPCBRIDGE_REPORT_SCREENSHOT=docs/report.png`` to keep the screenshot (README shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge.cli import cli
from hpcbridge.lifecycle import TaskState
from hpcbridge.report_html import PHASE_COLOURS, REQUEUE_COLOUR
from hpcbridge.service import Service
from tests import browser

from .conftest import drive_until, states_seen

pytestmark = pytest.mark.integration
S = TaskState
PROJECT = "lab-report"
HOSTILE = '"><img src=x onerror=alert(1)>'


def root_sbatch(*args: str) -> str:
    res = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split(";")[0]


def test_report_of_a_lab_sweep_with_a_failure_and_a_requeue(service: Service, tmp_path: Path) -> None:
    browser.chromium()  # fail or skip before using the lab
    common = {"cluster": "lab", "project": PROJECT, "time": "00:05:00"}
    ok = service.submit(command=["sleep", "6"], name="heat-ok", cpus=2, metadata={"alpha": "0.1", "note": HOSTILE},
                        **common)  # fmt: skip
    bad = service.submit(command=["sh", "-c", "echo 'error: mesh.h5 is corrupt' >&2; exit 3"], name="heat-bad",
                         metadata={"alpha": "0.2", "note": "-"}, **common)  # fmt: skip
    req = service.submit(command=["sleep", "12"], name="heat-preempted", partition="low",
                         sbatch_options=["--exclusive"], metadata={"alpha": "0.3", "note": "-"}, **common)  # fmt: skip
    preemptor = ""
    try:
        running = drive_until(service, req.id, lambda t: t.state == S.RUNNING, 90, "the low task to run")
        node = service.attempts(running.id)[-1].nodes
        assert node, "no node recorded for the running task"
        preemptor = root_sbatch("-p", "high", "-w", node, "--exclusive", "-t", "2", "-J", "hpcb-test-preemptor",
                                "-o", "/dev/null", "--wrap", "sleep 3")  # fmt: skip
        drive_until(service, req.id, lambda t: "preempted" in states_seen(service, t), 90, "the preemption")
        for task in (ok, bad, req):
            drive_until(service, task.id, lambda t: t.state.terminal, 180, f"{task.name} to end")
        # sacct lags squeue: wait for the usage of the finished jobs to be recorded.
        drive_until(service, ok.id, lambda t: bool(service.attempts(t.id)[-1].usage), 90, "usage of heat-ok")
    finally:
        if preemptor:
            subprocess.run(["scancel", preemptor], capture_output=True, timeout=30)
    assert [service.get(t.id).state for t in (ok, bad, req)] == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED]

    page, data_file = tmp_path / "report.html", tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["report", "--project", PROJECT, "--html", str(page), "--json", str(data_file)],
                             catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(data_file.read_text(encoding="utf-8"))
    s = data["summary"]
    assert (s["tasks"], s["counts"], s["failures"]) == (3, {"failed": 1, "succeeded": 2}, 1)
    assert s["requeues"] >= 1 and s["core_hours"] > 0
    rows = {r["task"]: r for r in data["timeline"]["rows"]}
    assert [m["cause"] for m in rows[req.id]["requeues"]][:1] == ["preempted"], rows[req.id]
    assert sum(seg["phase"] == "run" for seg in rows[req.id]["segments"]) >= 2, rows[req.id]
    # A queue phase is drawn when the job waited (on an idle lab it may start the second it
    # was submitted: then there is nothing to draw).
    att = service.attempts(ok.id)[-1]
    waited = (att.started_at or 0) - (att.submitted_at or 0) >= 1
    assert {seg["phase"] for seg in rows[ok.id]["segments"]} >= ({"queue", "run"} if waited else {"run"})
    eff = {t["id"]: t["efficiency"] for t in data["tasks"]}
    assert eff[ok.id] and eff[ok.id]["low_cpu"], eff[ok.id]  # one sleeping process on 2 CPUs
    (fail,) = data["failures"]
    assert fail["id"] == bad.id and "error: mesh.h5 is corrupt" in fail["tail"]
    assert data["parameters"]["columns"] == ["alpha", "note"]

    html = page.read_text(encoding="utf-8")
    assert HOSTILE not in html and browser.outside_references(html) == []
    shot = browser.render(page, tmp_path, width=1200, height=900)
    keep = os.environ.get("HPCBRIDGE_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot.png, keep)
    assert browser.page_requests(shot.requests) == [], shot.requests
    assert "<svg" in shot.dom and "<script" not in shot.dom.lower()
    _, _, pixels = browser.decode_png(shot.png)
    runs, run_box = browser.find_colour(pixels, PHASE_COLOURS["run"])
    marks, mark_box = browser.find_colour(pixels, REQUEUE_COLOUR)
    assert runs > 1000 and run_box is not None and run_box[2] - run_box[0] > 200, (runs, run_box)
    assert marks > 10 and mark_box is not None and mark_box[0] > 24 + 260, (marks, mark_box)  # in the chart
