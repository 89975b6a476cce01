"""Projects, sweeps and searchable metadata through the public seams: a Service on a runtime
whose backend is ``hpcbridge.testing.FakeBackend`` (no Slurm), and the registry itself."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import sqlite_utils

from hpcbridge import projects as proj
from hpcbridge.config import load_config, parse_config
from hpcbridge.errors import ConfigError, UsageError
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Task, TaskSpec, new_task_id
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.schema import MIGRATIONS
from hpcbridge.service import Service
from hpcbridge.testing import FakeBackend

S = TaskState


def make_service(tmp_path: Path, backend: FakeBackend, top: dict | None = None, **cluster: object) -> Service:
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000,
             "submit_grace_seconds": 0, "lost_grace_seconds": 60, **cluster}  # fmt: skip
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}, **(top or {})})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": backend}, source="test"))


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def svc(tmp_path: Path, fake: FakeBackend):
    s = make_service(tmp_path, fake, time="00:30:00", cpus=2, price_per_core_hour=0.5, currency="EUR")
    yield s
    s.close()


def usage(core_hours: float) -> dict[str, object]:
    return {"core_hours": core_hours, "alloc_cpus": 2, "cpu_efficiency": 0.9}


# ---------------------------------------------------------------- sweeps
def test_a_sweep_is_one_submission_round_trip_with_parameters_as_metadata(svc, fake) -> None:
    tasks = proj.sweep(svc, ["python3", "sim.py", "--alpha", "{alpha}", "--out=r-{nx}.h5"],
                       grid={"alpha": [0.05, 0.1, 0.2], "nx": [32, 64]}, project="scan",
                       metadata={"study": "s1"}, outputs=["r-*.h5"])  # fmt: skip
    assert len(tasks) == 6 and all(t.state == S.QUEUED for t in tasks)
    assert len(fake.calls_to("submit")) == 1 and len(fake.submitted) == 6
    assert [t.spec.command[3] for t in tasks] == ["0.05", "0.05", "0.1", "0.1", "0.2", "0.2"]
    assert tasks[1].spec.command[4] == "--out=r-64.h5"
    assert dict(tasks[1].metadata) == {"alpha": "0.05", "nx": "64", "study": "s1"}
    assert {t.project for t in tasks} == {"scan"}
    assert [t.id for t in proj.tasks(svc, "scan")] == [t.id for t in tasks]  # sweep order


def test_sweep_zip_and_params(svc) -> None:
    zipped = proj.sweep(svc, ["run", "{a}", "{b}"], zip={"a": ["1", "2"], "b": ["x", "y"]})
    assert [t.spec.command for t in zipped] == [("run", "1", "x"), ("run", "2", "y")]
    sets = proj.sweep(svc, ["run", "{p}"], params=[{"p": "a'; rm -rf ~"}, {"p": "$(id)"}])
    assert [t.spec.command for t in sets] == [("run", "a'; rm -rf ~"), ("run", "$(id)")]
    assert sets[0].metadata["p"] == "a'; rm -rf ~"


@pytest.mark.parametrize("kwargs, message", [
    ({"grid": {"a": ["1"]}, "command": ["x", "{b}"]}, "unknown placeholder"),
    ({"grid": {"a": ["1"]}, "command": ["x", "{a"]}, "unbalanced"),
    ({"grid": {"a": ["1"]}, "command": ["x"], "script": "echo"}, "not a script"),
    ({"grid": {"a": ["1"]}, "command": ["x"], "metadata": {"a": "2"}}, "also sweep parameters"),
    ({"grid": {"a": ["1"]}, "command": ["x"], "bogus": 1}, "unknown task option"),
    ({"grid": {"a": ["1"]}, "command": ["x"], "project": "a\nb"}, "printable"),
])  # fmt: skip
def test_a_bad_sweep_registers_nothing(svc, fake, kwargs, message) -> None:
    command = kwargs.pop("command")
    with pytest.raises(UsageError, match=message):
        proj.sweep(svc, command, **kwargs)
    assert svc.list_tasks() == [] and not fake.calls


# ---------------------------------------------------------------- projects
def test_default_project_from_config_and_env(tmp_path, fake, monkeypatch) -> None:
    svc = make_service(tmp_path, fake, top={"default_project": "thesis"})
    assert svc.submit(command=["true"]).project == "thesis"
    assert svc.submit(command=["true"], project="other").project == "other"
    svc.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text('default_project = "thesis"\n[clusters.lab]\nbackend = "local"\n')
    monkeypatch.setenv("HPCBRIDGE_PROJECT", "from-env")
    loaded = load_config(cfg)
    assert loaded.default_project == "from-env" and loaded.clusters["lab"].default_project == "from-env"
    monkeypatch.delenv("HPCBRIDGE_PROJECT")
    assert load_config(cfg).clusters["local"].default_project == "thesis"


@pytest.mark.parametrize("data, message", [
    ({"default_project": 3}, "must be str"),
    ({"default_project": ""}, "printable"),
    ({"clusters": {"x": {"price_per_core_hour": -1}}}, ">= 0"),
    ({"clusters": {"x": {"currency": 1}}}, "must be str"),
])  # fmt: skip
def test_project_and_price_config_errors(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_counts_core_hours_and_cost(svc, fake) -> None:
    a = proj.sweep(svc, ["run", "{i}"], grid={"i": ["1", "2", "3"]}, project="a")
    b = svc.submit(command=["run"], project="b", cpus=4, time="2:00:00")
    svc.submit(command=["run"])  # no project: in no summary
    reg = svc.registry
    # a[0] ends with usage recorded; a[1] ends, accounting not in yet; a[2] still queued.
    for t in a[:2]:
        fake.set_state(t.id, None, S.SUCCEEDED)
    svc.sync_cluster("lab")
    reg.update_attempt(a[0].id, 1, {"usage": usage(0.25)})
    [sa, sb] = proj.summaries(svc)
    assert (sa.name, sa.tasks, sa.active, dict(sa.counts)) == ("a", 3, 1, {"queued": 1, "succeeded": 2})
    assert sa.core_hours_used == pytest.approx(0.25)
    assert (sa.attempts_accounted, sa.attempts_unaccounted) == (1, 1)
    assert sa.core_hours_committed == pytest.approx(2 * 0.5)  # cluster defaults: 2 CPUs x 30 min
    assert sa.cost_used == {"EUR": pytest.approx(0.125)} and sa.cost_committed == {"EUR": pytest.approx(0.5)}
    assert sb.core_hours_committed == pytest.approx(4 * 2) and sb.core_hours_used == 0
    # accounting catches up
    reg.update_attempt(a[1].id, 1, {"usage": usage(0.5)})
    sa = proj.summary(svc, "a")
    assert sa.core_hours_used == pytest.approx(0.75) and sa.attempts_unaccounted == 0
    assert sa.to_dict()["counts"] == {"queued": 1, "succeeded": 2}
    assert b.project == "b"


def test_committed_without_a_time_limit_is_counted_as_unknown(tmp_path, fake) -> None:
    svc = make_service(tmp_path, fake)  # no default time, no price
    svc.submit(command=["x"], project="p")
    svc.submit(command=["x"], project="p", time="1-00:00:00", cpus=3)
    s = proj.summary(svc, "p")
    assert s.core_hours_committed == pytest.approx(72.0) and s.committed_unknown == 1
    assert s.cost_used == {} and s.cost_committed == {} and s.unpriced
    svc.close()


@pytest.mark.parametrize("text, seconds", [
    ("10", 600), ("10:30", 630), ("01:00:00", 3600), ("2-0", 172800), ("1-02:03", 93780),
    ("1-02:03:04", 93784), ("UNLIMITED", None), ("", None), (None, None), ("abc", None),
])  # fmt: skip
def test_time_limit_seconds(text, seconds) -> None:
    assert proj.time_limit_seconds(text) == seconds


def test_unknown_project_says_which_exist(svc) -> None:
    svc.submit(command=["x"], project="known")
    with pytest.raises(UsageError) as err:
        proj.summary(svc, "nope")
    assert "no task belongs to project 'nope'" in err.value.message and "known" in (err.value.hint or "")


def test_kill_cancels_only_the_projects_unfinished_tasks(svc, fake) -> None:
    mine = proj.sweep(svc, ["run", "{i}"], grid={"i": ["1", "2", "3"]}, project="p")
    other = svc.submit(command=["run"], project="q")
    fake.set_state(mine[0].id, None, S.SUCCEEDED)
    svc.sync_cluster("lab")
    results = proj.kill(svc, "p")
    assert sorted(r.task.id for r in results) == sorted(t.id for t in mine[1:])
    assert len(fake.calls_to("cancel")) == 1  # one cancel call for the cluster
    svc.sync_cluster("lab")
    assert [svc.get(t.id).state for t in mine] == [S.SUCCEEDED, S.CANCELLED, S.CANCELLED]
    assert svc.get(other.id).state == S.QUEUED


def test_wait_and_download(svc, fake, tmp_path) -> None:
    tasks = proj.sweep(svc, ["run", "{i}"], grid={"i": ["1", "2", "3"]}, project="p", outputs=["out.txt"])
    for t in tasks[:2]:
        fake.set_outputs(t.id, {"out.txt": f"result {t.metadata['i']}"})
        fake.set_state(t.id, None, S.SUCCEEDED)
    fake.set_state(tasks[2].id, None, S.FAILED, exit_code=3)
    seen: list[int] = []
    done = proj.wait(svc, "p", timeout=30, on_progress=lambda ts: seen.append(len(ts)))
    assert [t.state for t in done] == [S.SUCCEEDED, S.SUCCEEDED, S.FAILED] and set(seen) == {3}
    got = proj.download(svc, "p", tmp_path / "dl")
    assert [len(d.files) for d in got] == [1, 1, 0] and got[2].skipped == "state failed"
    assert (tmp_path / "dl" / tasks[1].id / "out.txt").read_text() == "result 2"
    index = json.loads((tmp_path / "dl" / "tasks.json").read_text())
    assert [(i["id"], i["metadata"]["i"], i["files"]) for i in index][:2] == [
        (tasks[0].id, "1", [f"{tasks[0].id}/out.txt"]), (tasks[1].id, "2", [f"{tasks[1].id}/out.txt"])]  # fmt: skip


# ---------------------------------------------------------------- searchable metadata
def test_metadata_filters_exact_and_has_key(svc) -> None:
    tasks = proj.sweep(svc, ["run", "{alpha}", "{nx}"], grid={"alpha": ["0.1", "0.2"], "nx": ["32", "64"]})
    plain = svc.submit(command=["x"], metadata={"note": "n"})

    def ids(**meta: str | None) -> set[str]:
        return {t.id for t in proj.find_tasks(svc, metadata=meta)}

    assert ids(alpha="0.1") == {tasks[0].id, tasks[1].id}
    assert ids(alpha="0.1", nx="64") == {tasks[1].id}
    assert ids(alpha=None) == {t.id for t in tasks}
    assert ids(note=None) == {plain.id} and ids(alpha="0.3") == set()
    assert ids(alpha="0.1 ") == set()  # exact match only
    with pytest.raises(UsageError):
        proj.find_tasks(svc, metadata={"a": 1})  # type: ignore[dict-item]


def test_metadata_index_follows_updates_in_the_same_transaction(svc) -> None:
    t = svc.submit(command=["x"], metadata={"a": "1", "b": "2"})
    svc.set_metadata(t.id, {"a": "9", "b": None, "c": "3"})

    def rows() -> dict[str, str]:
        return dict(svc.registry.conn.execute("SELECT key, value FROM task_meta WHERE task_id = ?", (t.id,)).fetchall())

    assert rows() == {"a": "9", "c": "3"} == dict(svc.get(t.id).metadata)
    assert [x.id for x in proj.find_tasks(svc, metadata={"a": "9"})] == [t.id]
    assert proj.find_tasks(svc, metadata={"a": "1"}) == [] and proj.find_tasks(svc, metadata={"b": None}) == []
    # A failed transaction leaves neither the JSON nor the index changed.
    with pytest.raises(RuntimeError), svc.registry.transaction():
        svc.registry.update_metadata(t.id, {"a": "10"})
        raise RuntimeError("boom")
    assert rows() == {"a": "9", "c": "3"} == dict(svc.get(t.id).metadata)


def test_metadata_and_project_cannot_be_changed_behind_the_index(svc) -> None:
    t = svc.submit(command=["x"])
    for field in ("metadata", "project", "spec"):
        with pytest.raises(ValueError, match="not updated through fields"):
            svc.registry.update_task(t.id, {field: {}})


def test_list_tasks_by_project_with_states_and_limit(svc, fake) -> None:
    a = proj.sweep(svc, ["run", "{i}"], grid={"i": [str(i) for i in range(5)]}, project="a")
    svc.submit(command=["x"], project="b")
    fake.set_state(a[0].id, None, S.RUNNING)
    svc.sync_cluster("lab")
    assert [t.id for t in proj.find_tasks(svc, project="a", limit=2)] == [a[4].id, a[3].id]
    assert [t.id for t in proj.find_tasks(svc, project="a", states=[S.RUNNING])] == [a[0].id]
    assert proj.find_tasks(svc, project="zzz") == []


# ---------------------------------------------------------------- migration 006
def _old_registry(path: Path) -> list[str]:
    """A registry as hpcbridge wrote it before migration 006: tasks with metadata JSON."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for name, fn in MIGRATIONS[:5]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
    ids = []
    for i, meta in enumerate([{"alpha": "0.1", "nx": "32"}, {"alpha": "0.2"}, {}]):
        tid = new_task_id()
        spec = TaskSpec(command=("x",), name=f"old{i}").to_dict()
        spec.pop("project")
        db.execute("INSERT INTO tasks (id, name, cluster, state, spec, metadata, created_at, updated_at)"
                   " VALUES (?, ?, 'lab', 'succeeded', ?, ?, 0, 0)", (tid, f"old{i}", json.dumps(spec), json.dumps(meta)))  # fmt: skip
        ids.append(tid)
    db.conn.commit()
    db.conn.close()
    return ids


