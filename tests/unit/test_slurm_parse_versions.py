"""The parsers on output captured from three real Slurm versions, one test body for all three.

``tests/data/slurm/<version>/`` were all made by ``scripts/lab/capture.sh`` against
``scripts/slurm-lab`` (same scenarios, same commands; job ids differ and are read from each
directory's ``commands.log``):

* 22.05.8 - Debian 12 host (docs/LAB.md)
* 24.11.5 - Debian 13 chroot (``scripts/lab/chroot-lab trixie``, docs/DEBIAN13.md)
* 26.05.5 - Debian forky chroot (``scripts/lab/chroot-lab forky``, docs/SLURM_VERSIONS.md)

capture.sh uses its own field orders (tests/data/slurm/COMMANDS.md); the helpers reorder those
real values into hpcbridge's SQUEUE_FIELDS / SACCT_FIELDS order, so each parser sees exactly the
line shape hpcbridge's own query would get. Where a version prints something else, the
expectation is a per-version table right next to the assertion (the differences are listed in
COMMANDS.md and docs/SLURM_VERSIONS.md):

* squeue ``-O exit_code``: the raw wait status on 22.05 (``768``, ``9``, ``15``), ``code:signal``
  since 24.11 (``3:0``, ``0:9``, ``0:15``).
* sacct ``Restarts``: no such field on 22.05; since 24.11 it equals the number of earlier
  instances that ``--duplicates`` prints, which is what the parser counts.
* 22.05 sacct lags: transient ``allocation``/PENDING rows for a running job; right after a node
  failure only the NODE_FAIL instance is listed, the new one not yet.
* 26.05 ``scontrol -o show job`` has new keys (``SubmitLine=`` with the whole sbatch command line,
  ``Exclusive=``, ``LicensesAlloc=``); squeue prints a StartTime for a job cancelled before it
  ran (DependencyNeverSatisfied), where 22.05/24.11 print ``N/A``.
"""

from __future__ import annotations

import re
from datetime import UTC
from functools import cache
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState as S
from hpcbridge.models import JobInfo
from hpcbridge.slurm import (
    SACCT_FIELDS,
    SQUEUE_FIELDS,
    merge_views,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_show_job,
    parse_squeue,
    squeue_missing_job_error,
    token_from_comment,
)

ROOT = Path(__file__).resolve().parents[1] / "data" / "slurm"
VERSIONS = ("22.05", "24.11", "26.05")
DEBIAN = {"22.05": "(bookworm)", "24.11": "(trixie)", "26.05": "forky"}

# capture.sh field orders (see its SQ_O / SA_F; sacct gets Restarts appended where it exists)
CAPTURE_SQUEUE = ["JobID", "JobArrayID", "ArrayJobID", "ArrayTaskID", "Name", "State", "Reason",
                  "NodeList", "Partition", "Comment", "SubmitTime", "StartTime", "EndTime",
                  "RestartCnt", "exit_code"]
CAPTURE_SACCT = ["JobID", "JobIDRaw", "JobName", "State", "ExitCode", "DerivedExitCode", "Reason",
                 "NodeList", "Partition", "Submit", "Start", "End", "Elapsed", "Comment"]


