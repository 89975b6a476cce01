"""The report's data model and its HTML, driven through the real sync cycle with
``hpcbridge.testing.FakeBackend`` (no Slurm): a sweep where one task succeeds with a low CPU
efficiency, one fails with a stderr tail, and one is requeued by Slurm after a node failure.
Plus the records of ``tasks list --format`` / ``to_records`` and hostile names in HTML."""

from __future__ import annotations

import csv
import io
import json
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpcbridge.api import Task as TaskHandle
from hpcbridge.cli import cli
from hpcbridge.config import parse_config
from hpcbridge.lifecycle import TaskState
from hpcbridge.registry import Registry
from hpcbridge.report_data import task_records
from hpcbridge.report_html import PHASE_COLOURS, render_report, task_html
from hpcbridge.reporting import collect
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.slurm import requeue_state
from hpcbridge.testing import FakeBackend

S = TaskState
HOSTILE_NAME = "<script>alert('name')</script>"
HOSTILE_META = '"><img src=x onerror=alert(1)>'
HOSTILE_ERR = "</pre><script>alert('stderr')</script><a href=\"http://evil.example/\">x</a>"


def make_service(tmp_path: Path, fake: FakeBackend) -> Service:
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000}
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": fake}, source="test"))


USAGE = {"job_id": "1000", "state": "COMPLETED", "elapsed_seconds": 40, "timelimit_seconds": 400, "cpu_seconds": 8.0, "alloc_cpus": 2,
         "cpu_efficiency": 0.1, "max_rss_bytes": 200 << 20, "alloc_mem_bytes": 1 << 30,
         "mem_efficiency": 200 / 1024, "time_efficiency": 0.1, "core_hours": 2 * 40 / 3600,
         "gathered": True, "undercounted": False}  # fmt: skip


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Service, dict[str, str]]:
    """Three tasks of project 'scan' driven to their ends through sync cycles."""
    fake = FakeBackend()
    svc = make_service(tmp_path, fake)
    now = time.time()
    names = {"ok": "0.1", HOSTILE_NAME: HOSTILE_META, "requeued": "0.3"}
    ids = {}
    for name, alpha in names.items():
        ids[name] = svc.submit(command=["python3", "sim.py"], name=name, project="scan",
                               metadata={"alpha": alpha, "nx": "64"}).id  # fmt: skip
    now = time.time()  # the scheduler's clock: the jobs start after their submission
    for name in names:
        fake.set_state(name, 1, S.RUNNING, nodes="node1", start_time=now + 1)
    svc.sync_cluster("lab")
    fake.set_state("ok", 1, S.SUCCEEDED, nodes="node1", start_time=now + 1, end_time=now + 41)
    fake.set_log(HOSTILE_NAME, 1, "stderr", f"loading mesh\n{HOSTILE_ERR}\n")
    fake.set_state(HOSTILE_NAME, 1, S.FAILED, exit_code=3, nodes="node1", start_time=now + 1, end_time=now + 5)
    # Slurm requeues after a node failure: the same job back to PENDING, restarts up, and the
    # cause in sacct (the earlier instance's NODE_FAIL row).
    fake.set_state("requeued", 1, S.QUEUED, raw_state="PENDING", reason="BeginTime", restarts=1,
                   submit_time=now - 3, requeue_causes=("NODE_FAIL",),
                   requeue_states=(requeue_state("NODE_FAIL"),))  # fmt: skip
    svc.sync_cluster("lab")
    assert svc.get(ids["requeued"]).state == S.QUEUED
    fake.set_state("requeued", 1, S.RUNNING, nodes="node2", restarts=1, start_time=now - 2,
                   requeue_causes=("NODE_FAIL",), requeue_states=(requeue_state("NODE_FAIL"),))  # fmt: skip
    svc.sync_cluster("lab")
    fake.set_state("requeued", 1, S.SUCCEEDED, nodes="node2", restarts=1, start_time=now - 2, end_time=time.time(),
                   requeue_causes=("NODE_FAIL",), requeue_states=(requeue_state("NODE_FAIL"),))  # fmt: skip
    svc.sync_cluster("lab")
    svc.registry.update_attempt(ids["ok"], 1, {"usage": USAGE})
    assert [svc.get(i).state for i in ids.values()] == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED]
    return svc, ids


