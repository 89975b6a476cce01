"""`tasks list`'s own read path (listing.open_source, registry_read.RegistryReader, TaskRow):
the same rows and the same output as through the full Registry, for a file of the current
schema; an absent file lists nothing and stays absent; an older file goes through Registry
(which migrates it); a broken one is one `error:` line with a hint."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hpcbridge import registry_read
from hpcbridge.cli import cli
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Attempt, Task, TaskSpec, new_task_id
from hpcbridge.registry import Registry
from hpcbridge.registry_file import MIGRATION_NAMES
from hpcbridge.registry_read import RegistryReader
from hpcbridge.schema import MIGRATIONS
from hpcbridge.task_rows import ListedTask, TaskRow

S = TaskState
USAGE = {"cpu_efficiency": 0.42, "mem_efficiency": 0.9, "core_hours": 1.5}


def _fill(path: Path) -> list[str]:
    """A registry of six tasks: states, clusters, projects, metadata (a sweep's keys, one
    clashing with a column, a hostile value), timings, a warning, usage on some current
    attempts and not on others. Returns the ids, oldest first."""
    reg = Registry(path)
    now = time.time() - 3600
    specs = [
        ("a-ok", "hpc", "scan", S.SUCCEEDED, {"alpha": "0.1", "nx": "64"}, 1, 0, None),
        ("b-fail", "hpc", "scan", S.FAILED, {"alpha": "0.2", "state": "x"}, 2, 3, "exit code 3"),
        ("c-warn", "lab", None, S.SUCCEEDED, {}, 1, 0, "warning: outputs matched nothing"),
        ("d-run", "lab", "scan", S.RUNNING, {"nx": "128"}, 1, None, None),
        ("e-new", "hpc", None, S.CREATED, {"note": "a,b \"quoted\"\nline"}, 0, None, None),
        ("f-queued", "hpc", "other", S.QUEUED, {"alpha": "0.1"}, 1, None, None),
    ]
    tasks = []
    for i, (name, cluster, project, state, meta, attempts, code, reason) in enumerate(specs):
        t0 = now + 60 * i
        ran = state in (S.SUCCEEDED, S.FAILED, S.RUNNING)
        tasks.append(Task(id=new_task_id(t0), spec=TaskSpec(command=("true",), name=name, cluster=cluster,
                                                            project=project),
                          state=state, metadata=meta, created_at=t0, updated_at=t0,
                          submitted_at=t0 + 1 if attempts else None, started_at=t0 + 5 if ran else None,
                          ended_at=t0 + 65.5 if state in (S.SUCCEEDED, S.FAILED) else None,
                          attempt_count=attempts, exit_code=code, reason=reason))  # fmt: skip
    reg.insert_tasks(tasks, source="test")
    for t in tasks:
        for n in range(1, t.attempt_count + 1):
            # usage on the current attempt of a-ok and c-warn; b-fail's is on its first only
            has = (t.name in ("a-ok", "c-warn") and n == t.attempt_count) or (t.name == "b-fail" and n == 1)
            reg.add_attempt(Attempt(task_id=t.id, number=n, token=f"tok-{t.id}-{n}", state=t.state))
            if has:
                reg.update_attempt(t.id, n, {"usage": USAGE})
    reg.close()
    return [t.id for t in tasks]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HPCBRIDGE_DB", raising=False)
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    path = tmp_path / "r.db"
    _fill(path)
    return path


def _cli(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), "tasks", "list", *args], catch_exceptions=False)


def _lean(db: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """The listing as `tasks list` reads it, the full Registry never opened."""
    with monkeypatch.context() as m:
        def refuse(self: Registry, path: object) -> None:
            raise AssertionError("the listing opened the full Registry")

        m.setattr(Registry, "__init__", refuse)
        return _cli(db, *args)


def _full(db: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """The listing through the full Registry and models.Task (what it was before)."""
    with monkeypatch.context() as m:
        m.setattr(RegistryReader, "open", classmethod(lambda cls, path: None))
        return _cli(db, *args)


ARGS = [(), ("--json",), ("--usage",), ("--usage", "--json"), ("--format", "csv"), ("--format", "json"),
        ("--format", "table"), ("--format", "csv", "--usage"), ("--format", "json", "--usage"),
        ("--format", "table", "--usage"), ("--meta", "alpha=0.1"), ("--meta", "nx", "--format", "csv"),
        ("--meta", "alpha=0.1", "--meta", "nx"), ("--project", "scan", "--usage"), ("--state", "succeeded"),
        ("--state", "failed", "--state", "queued", "--json"), ("--active",), ("--active", "--state", "failed"),
        ("--cluster", "lab", "--format", "json"), ("--limit", "2", "--usage"), ("--meta", "nope"),
        ("--project", "nope", "--format", "csv"), ("--project", "nope", "--json")]  # fmt: skip


@pytest.mark.parametrize("args", ARGS, ids=lambda a: " ".join(a) or "table")
def test_the_output_is_the_full_registrys(db: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    lean, full = _lean(db, monkeypatch, *args), _full(db, monkeypatch, *args)
    assert (lean.exit_code, lean.output) == (full.exit_code, full.output)
    assert lean.exit_code == 0


def test_the_outputs_compared_hold_the_tasks(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the comparison above covers: rows, usage columns, metadata columns, the warning.
    table = _lean(db, monkeypatch, "--usage").output.splitlines()
    assert table[0].split() == ["ID", "STATE", "CLUSTER", "ATT", "CREATED", "RUN", "CPU%", "MEM%", "NAME"]
    assert [line.split()[-1] for line in table[1:7]] == ["f-queued", "e-new", "d-run", "c-warn", "b-fail", "a-ok"]
    assert "succeeded!" in table[4] and "42%" in table[4] and "1m00s" in table[6]
    assert "42%" not in table[5]  # b-fail's usage is its first attempt's, not its current one's
    assert "! = finished with a warning" in table[-1]
    csv = _lean(db, monkeypatch, "--format", "csv", "--usage").output.splitlines()
    assert csv[0].endswith("cpu_efficiency,mem_efficiency,core_hours,alpha,note,nx,meta.state")  # newest first


def test_rows_are_the_tasks_as_a_listing_sees_them(db: Path) -> None:
    reg = Registry(db)
    reader = RegistryReader.open(str(db))
    assert reader is not None and reader.conn is not None
    shown = [name for name in vars(ListedTask) if not name.startswith("_")]
    assert len(shown) == 15
    filters: list[dict[str, object]] = [
        {}, {"states": [S.SUCCEEDED, S.QUEUED]}, {"states": []}, {"cluster": "lab"}, {"project": "scan"},
        {"metadata": {"alpha": "0.1"}}, {"metadata": {"nx": None}}, {"metadata": {"alpha": "0.1", "nx": None}},
        {"limit": 2}, {"project": "scan", "states": [S.FAILED], "limit": 1}]  # fmt: skip
    for f in filters:
        tasks, rows = reg.list_tasks(**f), reader.list_tasks(**f)  # type: ignore[arg-type]
        assert [t.id for t in tasks] == [r.id for r in rows], f
        for t, r in zip(tasks, rows, strict=True):
            assert isinstance(r, TaskRow)
            assert {n: getattr(r, n) for n in shown} == {n: getattr(t, n) for n in shown}
    ids = [t.id for t in reg.list_tasks()]
    assert reader.current_usage(ids) == reg.current_usage(ids)
    assert reg.current_usage(ids) == {tid: a.usage for tid, a in reg.current_attempts(ids).items() if a.usage}
    assert len(reader.current_usage(ids)) == 2 and reader.current_usage([]) == {}
    reader.close()
    reg.close()


def test_usage_is_read_in_chunks(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_read, "CHUNK", 2)
    reader = RegistryReader.open(str(db))
    assert reader is not None
    ids = [r.id for r in reader.list_tasks()]
    assert set(reader.current_usage(ids)) == {r.id for r in reader.list_tasks() if r.name in ("a-ok", "c-warn")}
    reader.close()


def test_an_absent_registry_lists_nothing_and_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    empty = tmp_path / "empty.db"
    Registry(empty).close()
    absent = tmp_path / "sub" / "absent.db"
    for args in [(), ("--json",), ("--format", "csv"), ("--format", "csv", "--usage"), ("--format", "table"),
                 ("--usage", "--json")]:  # fmt: skip
        got, want = _lean(absent, monkeypatch, *args), _cli(empty, *args)
        assert (got.exit_code, got.output) == (want.exit_code, want.output), args
    assert _cli(absent).output == "no tasks\n" and _cli(absent, "--json").output == "[]\n"
    assert not absent.exists() and not absent.parent.exists()


def _make_older(db: Path) -> None:
    """The file as an hpcbridge before the last migration left it."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM _migrations WHERE name = ?", (MIGRATION_NAMES[-1],))
        conn.execute("DROP TABLE outbox")
    conn.close()