def test_migration_006_backfills_the_index_and_is_idempotent(tmp_path) -> None:
    path = tmp_path / "old.db"
    ids = _old_registry(path)
    reg = Registry(path)
    assert "006_projects_metadata" in reg.applied_migrations()
    assert [t.id for t in reg.list_tasks(metadata={"alpha": "0.1"})] == [ids[0]]
    assert {t.id for t in reg.list_tasks(metadata={"alpha": None})} == set(ids[:2])
    assert all(t.project is None for t in reg.list_tasks())
    before = reg.conn.execute("SELECT COUNT(*) FROM task_meta").fetchone()[0]
    MIGRATIONS[5][1](reg.db)  # again: nothing doubles, nothing fails
    assert reg.conn.execute("SELECT COUNT(*) FROM task_meta").fetchone()[0] == before == 3
    plans = " ".join(r[3] for r in reg.conn.execute(
        "EXPLAIN QUERY PLAN SELECT task_id FROM task_meta WHERE key = ? AND value = ?", ("a", "b")))
    assert "idx_task_meta_key_value" in plans
    reg.insert_task(Task(id=new_task_id(), spec=TaskSpec(command=("x",), project="p"), state=S.CREATED,
                         metadata={"k": "v"}, created_at=0, updated_at=0), source="test")  # fmt: skip
    assert reg.project_counts() == {"p": {"created": 1}}
    reg.close()