def test_the_model_has_counts_timeline_efficiency_failures_and_parameters(sweep) -> None:
    svc, ids = sweep
    data = collect(svc, project="scan")
    s = data["summary"]
    assert (s["tasks"], s["counts"], s["failures"], s["requeues"]) == (3, {"failed": 1, "succeeded": 2}, 1, 1)
    assert s["core_hours"] == pytest.approx(USAGE["core_hours"])
    rows = {r["task"]: r for r in data["timeline"]["rows"]}
    assert set(rows) == set(ids.values())
    req = rows[ids["requeued"]]
    runs = [seg for seg in req["segments"] if seg["phase"] == "run"]
    assert len(runs) == 2 and runs[0]["end"] <= runs[1]["start"]  # ran, was requeued, ran again
    assert [m["cause"] for m in req["requeues"]] == ["node_failed"]
    assert runs[0]["end"] <= req["requeues"][0]["at"] <= runs[1]["start"]
    ok = rows[ids["ok"]]
    assert [seg["phase"] for seg in ok["segments"]] == ["queue", "run"]
    assert all(seg["start"] <= seg["end"] for r in rows.values() for seg in r["segments"])
    tl = data["timeline"]
    assert tl["start"] <= min(seg["start"] for r in rows.values() for seg in r["segments"])
    eff = {t["id"]: t["efficiency"] for t in data["tasks"]}
    assert eff[ids["ok"]]["low_cpu"] and eff[ids["ok"]]["low_mem"]
    assert any("CPU efficiency 10%" in w for w in eff[ids["ok"]]["warnings"])
    assert eff[ids["requeued"]] is None
    (fail,) = data["failures"]
    assert fail["id"] == ids[HOSTILE_NAME] and fail["state"] == "failed"
    assert HOSTILE_ERR in fail["tail"] and fail["stream"] == "stderr"
    assert data["parameters"]["columns"] == ["alpha", "nx"]
    assert [r["values"]["alpha"] for r in data["parameters"]["rows"]] == ["0.1", HOSTILE_META, "0.3"]
    json.dumps(data)  # JSON-ready as is


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "div", "p", "span", "b",
                "i", "br", "code", "pre", "table", "tr", "th", "td", "svg", "line", "rect", "text",
                "path"}  # fmt: skip


def page_tags(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def test_hostile_names_metadata_and_stderr_are_escaped_everywhere(sweep) -> None:
    svc, _ = sweep
    html = render_report(collect(svc, project="scan"))
    for raw in (HOSTILE_NAME, HOSTILE_META, HOSTILE_ERR, "<script", "<img", "onerror=alert(1)>"):
        assert raw not in html
    parsed = page_tags(html)
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    for tag, attrs in parsed.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert not {"src", "href"} & set(attrs), (tag, attrs)  # nothing to load, nowhere to go
    text = "".join(parsed.text)  # what a reader sees: the values exactly as given
    assert HOSTILE_NAME in text and HOSTILE_META in text and HOSTILE_ERR in text


def test_the_page_draws_every_phase_colour_it_uses_and_refuses_loads(sweep) -> None:
    svc, _ = sweep
    html = render_report(collect(svc, project="scan"))
    assert "default-src 'none'" in html
    assert f'fill="{PHASE_COLOURS["run"]}"' in html and f'fill="{PHASE_COLOURS["queue"]}"' in html
    assert "requeue: node_failed" in html


def test_a_task_card_for_jupyter_is_escaped(sweep) -> None:
    svc, ids = sweep
    card = TaskHandle(ids[HOSTILE_NAME], service=svc)._repr_html_()
    assert "<script" not in card and "<img" not in card
    assert "&lt;script&gt;" in card and "exit code 3" in card
    assert all(t in ALLOWED_TAGS for t, _ in page_tags(card).tags)
    assert task_html({"id": "x", "state": "queued"}).startswith("<div")


def test_records_are_flat_with_metadata_columns_and_clashes_kept_apart(sweep) -> None:
    svc, ids = sweep
    svc.set_metadata(ids["ok"], {"state": "initial"})
    tasks = [svc.get(i) for i in ids.values()]
    recs = task_records(tasks, svc.usage_of(list(ids.values())))
    assert len({tuple(r) for r in recs}) == 1  # same columns in every record
    assert all(v is None or isinstance(v, str | int | float) for r in recs for v in r.values())
    first = recs[0]
    assert first["state"] == "succeeded" and first["meta.state"] == "initial"
    assert recs[1]["meta.state"] is None and recs[1]["alpha"] == HOSTILE_META
    assert first["cpu_efficiency"] == pytest.approx(0.1) and first["core_hours"] == pytest.approx(USAGE["core_hours"])
    assert list(first)[:3] == ["id", "name", "state"]


def _cli(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), *args], catch_exceptions=False)


