"""The user's submit limit, enforced by the real lab (AccountingStorageEnforce=limits,qos): a
job submitted by other means fills the slot hpcbridge does not count, sbatch refuses the
sweep (AssocMaxSubmitJobLimit), and the tasks wait, never fail, spend no attempt, and go out
once the slot is free (issue: sweeps, "they never fail for it").

The limit lives on an account of its own (``hpcbtest``, MaxSubmitJobs=2 on the lab user's
association there), created for the test and removed after it; the tasks and the other job
name that account, so nothing else on the lab is limited by it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.config import ClusterConfig
from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import lab_service, squeue_as_root, wait_for
from .test_arrays import config_with, drive
from .test_recovery import root_scancel

pytestmark = pytest.mark.integration
S = TaskState
ACCOUNT = "hpcbtest"
LIMIT = 2


def sacctmgr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True, timeout=60)


def assoc_mgr(user: str) -> str:
    """What slurmctld holds of the user's associations (slurmdbd pushes changes to it)."""
    return subprocess.run(["scontrol", "show", "assoc_mgr", f"users={user}", f"accounts={ACCOUNT}", "flags=assoc"],
                          capture_output=True, text=True, timeout=30).stdout  # fmt: skip


@pytest.fixture
def limited_account(lab_cluster: ClusterConfig) -> Iterator[str]:
    user = lab_cluster.user or "hpcblab"

    def drop() -> bool:
        sacctmgr("delete", "user", user, f"account={ACCOUNT}")
        sacctmgr("delete", "account", ACCOUNT)
        return ACCOUNT not in sacctmgr("-nP", "show", "account", ACCOUNT, "format=account").stdout

    drop()
    for args in (("add", "account", ACCOUNT, "parent=lab", "cluster=lab", "description=test", "organization=lab"),
                 ("add", "user", user, f"account={ACCOUNT}", "cluster=lab", f"MaxSubmitJobs={LIMIT}")):  # fmt: skip
        res = sacctmgr(*args)
        assert res.returncode == 0, f"sacctmgr {' '.join(args)}: {res.stderr}"
    wait_for(lambda: f"MaxSubmitJobs={LIMIT}(" in assoc_mgr(user), 30, "slurmctld to hold the account's limit", 0.1)
    try:
        yield ACCOUNT
    finally:
        # An association with jobs still pending cannot be removed: their cancel takes a moment.
        wait_for(drop, 60, f"account {ACCOUNT} removed", 0.5)


@pytest.fixture
def svc(lab_config: Path, tmp_path: Path, limited_account: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    cfg = config_with(lab_config, tmp_path, f'account = "{limited_account}"', "submit_limit_retry_seconds = 2")
    monkeypatch.setenv("HPCBRIDGE_CONFIG", str(cfg))
    yield from lab_service(cfg, tmp_path / "registry.db")


def test_a_sweep_refused_for_the_submit_limit_waits_and_goes_out_once_a_slot_frees(
        svc: Service, lab_cluster: ClusterConfig) -> None:  # fmt: skip
    user = lab_cluster.user or "hpcblab"
    other = subprocess.run(["runuser", "-u", user, "--", "sbatch", "--parsable", "-H", f"--account={ACCOUNT}",
                            "-p", "debug", "-o", "/dev/null", "--wrap", "true"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert other.returncode == 0, other.stderr
    other_id = other.stdout.strip().split(";")[0]
    try:
        # One of the two slots is taken by a job hpcbridge did not submit: the sweep of two
        # (one array) does not fit, and sbatch says so.
        tasks = svc.submit_many([{"command": ["true"], "name": f"lim{i}", "max_attempts": 1} for i in range(2)])
        for t in tasks:
            assert t.state == S.CREATED and t.attempt_count == 0, (t.state, t.reason)
            assert svc.attempts(t.id) == [], "a refused attempt is withdrawn"
            details = [e.detail or "" for e in svc.events(t.id)]
            assert any("withdrawn" in d and "AssocMaxSubmitJobLimit" in d and "waiting for a submit slot" in d
                       for d in details), details  # fmt: skip
        assert squeue_as_root("-u", user, "-A", ACCOUNT, "-o", "%i").split() == [other_id]

        svc.sync_cluster("lab")  # still full: refused again (not failed), or not yet due
        assert all(svc.get(t.id).state in (S.CREATED, S.STAGING) for t in tasks)
    finally:
        root_scancel(other_id)
    wait_for(lambda: other_id not in squeue_as_root("-o", "%i").split(), 60, "the other job to leave the queue")

    ended = drive(svc, [t.id for t in tasks], lambda ts: all(t.state.terminal for t in ts), 180,
                  "the sweep to finish once the slot is free")  # fmt: skip
    assert [t.state for t in ended] == [S.SUCCEEDED] * 2, [(t.state, t.reason) for t in ended]
    for t in ended:
        # max_attempts = 1: the refusals spent none of it, and the job that ran is attempt 1
        assert [(a.number, bool(a.job_id)) for a in svc.attempts(t.id)] == [(1, True)]
