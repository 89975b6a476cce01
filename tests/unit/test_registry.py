"""Registry: migrations, file mode, compare-and-set under two connections, id prefixes."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from hpcbridge.errors import AmbiguousTaskId, ConflictError, IllegalTransition, TaskNotFound
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Task, TaskSpec, new_task_id
from hpcbridge.registry import MIGRATIONS, Registry

S = TaskState


def make_task(task_id: str | None = None, **kw: object) -> Task:
    now = time.time()
    return Task(
        id=task_id or new_task_id(),
        spec=TaskSpec(command=("true",), name=str(kw.get("name", "t"))),
        state=S.CREATED,
        metadata={"a": "1"},
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "reg.db"


def test_file_created_private_and_all_migrations_recorded(db: Path) -> None:
    reg = Registry(db)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert reg.applied_migrations() == [name for name, _ in MIGRATIONS]
    assert reg.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for table in ("tasks", "attempts", "events", "budget"):
        assert reg.db[table].exists()


def test_migrations_apply_once_and_resume_from_older_schema(db: Path) -> None:
    reg = Registry(db)
    assert reg.migrate() == []
    # Simulate a registry written by an older version: only the first migration applied.
    reg.conn.execute("DROP TABLE budget")
    reg.conn.execute("DELETE FROM _migrations WHERE name != '001_initial'")
    reg.close()
    reg2 = Registry(db)
    assert reg2.applied_migrations() == [name for name, _ in MIGRATIONS]
    assert reg2.db["budget"].exists()


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Exception, match="not an hpcbridge registry|not a database"):
        Registry(bad)


def test_compare_and_set_between_two_connections(db: Path) -> None:
    a, b = Registry(db), Registry(db)
    task = make_task()
    a.insert_task(task, source="test")
    a.transition(task.id, S.CREATED, S.STAGING, source="a")
    # b still believes the task is CREATED: its write must be refused, not applied.
    with pytest.raises(ConflictError, match="expected state created, found staging"):
        b.transition(task.id, S.CREATED, S.CANCELLED, source="b")
    assert b.get_task(task.id).state == S.STAGING
    states = [(e.from_state, e.to_state) for e in b.events(task.id) if e.kind == "state"]
    assert states == [(None, "created"), ("created", "staging")]


def test_concurrent_cas_exactly_one_winner(db: Path) -> None:
    task = make_task()
    Registry(db).insert_task(task, source="test")
    wins: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        reg = Registry(db)
        barrier.wait()
        try:
            reg.transition(task.id, S.CREATED, S.STAGING, source=f"w{n}")
            wins.append(f"w{n}")
        except ConflictError:
            pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(wins) == 1
    events = Registry(db).events(task.id)
    assert sum(1 for e in events if e.to_state == "staging") == 1


def test_illegal_transition_writes_nothing(db: Path) -> None:
    reg = Registry(db)
    task = make_task()
    reg.insert_task(task, source="test")
    with pytest.raises(IllegalTransition):
        reg.transition(task.id, S.CREATED, S.SUCCEEDED, source="t")
    assert reg.get_task(task.id).state == S.CREATED
    assert len(reg.events(task.id)) == 1


def test_failed_transaction_rolls_back(db: Path) -> None:
    reg = Registry(db)
    task = make_task()
    reg.insert_task(task, source="test")
    with pytest.raises(RuntimeError):
        with reg.transaction():
            reg.transition(task.id, S.CREATED, S.STAGING, source="t")
            raise RuntimeError("boom")
    assert reg.get_task(task.id).state == S.CREATED


def test_prefix_resolution(db: Path) -> None:
    reg = Registry(db)
    reg.insert_task(make_task("abc111"), source="t")
    reg.insert_task(make_task("abc222"), source="t")
    assert reg.resolve_id("abc1") == "abc111"
    assert reg.resolve_id("abc222") == "abc222"
    with pytest.raises(AmbiguousTaskId, match="abc111, abc222"):
        reg.resolve_id("abc")
    with pytest.raises(TaskNotFound):
        reg.resolve_id("zzz")
    # LIKE wildcards in a hostile id match nothing
    with pytest.raises(TaskNotFound):
        reg.resolve_id("%")
    with pytest.raises(TaskNotFound):
        reg.resolve_id("abc_")


def test_metadata_merge_and_delete(db: Path) -> None:
    reg = Registry(db)
    task = make_task()
    reg.insert_task(task, source="t")
    assert reg.update_metadata(task.id, {"b": "2", "a": None}) == {"b": "2"}
    assert Registry(db).get_task(task.id).metadata == {"b": "2"}
    assert any(e.kind == "metadata" for e in reg.events(task.id))


def test_list_filters(db: Path) -> None:
    reg = Registry(db)
    ids = []
    for i in range(5):
        t = make_task(new_task_id(time.time() + i))
        reg.insert_task(t, source="t")
        ids.append(t.id)
    reg.transition(ids[0], S.CREATED, S.CANCELLED, source="t")
    assert [t.id for t in reg.list_tasks(states=[S.CANCELLED])] == [ids[0]]
    assert [t.id for t in reg.list_tasks(limit=2)] == ids[::-1][:2]
    assert reg.list_tasks(states=[]) == []


def test_token_bucket_shared(db: Path) -> None:
    a, b = Registry(db), Registry(db)
    assert a.take_budget("c", 5, rate_per_minute=60, burst=10) == 0
    assert b.take_budget("c", 5, rate_per_minute=60, burst=10) == 0
    wait = a.take_budget("c", 5, rate_per_minute=60, burst=10)
    assert 4 < wait <= 5.1  # 5 tokens short at 1 token/s


def test_task_ids_sort_by_time() -> None:
    ids = [new_task_id(1_700_000_000 + i) for i in range(50)]
    assert ids == sorted(ids)
    assert len(ids[0]) == 13


def test_busy_database_waits_instead_of_failing(db: Path) -> None:
    reg = Registry(db)
    task = make_task()
    reg.insert_task(task, source="t")
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    released.start()
    t0 = time.monotonic()
    reg.transition(task.id, S.CREATED, S.STAGING, source="t")  # waits for the lock
    assert time.monotonic() - t0 >= 0.4
    released.join()


def test_nested_transactions_join_through_savepoints_and_record_once_committed(db: Path) -> None:
    reg = Registry(db)
    a, b = make_task(), make_task()
    reg.insert_tasks([a, b], source="test")
    with reg.recording() as outer, reg.recording() as inner:
        with reg.transaction():
            reg.transition(a.id, S.CREATED, S.STAGING, source="t")
            with pytest.raises(RuntimeError):
                with reg.transaction():  # a SAVEPOINT: only its own writes roll back
                    reg.transition(b.id, S.CREATED, S.STAGING, source="t")
                    raise RuntimeError("inner fails")
            assert outer == [] and inner == [], "nothing is recorded before the commit"
    assert reg.get_task(a.id).state == S.STAGING
    assert reg.get_task(b.id).state == S.CREATED
    assert outer == inner == [(a.id, "created", "staging")]