class Capture:
    """One version directory: its files, parsed as hpcbridge would, and its job ids."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.dir = ROOT / version
        self._ids: dict[str, list[str]] = {}
        self.sacct_fields = list(CAPTURE_SACCT)
        for line in self.read("commands.log").splitlines():
            name, cmd = line.split("\t", 1)
            jobs = re.search(r"--jobs=(\S+)", cmd)
            if jobs:
                self._ids.setdefault(name, jobs.group(1).split(","))
            if name == "sacct_pending.txt" and re.search(r"--format=\S*,Restarts\b", cmd):
                self.sacct_fields = [*CAPTURE_SACCT, "Restarts"]
        self.has_restarts = "Restarts" in self.sacct_fields

    def __repr__(self) -> str:
        return f"Capture({self.version})"

    def read(self, name: str) -> str:
        return (self.dir / name).read_text()

    def ids(self, scenario: str) -> list[str]:
        """The job ids of a scenario, in the order capture.sh submitted them."""
        return self._ids[f"sacct_{scenario}.txt"]

    def squeue_rows(self, name: str) -> list[dict[str, str]]:
        out = []
        for line in self.read(name).splitlines():
            f = line.split("|")
            assert f[-1] == "", line  # every -O field ends with "|"
            out.append(dict(zip(CAPTURE_SQUEUE, f[:-1], strict=True)))
        return out

    def squeue(self, name: str) -> dict[str, JobInfo]:
        text = "".join("|".join(r[k] for k in SQUEUE_FIELDS) + "\n" for r in self.squeue_rows(name))
        problems: list[str] = []
        rows = parse_squeue(text, tz=UTC, problems=problems)
        assert problems == []
        return {r.job_id: r for r in rows}

    def sacct_rows(self, name: str) -> list[dict[str, str]]:
        return [dict(zip(self.sacct_fields, line.split("|"), strict=True))
                for line in self.read(name).splitlines()]

    def sacct(self, name: str) -> dict[str, JobInfo]:
        text = "".join("|".join(r[k] for k in SACCT_FIELDS) + "\n" for r in self.sacct_rows(name))
        problems: list[str] = []
        jobs = parse_sacct(text, tz=UTC, problems=problems)
        assert problems == []
        return jobs

    def scontrol(self, name: str) -> dict[str, JobInfo]:
        problems: list[str] = []
        rows = parse_scontrol_show_job(self.read(name), tz=UTC, problems=problems)
        assert problems == []
        return {r.job_id: r for r in rows}


@cache
def capture(version: str) -> Capture:
    return Capture(version)


@pytest.fixture(params=VERSIONS)
def cap(request: pytest.FixtureRequest) -> Capture:
    return capture(request.param)


def files(pattern: str, *, exclude: str | None = None) -> list[tuple[str, str]]:
    return [(v, p.name) for v in VERSIONS for p in sorted((ROOT / v).glob(pattern))
            if exclude is None or exclude not in p.name]


def test_every_version_has_every_capture():
    # The monitoring captures (usage_*, queue_*: scripts/lab/capture-usage.sh) exist for 22.05
    # only so far; their parsers' tests say so. The limits captures (limits_*:
    # scripts/lab/capture-limits.sh, tests/unit/test_slurm_limits.py) exist for 22.05 and 24.11.
    names = {v: {p.name for p in (ROOT / v).iterdir()
                 if not p.name.startswith(("hpcb", "README-hpcb", "usage_", "queue_", "limits_"))}
             for v in VERSIONS}
    for v in VERSIONS:
        # 22.05 also has the cgroup-mode OOM captures (HPCBRIDGE_LAB_CGROUP=1)
        assert {n for n in names[v] if "oom_cgroup" not in n} == names["24.11"], v


def test_captures_are_of_their_version(cap):
    versions = cap.read("versions.txt")
    assert versions.startswith(f"slurm {cap.version}.")
    assert DEBIAN[cap.version] in versions.splitlines()[1]
    assert "ProctrackType=proctrack/linuxproc" in versions


# ------------------------------------------------------------------ every capture parses


@pytest.mark.parametrize("version,name", files("squeue_[!o]*.txt"))
def test_every_squeue_capture_parses_with_known_states(version, name):
    rows = capture(version).squeue(name)
    assert rows
    for r in rows.values():
        assert r.state is not None, (name, r.raw_state)


@pytest.mark.parametrize("version,name", files("sacct_*.txt", exclude="nodup"))
def test_every_sacct_capture_parses_and_restarts_match_the_restarts_column(version, name):
    """With --duplicates (as hpcbridge queries) the counted earlier instances == Restarts."""
    c = capture(version)
    jobs = c.sacct(name)
    # The last job row (no ".step") of each id carries sacct's own Restarts count (>= 24.11).
    last: dict[str, str] = {}
    for r in c.sacct_rows(name):
        if "." not in r["JobID"]:
            last[r["JobID"]] = r.get("Restarts", "")
    assert set(jobs) == set(last)
    for job_id, info in jobs.items():
        assert info.state is not None, (name, info.raw_state)
        if c.has_restarts:
            assert info.restarts == int(last[job_id]), (name, job_id)
        assert len(info.requeue_causes) == info.restarts


@pytest.mark.parametrize("version,name", files("scontrol_*.txt"))
def test_every_scontrol_capture_parses(version, name):
    rows = capture(version).scontrol(name)
    assert rows
    for r in rows.values():
        assert r.state is not None, (name, r.raw_state)


# ------------------------------------------------------------------ squeue

# squeue -O exit_code of `exit 3`: the raw wait status on 22.05, code:signal since 24.11
EXIT3_RAW = {"22.05": "768", "24.11": "3:0", "26.05": "3:0"}
# reason of a job killed by SIGKILL (and of the OverMemoryKill job)
KILL9_REASON = {"22.05": "JobLaunchFailure", "24.11": "RaisedSignal:9(Killed)",
                "26.05": "RaisedSignal:9(Killed)"}
# squeue exit_code of the --time=1 job as captured: 22.05 "15" (wait status: SIGTERM),
# 24.11 "143:0" (the shell exited 128+15), 26.05 "0:15"
TIMEOUT_EXIT = {"22.05": (0, 15), "24.11": (143, 0), "26.05": (0, 15)}


def test_squeue_exit_codes_and_outcomes(cap):
    assert cap.squeue_rows("squeue_failed_exit3.txt")[0]["exit_code"] == EXIT3_RAW[cap.version]
    (exit3,) = cap.squeue("squeue_failed_exit3.txt").values()
    assert (exit3.state, exit3.exit_code, exit3.signal, exit3.reason) == (
        S.FAILED, 3, 0, "NonZeroExitCode")
    (kill9,) = cap.squeue("squeue_failed_signal.txt").values()
    assert (kill9.state, kill9.exit_code, kill9.signal) == (S.FAILED, 0, 9)
    assert kill9.reason == KILL9_REASON[cap.version]
    (oom,) = cap.squeue("squeue_oom.txt").values()  # OverMemoryKill, no cgroups: FAILED 0:9
    assert (oom.state, oom.exit_code, oom.signal) == (S.FAILED, 0, 9)
    (cancelled,) = cap.squeue("squeue_cancelled.txt").values()
    assert (cancelled.state, cancelled.signal, cancelled.comment) == (
        S.CANCELLED, 15, "hpcbridge:task=run1")
    (timeout,) = cap.squeue("squeue_timeout.txt").values()
    assert (timeout.state, timeout.reason) == (S.TIMED_OUT, "TimeLimit")
    assert (timeout.exit_code, timeout.signal) == TIMEOUT_EXIT[cap.version]
    (ok,) = cap.squeue("squeue_completed.txt").values()
    assert (ok.state, ok.exit_code, ok.signal) == (S.SUCCEEDED, 0, 0)


def test_squeue_preempt_requeue_same_id_restarts_then_runs_again(cap):
    *lows, hid = cap.ids("preempt_requeue")
    pre = cap.squeue("squeue_preempt_requeue.txt")
    high = pre[hid]
    assert high.state is S.RUNNING and high.partition == "high" and high.end_time is None
    for jid in lows:
        low = pre[jid]
        assert (low.state, low.restarts, low.reason, low.partition) == (
            S.QUEUED, 1, "BeginTime", "low")
        assert low.start_time is None and low.end_time is None and low.exit_code is None
    rerun = cap.squeue("squeue_preempt_requeue_rerun.txt")
    assert rerun[hid].state is S.SUCCEEDED
    assert {rerun[j].state for j in lows} == {S.RUNNING}
    assert {rerun[j].restarts for j in lows} == {1}
    # PreemptMode=CANCEL: terminal PREEMPTED in squeue, killed with SIGTERM
    *lowcs, hcid = cap.ids("preempt_cancel")
    cancel = cap.squeue("squeue_preempt_cancel.txt")
    assert {cancel[j].state for j in lowcs} == {S.PREEMPTED}
    assert cancel[lowcs[0]].signal == 15 and cancel[hcid].state is S.SUCCEEDED


def test_squeue_debug_partition_is_not_preempted(cap):
    debug, high = cap.ids("debug_not_preempted")
    rows = cap.squeue("squeue_debug_not_preempted.txt")
    assert (rows[debug].state, rows[debug].restarts) == (S.RUNNING, 0)
    assert (rows[high].state, rows[high].reason) == (S.QUEUED, "Resources")


def test_squeue_pending_reasons(cap):
    blk, res, pri, beg, dep, hld = cap.ids("pending")
    rows = cap.squeue("squeue_pending.txt")
    assert rows[blk].state is S.RUNNING
    assert {j: (rows[j].state, rows[j].reason) for j in (res, pri, beg, dep, hld)} == {
        res: (S.QUEUED, "Resources"), pri: (S.QUEUED, "Priority"), beg: (S.QUEUED, "BeginTime"),
        dep: (S.QUEUED, "Dependency"), hld: (S.HELD, "JobHeldUser")}
    assert all(rows[j].start_time is None for j in (res, pri, beg, dep, hld))


def test_squeue_node_fail_and_scontrol_requeue_pend_with_restarts(cap):
    (nfid,) = cap.ids("node_fail")
    (nf,) = cap.squeue("squeue_node_fail.txt").values()
    assert (nf.job_id, nf.state, nf.restarts, nf.reason, nf.nodes) == (
        nfid, S.QUEUED, 1, "BeginTime", None)
    (rq,) = cap.squeue("squeue_requeue.txt").values()
    assert (rq.state, rq.restarts, rq.reason) == (S.QUEUED, 1, "BeginTime")
    hold, special = cap.ids("requeuehold")
    held = cap.squeue("squeue_requeuehold.txt")
    assert (held[hold].raw_state, held[hold].state, held[hold].restarts) == (
        "PENDING", S.HELD, 1)
    assert held[hold].reason == "job requeued in held state"
    # SPECIAL_EXIT is a held requeue, not an end (see slurm states)
    assert (held[special].raw_state, held[special].state, held[special].restarts) == (
        "SPECIAL_EXIT", S.HELD, 1)


def test_squeue_hold_and_release(cap):
    admin, user = cap.ids("hold")
    held = cap.squeue("squeue_hold.txt")
    assert (held[admin].state, held[admin].reason) == (S.HELD, "JobHeldAdmin")
    assert (held[user].state, held[user].reason) == (S.HELD, "JobHeldUser")
    released = cap.squeue("squeue_hold_released.txt")
    assert {released[j].reason for j in (admin, user)} == {"BeginTime"}
    assert {released[j].state for j in (admin, user)} == {S.QUEUED}  # released: queued again


# squeue StartTime of a job cancelled before it ever ran (DependencyNeverSatisfied)
NEVER_RAN_START = {"22.05": "N/A", "24.11": "N/A", "26.05": "end"}


def test_squeue_array_ids_suspend_dependency(cap):
    (aid,) = cap.ids("array_running")
    running = cap.squeue("squeue_array_running.txt")
    assert set(running) == {f"{aid}_[2-4%2]", f"{aid}_0", f"{aid}_1"}
    assert running[f"{aid}_[2-4%2]"].state is S.QUEUED
    assert running[f"{aid}_[2-4%2]"].reason == "JobArrayTaskLimit"
    assert running[f"{aid}_0"].state is S.RUNNING and running[f"{aid}_0"].nodes == "node1"
    done = cap.squeue("squeue_array_done.txt")
    tasks = [f"{aid}_{i}" for i in range(5)]
    assert sorted(done) == tasks
    assert (done[tasks[3]].state, done[tasks[3]].exit_code) == (S.FAILED, 3)
    assert {k for k, v in done.items() if v.state is S.SUCCEEDED} == set(tasks) - {tasks[3]}
    (susp,) = cap.squeue("squeue_suspended.txt").values()
    assert susp.state is S.SUSPENDED and susp.end_time is None and susp.exit_code is None
    parent, child = cap.ids("dependency_never_satisfied")
    dep = cap.squeue("squeue_dependency_never_satisfied.txt")
    assert (dep[child].state, dep[child].reason) == (S.CANCELLED, "DependencyNeverSatisfied")
    assert (dep[parent].state, dep[parent].exit_code) == (S.FAILED, 1)
    # The parser passes a terminal job's StartTime on as it is: on 26.05 a job that never ran
    # has one (its end); hpcbridge's sync records a start only for a job that really ran.
    (raw_child,) = (r for r in cap.squeue_rows("squeue_dependency_never_satisfied.txt")
                    if r["JobID"] == child)
    if NEVER_RAN_START[cap.version] == "N/A":
        assert raw_child["StartTime"] == "N/A" and dep[child].start_time is None
    else:
        assert raw_child["StartTime"] == raw_child["EndTime"]
        assert dep[child].start_time == dep[child].end_time is not None
    (c,) = cap.squeue("squeue_comment.txt").values()
    assert c.comment == "hpcbridge:task=3f2a9c;run=7 token=abc123"
    assert token_from_comment(c.comment) is None  # not an hpcb: comment


def test_squeue_unknown_job_and_invalid_field_errors(cap):
    assert squeue_missing_job_error(int(cap.read("err_squeue_unknown_job.rc")),
                                    cap.read("err_squeue_unknown_job.stderr"))
    assert "Invalid job id specified" in cap.read("err_squeue_unknown_job.stderr")
    assert int(cap.read("err_squeue_known_and_unknown_job.rc")) == 0
    known = cap.squeue("err_squeue_known_and_unknown_job.stdout")
    assert list(known) == cap._ids["err_squeue_known_and_unknown_job.{stdout,stderr,rc}"][:1]
    # ExitCode is still no squeue -O field: error on stderr, empty column, exit 0
    assert int(cap.read("err_squeue_exitcode_field.rc")) == 0
    assert "Invalid job format specification: ExitCode" in cap.read("err_squeue_exitcode_field.stderr")


# ------------------------------------------------------------------ sacct


def test_sacct_restarts_field_exists_since_24_11(cap):
    rc = int(cap.read("err_sacct_restarts_field.rc"))
    if cap.version == "22.05":
        assert rc == 1 and not cap.has_restarts
        assert 'Invalid field requested: "Restarts"' in cap.read("err_sacct_restarts_field.stderr")
    else:
        assert rc == 0 and cap.has_restarts
        assert cap.read("err_sacct_restarts_field.stdout").strip().endswith("|COMPLETED|0")
    assert cap.read("err_sacct_unknown_job.stdout") == "" and parse_sacct("") == {}
    assert int(cap.read("err_sacct_unknown_job.rc")) == 0


def test_sacct_without_duplicates_hides_the_requeue_cause(cap):
    # why hpcbridge always passes --duplicates: without it only the last instance shows
    low = cap.ids("preempt_requeue")[0]
    jobs = cap.sacct("sacct_window_nodup_X.txt")
    assert jobs[low].requeue_causes == () and jobs[low].restarts == 0
    if cap.has_restarts:
        last = {r["JobID"]: r["Restarts"] for r in cap.sacct_rows("sacct_window_nodup_X.txt")}
        assert last[low] == "1"
    assert cap.sacct("sacct_window_X.txt")[low].requeue_causes == ("PREEMPTED",)


def test_sacct_outcomes_and_exit_codes(cap):
    (exit3,) = cap.sacct("sacct_failed_exit3.txt").values()
    assert (exit3.state, exit3.exit_code, exit3.signal) == (S.FAILED, 3, 0)
    (kill9,) = cap.sacct("sacct_failed_signal.txt").values()
    assert (kill9.state, kill9.exit_code, kill9.signal) == (S.FAILED, 0, 9)
    (timeout,) = cap.sacct("sacct_timeout.txt").values()
    assert timeout.state is S.TIMED_OUT and timeout.end_time is not None
    (cancelled,) = cap.sacct("sacct_cancelled.txt").values()
    assert (cancelled.raw_state, cancelled.state, cancelled.comment) == (
        f"CANCELLED by {uid_of_lab_user(cap)}", S.CANCELLED, "hpcbridge:task=run1")
    (ok,) = cap.sacct("sacct_completed.txt").values()
    assert (ok.state, ok.exit_code, ok.name) == (S.SUCCEEDED, 0, "hb-ok")
    parent, child = cap.ids("dependency_never_satisfied")
    dep = cap.sacct("sacct_dependency_never_satisfied.txt")
    assert dep[child].state is S.CANCELLED and dep[child].nodes is None  # "None assigned"
    assert dep[child].start_time is None  # Start "None"
    assert (dep[parent].state, dep[parent].exit_code) == (S.FAILED, 1)
    pc = cap.sacct("sacct_preempt_cancel.txt")
    assert {pc[j].state for j in cap.ids("preempt_cancel")[:3]} == {S.PREEMPTED}


def uid_of_lab_user(cap: Capture) -> str:
    """The lab user's uid on that machine, as scontrol prints it: UserId=hpcblab(1000)."""
    (uid,) = set(re.findall(r"UserId=hpcblab\((\d+)\)", cap.read("scontrol_cancelled.txt")))
    return uid


