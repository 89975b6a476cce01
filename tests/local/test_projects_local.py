"""A sweep in a project, end to end on the local backend: the real CLI (submit --grid,
projects list/show/wait/download, tasks list --meta) and the Python API (Project, sweep)."""

from __future__ import annotations

import json
import sys

import hpcbridge
from hpcbridge import TaskState

from .localtools import HEAT2D

S = TaskState


def test_a_six_task_sweep_in_a_project(hb, run_cli, tmp_path):
    res = run_cli(
        "submit", "--project", "heat-scan", "--name", "heat", "--input", str(HEAT2D),
        "--output", "result.json", "--meta", "study=e2e",
        "--grid", "alpha=0.05,0.1,0.2", "--grid", "nx=8,12",
        "--", sys.executable, "heat2d.py", "--alpha", "{alpha}", "--nx", "{nx}", "--ny", "{nx}",
        "--steps", "20", "--checkpoint-every", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    ids = res.stdout.split()
    assert len(ids) == 6 and len(set(ids)) == 6

    res = run_cli("projects", "wait", "heat-scan", "--timeout", "120")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "heat-scan: 6 of 6 succeeded" in res.stdout

    res = run_cli("projects", "list")
    assert res.exit_code == 0, res.stderr
    [header, row] = res.stdout.splitlines()
    assert header.split()[:5] == ["PROJECT", "TASKS", "ACTIVE", "CORE-H", "USED"]
    assert row.split()[:3] == ["heat-scan", "6", "0"] and row.endswith("6 succeeded")
    listed = json.loads(run_cli("projects", "list", "--json").stdout)
    assert listed[0]["counts"] == {"succeeded": 6} and listed[0]["core_hours_used"] == 0

    res = run_cli("projects", "show", "heat-scan")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[1] == "tasks     6: 6 succeeded"
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["ID", "STATE", "ATT", "RUN", "ALPHA", "NX", "STUDY", "NAME"]
    assert [r.split()[:2] for r in table[1:]] == [[i, "succeeded"] for i in ids]  # sweep order
    assert [tuple(r.split()[4:6]) for r in table[1:]] == [
        ("0.05", "8"), ("0.05", "12"), ("0.1", "8"), ("0.1", "12"), ("0.2", "8"), ("0.2", "12")]  # fmt: skip

    # Each task ran with its own parameters, as separate arguments.
    res = run_cli("projects", "download", "heat-scan", "--dir", str(tmp_path / "dl"))
    assert res.exit_code == 0, res.stderr
    index = json.loads((tmp_path / "dl" / "tasks.json").read_text())
    assert [i["id"] for i in index] == ids
    for item in index:
        result = json.loads((tmp_path / "dl" / item["id"] / "result.json").read_text())
        assert result["alpha"] == float(item["metadata"]["alpha"])
        assert result["nx"] == result["ny"] == int(item["metadata"]["nx"])
        assert item["metadata"]["study"] == "e2e"

    # Searchable metadata, CLI and API.
    res = run_cli("tasks", "list", "--meta", "alpha=0.1", "--project", "heat-scan", "--json")
    assert sorted(t["id"] for t in json.loads(res.stdout)) == sorted(ids[2:4])
    res = run_cli("tasks", "list", "--meta", "alpha=0.1", "--meta", "nx=12")
    assert [ln.split()[0] for ln in res.stdout.splitlines()[1:]] == [ids[3]]
    assert {t.id for t in hpcbridge.list_tasks(metadata={"nx": "8"})} == {ids[0], ids[2], ids[4]}
    assert len(hpcbridge.list_tasks(metadata={"study": None}, project="heat-scan")) == 6

    project = hpcbridge.Project("heat-scan")
    assert project.counts() == {"succeeded": 6}
    assert project.core_hours() == {"used": 0.0, "committed": 0.0}
    assert [t.id for t in project.tasks()] == ids


def test_api_sweep_with_hostile_values_and_a_project_kill(hb, tmp_path):
    params = tmp_path / "sets.jsonl"
    params.write_text("\n".join(json.dumps({"v": v}) for v in ["a'; rm -rf ~", "$(id)", "two words"]))
    project = hpcbridge.Project("hostile")
    tasks = project.sweep([sys.executable, "-c", "import sys, json; json.dump(sys.argv[1:], open('argv.json', 'w'))",
                           "{v}", "x{{v}}"], params=params, outputs=["argv.json"])  # fmt: skip
    assert project.wait(timeout=60) == {"succeeded": 3}
    got = project.download(tmp_path / "dl")
    for t, v in zip(tasks, ["a'; rm -rf ~", "$(id)", "two words"], strict=True):
        assert t.metadata["v"] == v
        assert json.loads((tmp_path / "dl" / t.id / "argv.json").read_text()) == [v, "x{v}"]
        assert [p.name for p in got[t.id]] == ["argv.json"]

    sleepers = hpcbridge.Project("sleepers")
    sleepers.sweep([sys.executable, "-c", "import time; time.sleep(float('{s}'))"], grid={"s": ["300", "301"]})
    assert sleepers.kill() == 2
    assert sleepers.wait(timeout=30) == {"cancelled": 2}
    assert hpcbridge.Project("hostile").counts() == {"succeeded": 3}
