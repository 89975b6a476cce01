"""``hpcbridge daemon`` and cron-style ``hpcbridge sync`` as real processes.

* SIGTERM stops the daemon cleanly (exit 0, within seconds) and it logs one line per state
  change it applied (local backend: no lab needed);
* on the lab: tasks progress while it runs; with sshd gone it logs the cluster as unreachable
  with a growing backoff and changes nothing, then catches up once sshd is back;
* a cron ``sync -q`` that finds another holding the cluster lock exits 0 and prints nothing.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.config import ClusterConfig
from hpcbridge.cycle import cluster_lock
from hpcbridge.registry import Registry

from .conftest import lab_cmd, squeue_as_root, wait_for

CHANGE = re.compile(r"hpcbridge\.daemon: task (\S+): (\w+) -> (\w+)$")
UNREACHABLE = re.compile(r"cluster (\S+) unreachable \((\d+) in a row\); next try in (\d+) s")
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "out_of_memory", "lost"}


def _env(tmp_path: Path, config: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    env["HPCBRIDGE_DB"] = str(tmp_path / "registry.db")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")  # no user config leaks in
    if config is not None:
        env["HPCBRIDGE_CONFIG"] = str(config)
    return env


def _cli(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcbridge", *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _submit(env: dict[str, str], *argv: str) -> str:
    res = _cli(env, "submit", *argv)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


class Daemon:
    """``hpcbridge daemon`` in its own process group, stderr to a file (read at any time)."""

    def __init__(self, env: dict[str, str], log: Path, *argv: str) -> None:
        self.log = log
        self.started = time.time()
        with log.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "hpcbridge", "daemon", *argv], env=env,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _states(db: Path) -> dict[str, str]:
    reg = Registry(db)
    try:
        return {t.id: t.state.value for t in reg.list_tasks()}
    finally:
        reg.close()


def _state_events_since(db: Path, since: float) -> dict[str, list[tuple[str, str]]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT task_id, from_state, to_state FROM events WHERE kind = 'state' AND at >= ?"
                            " ORDER BY id", (since,)).fetchall()  # fmt: skip
    finally:
        conn.close()
    out: dict[str, list[tuple[str, str]]] = {}
    for tid, old, new in rows:
        out.setdefault(tid, []).append((old, new))
    return out


def _logged_changes(text: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if m := CHANGE.search(line):
            out.setdefault(m[1], []).append((m[2], m[3]))
    return out


# --------------------------------------------------------------------------- local backend


def test_sigterm_stops_cleanly_and_logs_each_change(tmp_path: Path) -> None:
    env = _env(tmp_path, None)  # no config: the built-in `local` cluster
    db = tmp_path / "registry.db"
    ids = [_submit(env, "--", "sleep", "2") for _ in range(3)]
    before = _states(db)
    assert set(before) == set(ids) and not set(before.values()) & TERMINAL
    since = time.time()
    d = Daemon(env, tmp_path / "daemon.log", "--interval", "1")
    try:
        wait_for(
            lambda: set(_states(db).values()) == {"succeeded"},
            60,
            "tasks to succeed under the daemon",
        )
        time.sleep(1.5)  # one more idle cycle: nothing more to log
        assert d.proc.poll() is None, f"daemon exited early: {d.text()}"
        rc, took = d.terminate()
    finally:
        d.kill()
    text = d.text()
    assert rc == 0, text
    assert took < 5, f"SIGTERM took {took:.1f} s"
    assert "signal SIGTERM: stopping after the current cycle" in text
    assert "Traceback" not in text
    logged = _logged_changes(text)
    recorded = _state_events_since(db, since)
    # Exactly one line per state change, in order, for every task.
    assert logged == recorded, f"logged {logged}\nrecorded {recorded}"
    for tid in ids:
        assert logged[tid][-1] == ("fetching", "succeeded")
        assert logged[tid][0][0] in ("queued", "running")


def test_daemon_logs_the_resubmission_of_a_retry(tmp_path: Path) -> None:
    env = _env(tmp_path, None)
    db = tmp_path / "registry.db"
    tid = _submit(env, "--max-attempts", "2", "--retry-on", "failed", "--", "false")
    since = time.time()
    d = Daemon(env, tmp_path / "daemon.log", "--interval", "1")
    try:
        wait_for(lambda: _states(db)[tid] in TERMINAL, 60, "the retried task to end")
        time.sleep(1.5)
        rc, _ = d.terminate()
    finally:
        d.kill()
    assert rc == 0
    recorded = _state_events_since(db, since)[tid]
    assert ("retrying", "submitting") in recorded  # the daemon did resubmit it
    assert _logged_changes(d.text())[tid] == recorded


def test_cron_sync_while_locked_exits_0_quietly(tmp_path: Path) -> None:
    env = _env(tmp_path, None)
    db = tmp_path / "registry.db"
    tid = _submit(env, "--", "sleep", "1")
    time.sleep(2)  # the job is over: an unlocked sync would move the task now
    before = _state_events_since(db, 0)
    with cluster_lock(db.parent, "local") as got:  # as a long sync in another process would
        assert got
        res = _cli(env, "sync", "-q")
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
        res = _cli(env, "sync")
        assert res.returncode == 0
        assert "local: skipped (another sync holds the lock)" in res.stdout
    assert _state_events_since(db, 0) == before  # the skipped syncs changed nothing
    wait_for(lambda: _cli(env, "sync", "-q").returncode == 0 and _states(db)[tid] == "succeeded", 30,
             "the task to finish once the lock is free")  # fmt: skip


# --------------------------------------------------------------------------- on the lab


@pytest.fixture
def lab_env(lab_config: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    from .test_crash_safety import ct  # the config-override helper of scripts/crash-trials

    config = ct.make_config(lab_config, "lab", tmp_path / "fast.toml",
                            {"submit_grace_seconds": 6, "lost_grace_seconds": 120})  # fmt: skip
    env = _env(tmp_path, config)
    yield env
    # No job of this test left on the shared lab: cancel the live ones by id.
    db = Path(env["HPCBRIDGE_DB"])
    if db.exists():
        conn = sqlite3.connect(db)
        ids = [r[0] for r in conn.execute("SELECT job_id FROM attempts WHERE job_id IS NOT NULL")]
        conn.close()
        live = [j for j in ids if squeue_as_root("-j", j).strip()]
        if live:
            subprocess.run(["scancel", *live], capture_output=True, timeout=60)


def _drop_ssh_sessions_of(pid: int, port: int) -> int:
    """Kill the lab sshd session processes serving ``pid``'s SSH connections (only those):
    with the listener stopped too, that is the cluster going away under a live daemon."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    local_ports = [m[1] for line in out.splitlines() if f"pid={pid}," in line
                   for m in [re.search(rf"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:{port}", line)] if m]  # fmt: skip
    killed = 0
    for lp in local_ports:
        srv = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} and dport = :{lp} )"],
                             capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        for spid in {int(p) for p in re.findall(r"pid=(\d+)", srv)}:
            try:
                os.kill(spid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


@pytest.mark.integration
@pytest.mark.slow
def test_daemon_on_lab_progress_outage_backoff_catch_up(lab_env: dict[str, str], lab_cluster: ClusterConfig,
                                                        tmp_path: Path) -> None:  # fmt: skip
    env = lab_env
    port = lab_cluster.port or 22
    db = Path(env["HPCBRIDGE_DB"])
    quick = _submit(env, "--cluster", "lab", "--", "sleep", "2")
    slow = _submit(env, "--cluster", "lab", "--", "sleep", "30")
    since = time.time()
    d = Daemon(env, tmp_path / "daemon.log", "--interval", "1")
    late = None
    try:
        # Tasks progress while it runs.
        wait_for(lambda: _states(db)[quick] == "succeeded" and _states(db)[slow] == "running", 90,
                 "the quick task to succeed and the slow one to run")  # fmt: skip
        frozen = _states(db)
        events_before = _state_events_since(db, 0)

        lab_cmd("sshd-stop")
        try:
            assert _drop_ssh_sessions_of(d.proc.pid, port) >= 1, (
                "the daemon had no SSH session to drop"
            )
            # While the cluster is away: unreachable with a growing backoff, nothing changes.
            late = _submit(env, "--cluster", "lab", "--", "true")  # registered, not submitted
            wait_for(
                lambda: len(UNREACHABLE.findall(d.text())) >= 3, 60, "three unreachable reports"
            )
            tries = [(int(n), int(s)) for _, n, s in UNREACHABLE.findall(d.text())]
            assert [n for n, _ in tries[:3]] == [1, 2, 3]
            assert tries[0][1] < tries[1][1] < tries[2][1], f"no backoff: {tries}"
            assert {k: v for k, v in _states(db).items() if k != late} == frozen
            assert _states(db)[late] == "created"
            assert _state_events_since(db, 0) == {
                **events_before,
                late: _state_events_since(db, 0).get(late, []),
            }
        finally:
            lab_cmd("sshd-start")

        # Back: the daemon catches up (after its current backoff) and submits the late task.
        wait_for(lambda: {_states(db)[t] for t in (slow, late)} == {"succeeded"}, 180,
                 "the daemon to catch up after the outage")  # fmt: skip
        assert d.proc.poll() is None, d.text()
        rc, took = d.terminate()
    finally:
        d.kill()
    text = d.text()
    assert rc == 0 and took < 10, (rc, took, text[-3000:])
    assert "Traceback" not in text
    # One line per state change for the tasks that were in flight when the daemon started.
    logged, recorded = _logged_changes(text), _state_events_since(db, since)
    for tid in (quick, slow):
        assert logged[tid] == recorded[tid], (tid, logged.get(tid), recorded[tid])
    assert logged[late][-1] == ("fetching", "succeeded")