def test_sacct_oom_without_cgroups_is_failed_signal_9_and_steps_do_not_upgrade_it(cap):
    (oid,) = cap.ids("oom")
    (oom,) = cap.sacct("sacct_oom.txt").values()
    assert (oom.state, oom.exit_code, oom.signal) == (S.FAILED, 0, 9)
    steps = cap.sacct("sacct_steps_oom.txt")
    assert set(steps) == {oid} and steps[oid].state is S.FAILED  # batch step: CANCELLED by 0
    assert f"{oid}.batch|{oid}.batch|batch|CANCELLED by 0|0:9|" in cap.read("sacct_steps_oom.txt")


def test_sacct_requeue_causes_from_duplicates(cap):
    *lows, hid = cap.ids("preempt_requeue")
    pre = cap.sacct("sacct_preempt_requeue.txt")  # right after preemption: new instances pending
    for jid in lows:
        assert (pre[jid].state, pre[jid].restarts, pre[jid].requeue_causes) == (
            S.QUEUED, 1, ("PREEMPTED",))
        assert pre[jid].nodes is None and pre[jid].start_time is None
    assert pre[hid].state is S.RUNNING and pre[hid].requeue_causes == ()
    rerun = cap.sacct("sacct_preempt_requeue_rerun.txt")
    for jid in lows:
        assert (rerun[jid].state, rerun[jid].restarts, rerun[jid].requeue_causes) == (
            S.RUNNING, 1, ("PREEMPTED",))
    assert rerun[lows[0]].reason == "BeginTime" and rerun[lows[0]].end_time is None
    assert rerun[hid].state is S.SUCCEEDED and rerun[hid].restarts == 0

    (nfid,) = cap.ids("node_fail")
    first = cap.sacct_rows("sacct_node_fail.txt")[0]
    assert first["State"] == "NODE_FAIL"
    nf = cap.sacct("sacct_node_fail.txt")[nfid]
    if cap.version == "22.05":
        # 22.05 sacct lags: only the failed instance is listed yet (squeue already says
        # PENDING, restart 1), and that instance's ExitCode is 0:0
        assert first["ExitCode"] == "0:0" and len(cap.sacct_rows("sacct_node_fail.txt")) == 1
        assert (nf.raw_state, nf.restarts) == ("NODE_FAIL", 0)
    else:
        assert first["ExitCode"] == "1:0"
        assert (nf.state, nf.restarts, nf.requeue_causes, nf.nodes) == (
            S.QUEUED, 1, ("NODE_FAIL",), None)
    nf2 = cap.sacct("sacct_node_fail_rerun.txt")[nfid]
    assert (nf2.state, nf2.restarts, nf2.requeue_causes, nf2.nodes) == (
        S.RUNNING, 1, ("NODE_FAIL",), "node2")

    (rqid,) = cap.ids("requeue")
    (rq,) = cap.sacct("sacct_requeue.txt").values()
    if cap.version == "22.05":  # the same lag after `scontrol requeue`: old instance only
        assert (rq.job_id, rq.raw_state, rq.restarts) == (rqid, "REQUEUED", 0)
        assert cap.squeue("squeue_requeue.txt")[rqid].restarts == 1  # squeue knows already
    else:
        assert (rq.job_id, rq.state, rq.restarts, rq.requeue_causes) == (
            rqid, S.QUEUED, 1, ("REQUEUED",))
    held = cap.sacct("sacct_requeuehold.txt")  # sacct shows both held jobs PENDING after REQUEUED
    # 22.05's sacct gives the held instance Reason JobHeldUser (held); 24.11 and 26.05 print
    # Reason None there, so sacct alone cannot tell the hold (squeue, which wins, can).
    sacct_held = {"22.05": S.HELD, "24.11": S.QUEUED, "26.05": S.QUEUED}[cap.version]
    for jid in cap.ids("requeuehold"):
        assert (held[jid].state, held[jid].restarts, held[jid].requeue_causes) == (
            sacct_held, 1, ("REQUEUED",))
        assert held[jid].requeue_states == (None,)  # a requeue-hold is no interruption


