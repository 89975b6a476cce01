"""Several hpcbridge processes on one registry at once: submitters, sync, the daemon."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import time

import pytest

import hpcbridge
from hpcbridge import TaskState
from hpcbridge.leases import Lease
from hpcbridge.options import SubmitOptions, build_spec
from hpcbridge.service import Service
from hpcbridge.submission import start_attempts

S = TaskState

RACE_BUG = (
    "BUG: service.py Service.start_attempts races a concurrent sync cycle (sync.py _cycle step 3 "
    "takes CREATED/STAGING tasks that a submitter is still starting): the CREATED->STAGING move "
    "uses registry.transition (ConflictError escapes submit/sync) and add_attempt runs before the "
    "compare-and-set transition (sqlite3.IntegrityError on attempts(task_id, number))"
)

SUBMITTERS = 4
PER_SUBMITTER = 10

SUBMIT_CODE = textwrap.dedent(
    """
    import sys, hpcbridge
    ids = []
    for i in range({n}):
        ids.append(hpcbridge.submit(["true"], name=f"p{{sys.argv[1]}}-{{i}}").id)
    print("\\n".join(ids))
    """
)

SYNC_LOOP_CODE = textwrap.dedent(
    """
    import subprocess, sys, time
    end = time.monotonic() + float(sys.argv[1])
    runs = 0
    while time.monotonic() < end:
        r = subprocess.run([sys.executable, "-m", "hpcbridge", "sync"], capture_output=True, text=True)
        sys.stderr.write(r.stderr)
        if r.returncode != 0:
            print(f"sync exited {r.returncode}", file=sys.stderr)
            sys.exit(1)
        runs += 1
    print(runs)
    """
)


def _spawn(hb, argv):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=hb.env, cwd=hb.cwd)  # fmt: skip


def _duplicate_moves(task: hpcbridge.Task) -> list[tuple[str | None, str | None]]:
    counts = collections.Counter(
        (e.from_state, e.to_state) for e in task.events() if e.kind == "state"
    )
    return [move for move, n in counts.items() if n > 1]


def test_parallel_submitters_with_sync_and_daemon(hb):
    """4 processes submit 10 tasks each while `hpcbridge sync` runs in a loop and a daemon
    cycles every second: no lock errors, every task accounted for, one attempt each."""
    procs = {
        "sync-loop": _spawn(hb, [sys.executable, "-c", SYNC_LOOP_CODE, "4"]),
        "daemon": _spawn(hb, [sys.executable, "-m", "hpcbridge", "daemon", "--interval", "1",
                              "--max-cycles", "3"]),  # fmt: skip
    }
    for i in range(SUBMITTERS):
        procs[f"submitter-{i}"] = _spawn(
            hb, [sys.executable, "-c", SUBMIT_CODE.format(n=PER_SUBMITTER), str(i)]
        )
    outputs = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=45)
            outputs[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, (rc, _out, err) in outputs.items():
        assert "database is locked" not in err, f"{name}: {err}"
        assert "Traceback" not in err, f"{name}: {err}"
        assert rc == 0, f"{name} exited {rc}: {err}"

    submitted = [line for i in range(SUBMITTERS) for line in outputs[f"submitter-{i}"][1].split()]
    assert len(submitted) == SUBMITTERS * PER_SUBMITTER
    assert len(set(submitted)) == len(submitted)
    registered = {t.id for t in hpcbridge.list_tasks(limit=1000)}
    assert registered == set(submitted)

    tasks = [hpcbridge.Task(t) for t in submitted]
    assert hpcbridge.wait_all(tasks, timeout=30) == [S.SUCCEEDED] * len(tasks)
    for task in tasks:
        attempts = task.attempts()
        assert [a.number for a in attempts] == [1], (task.id, attempts)
        assert attempts[0].exit_code == 0
        assert _duplicate_moves(task) == [], (task.id, task.events())
    names = sorted(t.name for t in tasks)
    assert names == sorted(f"p{i}-{j}" for i in range(SUBMITTERS) for j in range(PER_SUBMITTER))


def test_two_syncs_at_the_same_instant(hb, run_proc):
    """Two `hpcbridge sync` started together: both exit 0, each transition recorded once."""
    tasks = hpcbridge.submit_many([{"command": ["true"]} for _ in range(10)])
    # Let every job finish without anybody syncing, so both syncs find work to do.
    time.sleep(1.0)
    argv = [sys.executable, "-m", "hpcbridge", "sync"]
    a, b = _spawn(hb, argv), _spawn(hb, argv)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=30), b.communicate(timeout=30)
    for rc, err in ((a.returncode, err_a), (b.returncode, err_b)):
        assert rc == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
    changes = [ln for ln in (out_a + out_b).splitlines() if "queued -> fetching" in ln
               or "running -> fetching" in ln]  # fmt: skip
    assert len(changes) == len({ln.split()[0] for ln in changes}) == 10, out_a + out_b
    assert hpcbridge.wait_all(tasks, timeout=30) == [S.SUCCEEDED] * 10
    for task in tasks:
        assert _duplicate_moves(task) == [], task.events()
        to_fetching = [e for e in task.events() if e.to_state == "fetching"]
        assert len(to_fetching) == 1
        assert len(task.attempts()) == 1


def test_concurrent_kill_and_sync_cancel_once(hb):
    """A kill from one process while another syncs: cancelled exactly once."""
    tasks = hpcbridge.submit_many([{"command": ["sleep", "30"]} for _ in range(3)])
    ids = [t.id for t in tasks]
    kill_code = f"import hpcbridge; [hpcbridge.Task(t).kill() for t in {ids!r}]"
    killer = _spawn(hb, [sys.executable, "-c", kill_code])
    syncer = _spawn(hb, [sys.executable, "-m", "hpcbridge", "sync"])
    for proc in (killer, syncer):
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    assert hpcbridge.wait_all(tasks, timeout=20) == [S.CANCELLED] * 3
    for task in tasks:
        assert [e.to_state for e in task.events()].count("cancelled") == 1
        assert _duplicate_moves(task) == []


# ---------------------------------------------------------------------- deterministic races
# Two Service objects on one registry stand for two processes; a hook runs the other one's
# step at the exact moment a real interleaving could.


@pytest.fixture
def two_services(hb):
    submitter = Service.open(None, None, source="api")
    syncer = Service.open(None, None, source="sync")
    yield submitter, syncer
    submitter.close()
    syncer.close()


def _assert_one_clean_run(svc: Service) -> None:
    [task] = svc.list_tasks()
    done = svc.wait([task.id], timeout=20)[0]
    assert done.state == S.SUCCEEDED, done
    assert [a.number for a in svc.registry.attempts(task.id)] == [1]
    assert [e.to_state for e in svc.registry.events(task.id)].count("submitting") == 1


def test_submit_survives_a_sync_between_register_and_stage(two_services):
    submitter, syncer = two_services
    insert = submitter.registry.insert_task

    def insert_then_sync(task, **kw):
        insert(task, **kw)
        syncer.sync_cluster("local")  # another process's cycle sees the new CREATED task

    submitter.registry.insert_task = insert_then_sync  # type: ignore[method-assign]
    submitter.submit(command=["true"])  # today: ConflictError created -> staging
    _assert_one_clean_run(submitter)


def test_submit_survives_a_sync_while_staging(two_services):
    submitter, syncer = two_services
    backend = submitter.backend("local")
    prepare = backend.prepare

    def sync_then_prepare(tasks):
        syncer.sync_cluster("local")  # another process's cycle sees the task in STAGING
        return prepare(tasks)

    backend.prepare = sync_then_prepare  # type: ignore[method-assign]
    submitter.submit(command=["true"])  # today: sqlite3.IntegrityError (attempt 1 twice)
    _assert_one_clean_run(submitter)


def test_sync_survives_a_submit_finishing_while_it_stages(two_services):
    submitter, syncer = two_services
    # The submitter registered the task and moved it to STAGING, then the sync cycle listed it.
    spec, meta = build_spec(SubmitOptions(command=("true",)), submitter.cluster(None))
    from hpcbridge.models import Task, new_task_id

    now = time.time()
    tid = new_task_id(now)
    submitter.registry.insert_task(
        Task(id=tid, spec=spec, state=S.CREATED, metadata=meta, created_at=now, updated_at=now),
        source="api",
    )
    submitter.registry.transition(tid, S.CREATED, S.STAGING, source="api")
    backend = syncer.backend("local")
    prepare = backend.prepare

    def submitter_finishes_first(tasks):
        with Lease(submitter.runtime.lease_dir) as lease:
            start_attempts(submitter.runtime, "local", [submitter.registry.get_task(tid)], lease)
        return prepare(tasks)

    backend.prepare = submitter_finishes_first  # type: ignore[method-assign]
    report = syncer.sync_cluster("local")  # today: sqlite3.IntegrityError escapes the cycle
    assert report.errors == []
    _assert_one_clean_run(submitter)
