"""A parameter sweep in a project on the real Slurm lab, through the real sshd: 12 heat
simulations, `projects list` with the counts, core-hours from accounting (checked against
sacct itself) and the estimated cost, then the outputs of the whole project."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge import projects as proj
from hpcbridge.cli import cli
from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import HEAT, wait_for

pytestmark = pytest.mark.integration
S = TaskState

PROJECT = "lab-heat-scan"
PRICE = 0.25  # per core-hour, written into a copy of the lab config


def priced_config(lab_config: Path, tmp_path: Path) -> Path:
    lines = lab_config.read_text().splitlines()
    at = lines.index("[clusters.lab]") + 1
    lines[at:at] = [f"price_per_core_hour = {PRICE}", 'currency = "EUR"']
    path = tmp_path / "priced.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sacct_core_hours(job_ids: list[str]) -> float:
    """What sacct itself says: sum of ElapsedRaw x AllocCPUS over the jobs (allocations only)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "ElapsedRaw,AllocCPUS", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    assert len(rows) == len(job_ids), out
    return sum(int(e) * int(c) for e, c in rows) / 3600


def test_a_sweep_of_12_in_a_project_counts_and_core_hours(service: Service, lab_config: Path, tmp_path: Path) -> None:
    tasks = proj.sweep(
        service, ["python3", "heat2d.py", "--alpha", "{alpha}", "--nx", "{nx}", "--ny", "{nx}",
                  "--steps", "60", "--sleep-per-step", "0.05", "--checkpoint-every", "0"],
        grid={"alpha": ["0.05", "0.1", "0.2"], "nx": ["8", "10", "12", "14"]},
        cluster="lab", project=PROJECT, name="heat", inputs=[str(HEAT)], outputs=["result.json"],
        cpus=1, time="00:02:00", metadata={"study": "integration"},
    )  # fmt: skip
    assert len(tasks) == 12 and all(t.state == S.QUEUED for t in tasks), [t.state for t in tasks]
    ids = [t.id for t in tasks]

    # While they wait or run, their request is committed: 1 CPU x 2 minutes each.
    before = proj.summary(service, PROJECT)
    assert before.tasks == 12 and before.active == sum(
        n for s, n in before.counts.items() if s in {"queued", "running", "submitting", "held", "suspended"})  # fmt: skip
    assert before.core_hours_committed == pytest.approx(before.active * 2 / 60)

    done = service.wait(ids, timeout=300)
    assert [t.state for t in done] == [S.SUCCEEDED] * 12, [(t.id, t.state, t.reason) for t in done]

    # sacct lags squeue: drive syncs until every ended attempt has its usage recorded.
    def accounted() -> bool:
        service.sync_cluster("lab")
        return proj.summary(service, PROJECT).attempts_unaccounted == 0

    wait_for(accounted, 180, "accounting of all 12 jobs", interval=2.0)
    summary = proj.summary(service, PROJECT)
    assert dict(summary.counts) == {"succeeded": 12} and summary.active == 0
    assert summary.attempts_accounted == 12 and summary.core_hours_committed == 0
    job_ids = [a.job_id for t in ids for a in service.attempts(t) if a.job_id]
    assert len(job_ids) == 12
    truth = sacct_core_hours(job_ids)
    assert truth > 0 and summary.core_hours_used == pytest.approx(truth, rel=1e-6, abs=1e-9)

    # The real CLI, with a price per core-hour in the config.
    runner = CliRunner()
    base = ["--config", str(priced_config(lab_config, tmp_path)), "--db", str(service.registry.path)]
    res = runner.invoke(cli, [*base, "projects", "list"], catch_exceptions=False)
    print("\n$ hpcbridge projects list\n" + res.stdout)
    assert res.exit_code == 0, res.stderr
    header, row = res.stdout.splitlines()
    assert header.split() == ["PROJECT", "TASKS", "ACTIVE", "CORE-H", "USED", "COMMITTED", "COST", "USED", "STATES"]
    cells = row.split()
    assert cells[:3] == [PROJECT, "12", "0"] and row.endswith("12 succeeded")
    assert float(cells[3]) == pytest.approx(truth, abs=0.0005) and float(cells[4]) == 0
    assert float(cells[5]) == pytest.approx(truth * PRICE, abs=0.005) and cells[6] == "EUR"
    listed = json.loads(runner.invoke(cli, [*base, "projects", "list", "--json"]).stdout)
    assert listed[0]["cost_used"]["EUR"] == pytest.approx(truth * PRICE)

    res = runner.invoke(cli, [*base, "projects", "show", PROJECT], catch_exceptions=False)
    print("$ hpcbridge projects show " + PROJECT + "\n" + res.stdout)
    assert res.exit_code == 0 and res.stdout.count(" succeeded ") == 12

    # Every task ran with its own parameters; the project's outputs come back in one go.
    got = proj.download(service, PROJECT, tmp_path / "out")
    assert [len(d.files) for d in got] == [1] * 12
    for d in got:
        result = json.loads((tmp_path / "out" / d.task.id / "result.json").read_text())
        assert (result["alpha"], result["nx"]) == (float(d.task.metadata["alpha"]), int(d.task.metadata["nx"]))
    assert {t.id for t in proj.find_tasks(service, metadata={"alpha": "0.1"}, project=PROJECT)} == set(ids[4:8])