def test_sacct_array_and_comment(cap):
    (aid,) = cap.ids("array_done")
    arr = cap.sacct("sacct_array_done.txt")
    tasks = [f"{aid}_{i}" for i in range(5)]
    assert sorted(arr) == tasks
    assert (arr[tasks[3]].state, arr[tasks[3]].exit_code) == (S.FAILED, 3)
    assert {k for k, v in arr.items() if v.state is S.SUCCEEDED} == set(tasks) - {tasks[3]}
    (c,) = cap.sacct("sacct_comment.txt").values()
    assert c.comment == "hpcbridge:task=3f2a9c;run=7 token=abc123" and c.name == "hb-3f2a9c"


def test_sacct_running_job_transient_rows_only_on_22_05(cap):
    (early,) = cap.sacct("sacct_early_running.txt").values()
    if cap.version == "22.05":
        # just after the start: named "allocation", no partition, and PENDING
        assert (early.state, early.name, early.partition) == (S.QUEUED, "allocation", None)
    else:
        assert (early.state, early.name, early.partition, early.end_time) == (
            S.RUNNING, "hb-running", "debug", None)
    (run,) = cap.sacct("sacct_running.txt").values()
    assert (run.state, run.name, run.partition, run.end_time) == (
        S.RUNNING, "hb-running", "debug", None)