def test_an_older_registry_goes_through_registry_which_migrates_it(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {args: _lean(db, monkeypatch, *args).output for args in [(), ("--usage", "--format", "csv")]}
    _make_older(db)
    assert RegistryReader.open(str(db)) is None  # not read as if current
    for args, want in before.items():
        assert _cli(db, *args).output == want
    with sqlite3.connect(db) as conn:
        assert {r[0] for r in conn.execute("SELECT name FROM _migrations")} == set(MIGRATION_NAMES)
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    conn.close()
    assert _lean(db, monkeypatch).output == before[()]  # migrated: the cheap path reads it again


def test_the_schema_version_is_one_list() -> None:
    assert tuple(name for name, _ in MIGRATIONS) == MIGRATION_NAMES


@pytest.mark.parametrize("content", [b"not a database at all\n" * 200, b"SQLite format 3\x00" + b"\xff" * 100],
                         ids=["text", "truncated"])  # fmt: skip
def test_a_file_that_is_no_registry_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      content: bytes) -> None:  # fmt: skip
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    for args in [(), ("--json",), ("--usage", "--format", "csv")]:
        res = CliRunner().invoke(cli, ["--db", str(bad), "tasks", "list", *args])
        lines = res.output.splitlines()
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert lines[0] == f"error: {bad} is not an hpcbridge registry: file is not a database"
        assert lines[1].startswith("hint: ") and len(lines) == 2
    assert bad.read_bytes() == content  # nothing written to it