def test_tasks_list_formats_export_the_listing(sweep, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    svc, ids = sweep
    svc.close()
    res = _cli(tmp_path, "tasks", "list", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [r["id"] for r in rows] == list(reversed(ids.values()))  # newest first, as the listing
    assert rows[1]["alpha"] == HOSTILE_META and rows[1]["nx"] == "64"
    res = _cli(tmp_path, "tasks", "list", "--format", "json", "--usage")
    recs = json.loads(res.output)
    assert recs[-1]["cpu_efficiency"] == pytest.approx(0.1) and recs[-1]["alpha"] == "0.1"
    table = _cli(tmp_path, "tasks", "list", "--format", "table").output.splitlines()
    assert table[0].split()[-3:] == ["ALPHA", "NX", "NAME"]
    assert HOSTILE_META in table[2]
    default = _cli(tmp_path, "tasks", "list").output.splitlines()
    assert default[0].split() == ["ID", "STATE", "CLUSTER", "ATT", "CREATED", "RUN", "NAME"]  # unchanged
    old_json = json.loads(_cli(tmp_path, "tasks", "list", "--json").output)
    assert set(old_json[0]) == {"id", "name", "cluster", "state", "created_at", "attempts", "exit_code", "reason"}
    bad = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "tasks", "list", "--json", "--format", "csv"])
    assert bad.exit_code == 1 and bad.output.startswith("error: ")


def test_report_cli_writes_html_and_json(sweep, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    svc, ids = sweep
    svc.close()
    out = tmp_path / "r.html"
    res = _cli(tmp_path, "report", "--project", "scan", "--html", str(out), "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["summary"]["tasks"] == 3
    res = _cli(tmp_path, "report", ids["ok"], "--json")
    assert json.loads(res.output)["scope"]["ids"] == [ids["ok"]]
    for args in (["report"], ["report", "--project", "nope", "--json"],
                 ["report", "--html", str(tmp_path / "no" / "dir.html")]):  # fmt: skip
        res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), *args])
        assert res.exit_code == 1 and res.output.startswith("error: "), (args, res.output)


def test_to_records_through_the_public_api(sweep, tmp_path: Path, monkeypatch) -> None:
    import hpcbridge

    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    svc, ids = sweep
    svc.close()
    hpcbridge.configure(db=tmp_path / "r.db")
    try:
        recs = hpcbridge.to_records([ids["ok"], hpcbridge.Task(ids["requeued"])])
        assert [r["id"] for r in recs] == [ids["ok"], ids["requeued"]]
        assert recs[0]["alpha"] == "0.1" and recs[0]["cpu_efficiency"] == pytest.approx(0.1)
        project = hpcbridge.Project("scan").to_records()
        assert [r["id"] for r in project] == list(ids.values())  # oldest first
        assert {r["alpha"] for r in project} == {"0.1", HOSTILE_META, "0.3"}
    finally:
        hpcbridge.configure()