# ------------------------------------------------------------------ scontrol, merge, sbatch


def test_scontrol_restarts_and_states(cap):
    (rqid,) = cap.ids("requeue")
    assert cap.scontrol("scontrol_requeue.txt")[rqid].restarts == 1
    low = cap.ids("preempt_requeue")[0]
    pre = cap.scontrol("scontrol_preempt_requeue.txt")[low]
    assert (pre.state, pre.restarts, pre.reason) == (S.QUEUED, 1, "BeginTime")
    assert cap.scontrol("scontrol_preempt_requeue_rerun.txt")[low].state is S.RUNNING
    (nfid,) = cap.ids("node_fail")
    nf = cap.scontrol("scontrol_node_fail_rerun.txt")[nfid]
    assert (nf.state, nf.restarts) == (S.RUNNING, 1)
    hold, special = cap.ids("requeuehold")
    held = cap.scontrol("scontrol_requeuehold.txt")
    assert held[special].raw_state == "SPECIAL_EXIT" and held[special].state is S.HELD
    assert held[hold].state is S.HELD  # PENDING, Reason=job_requeued_in_held_state
    assert held[hold].restarts == 1 and held[special].restarts == 1
    assert held[hold].reason == "job_requeued_in_held_state"
    (e3,) = cap.ids("failed_exit3")
    exit3 = cap.scontrol("scontrol_failed_exit3.txt")[e3]
    assert (exit3.state, exit3.exit_code, exit3.signal) == (S.FAILED, 3, 0)
    assert cap.scontrol("scontrol_timeout.txt")[cap.ids("timeout")[0]].state is S.TIMED_OUT
    assert cap.scontrol("scontrol_preempt_cancel.txt")[
        cap.ids("preempt_cancel")[0]].state is S.PREEMPTED
    assert cap.scontrol("scontrol_suspended.txt")[cap.ids("suspended")[0]].state is S.SUSPENDED
    (aid,) = cap.ids("array_done")
    arr = cap.scontrol("scontrol_array_done.txt")
    assert (arr[f"{aid}_3"].state, arr[f"{aid}_3"].exit_code) == (S.FAILED, 3)