def test_a_locked_registry_is_one_error_line(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the file exclusively (a WAL file too: locking_mode=EXCLUSIVE);
    # the listing waits for the busy timeout (shortened here), then says so.
    monkeypatch.setattr(registry_read, "BUSY_TIMEOUT_MS", 100)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE tasks SET reason = reason")
    try:
        res = CliRunner().invoke(cli, ["--db", str(db), "tasks", "list"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.exit_code == 1
    assert res.output.splitlines() == [f"error: registry {db} is locked: database is locked",
                                       "hint: another hpcbridge process holds it for too long; try again"]  # fmt: skip


def test_a_listing_reads_no_config(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A listing reads only the registry: a config file it would refuse plays no part.
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'default_cluster = "caf\xe9"\n')
    res = CliRunner().invoke(cli, ["--config", str(cfg), "--db", str(db), "tasks", "list", "--json"])
    assert res.exit_code == 0 and '"name": "a-ok"' in res.output
    assert CliRunner().invoke(cli, ["--config", str(cfg), "--db", str(db), "config"]).exit_code == 1


def test_a_path_with_uri_characters_is_read_as_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader opens a `file:` URI: '?', '#' and '%' in the path must stay part of it.
    odd = tmp_path / "a?b#c%41 d" / "r?x.db"
    odd.parent.mkdir()
    ids = _fill(odd)
    res = _lean(odd, monkeypatch, "--json")
    assert res.exit_code == 0 and res.output.count('"id"') == len(ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a?b#c%41 d"]  # nothing created beside it