def test_scontrol_comment_name_and_times(cap):
    (run,) = cap.scontrol("scontrol_running.txt").values()
    assert (run.state, run.name, run.comment, run.nodes, run.partition) == (
        S.RUNNING, "hb-running", "hpcbridge:task=run1", "node1", "debug")
    assert run.start_time is not None and run.end_time is None  # EndTime is only expected
    (c,) = cap.scontrol("scontrol_comment.txt").values()
    assert (c.state, c.name) == (S.SUCCEEDED, "hb-3f2a9c")
    assert c.comment is not None and c.comment.startswith("hpcbridge:task=3f2a9c;run=7")


def test_scontrol_26_05_prints_the_submit_line_before_the_comment(cap):
    """26.05 adds ``SubmitLine=<the sbatch command line>``, unquoted, between Command= and
    WorkDir=, i.e. before Comment=; the captures' own values still parse as above."""
    line = cap.read("scontrol_running.txt")
    if cap.version == "26.05":
        assert " SubmitLine=sbatch --parsable -J hb-running --comment hpcbridge:task=run1 " in line
        assert line.index(" SubmitLine=") < line.index(" Comment=")
    else:
        assert "SubmitLine=" not in line


def test_scontrol_submit_line_with_key_like_words_does_not_hide_the_comment():
    """A submit line is free text printed before Comment=: ``--wrap 'echo Comment=x'`` (or
    any ``word=``) in it must not become the job's comment. The line below is the real 26.05
    capture of scontrol_running.txt with only the --wrap text changed."""
    real = capture("26.05").read("scontrol_running.txt")
    line = real.replace("--wrap sleep 300", "--wrap echo Comment=x Reason=y")
    assert "--wrap echo Comment=x Reason=y WorkDir=" in line
    (job,) = parse_scontrol_show_job(line, tz=UTC)
    assert job.comment == "hpcbridge:task=run1"


def test_merge_squeue_restarts_with_sacct_causes(cap):
    low = cap.ids("preempt_requeue")[0]
    merged = merge_views(cap.squeue("squeue_preempt_requeue_rerun.txt").values(),
                         cap.sacct("sacct_preempt_requeue_rerun.txt"))
    assert merged[low].source == "squeue" and merged[low].state is S.RUNNING
    assert (merged[low].restarts, merged[low].requeue_causes) == (1, ("PREEMPTED",))
    (nfid,) = cap.ids("node_fail")
    nf = merge_views(cap.squeue("squeue_node_fail_rerun.txt").values(),
                     cap.sacct("sacct_node_fail_rerun.txt"))
    assert (nf[nfid].state, nf[nfid].restarts, nf[nfid].requeue_causes) == (
        S.RUNNING, 1, ("NODE_FAIL",))
    if cap.version != "22.05":  # 22.05's sacct did not list the new instance yet (above)
        nf = merge_views(cap.squeue("squeue_node_fail.txt").values(),
                         cap.sacct("sacct_node_fail.txt"))
        assert (nf[nfid].state, nf[nfid].requeue_causes) == (S.QUEUED, ("NODE_FAIL",))


def test_sbatch_parsable_captures(cap):
    assert parse_sbatch(cap.read("sbatch_parsable.txt")).isdigit()
    assert cap.read("sbatch_parsable_clusters.txt").strip().endswith(";lab")
    assert parse_sbatch(cap.read("sbatch_parsable_clusters.txt")).isdigit()
    assert parse_sbatch(cap.read("sbatch_parsable_stdin.txt")).isdigit()
    assert re.fullmatch(r"Submitted batch job \d+\n", cap.read("sbatch_plain.txt"))
    # the error cases of sbatch: exit codes as on every version
    assert int(cap.read("err_sbatch_invalid_partition.rc")) == 1
    assert "invalid partition" in cap.read("err_sbatch_invalid_partition.stderr").lower()
    assert int(cap.read("err_sbatch_invalid_time.rc")) == 255
    assert cap.read("err_sbatch_invalid_partition.stdout") == ""


def test_scancel_and_scontrol_unknown_job(cap):
    assert int(cap.read("err_scancel_unknown_job.rc")) == 0
    assert int(cap.read("err_scontrol_unknown_job.rc")) == 1
    assert "Invalid job id specified" in cap.read("err_scontrol_unknown_job.stderr")
