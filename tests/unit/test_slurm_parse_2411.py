"""Parsers on output captured from a real Slurm 24.11.5 lab (Debian 13, tests/data/slurm/24.11,
made by scripts/lab/capture.sh; see docs/DEBIAN13.md).

capture.sh uses its own field orders (tests/data/slurm/COMMANDS.md, commands.log); the helpers
below reorder those real values into hpcbridge's SQUEUE_FIELDS / SACCT_FIELDS order, so each
parser sees exactly the line shape hpcbridge's own query would get.

What differs from 22.05 (and is covered here):
* squeue ``-O exit_code`` prints ``code:signal`` (``3:0``, ``0:9``, ``0:15``) instead of the raw
  wait status (``768``, ``9``, ``15``); a timed-out job shows ``143:0`` (22.05: ``15``).
* sacct has a ``Restarts`` column (22.05 rejects the field); it agrees with the number of earlier
  instances that ``--duplicates`` prints, which is what the parser counts.
* sacct's NODE_FAIL instance has ExitCode ``1:0`` (22.05: ``0:0``).
* no transient ``allocation`` / PENDING sacct rows for a running job.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from hpcbridge import slurm
from hpcbridge.lifecycle import TaskState as S
from hpcbridge.models import JobInfo

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "24.11"

# capture.sh field orders (see its SQ_O / SA_F; sacct gets Restarts appended on 24.11)
CAPTURE_SQUEUE = ["JobID", "JobArrayID", "ArrayJobID", "ArrayTaskID", "Name", "State", "Reason",
                  "NodeList", "Partition", "Comment", "SubmitTime", "StartTime", "EndTime",
                  "RestartCnt", "exit_code"]
CAPTURE_SACCT = ["JobID", "JobIDRaw", "JobName", "State", "ExitCode", "DerivedExitCode", "Reason",
                 "NodeList", "Partition", "Submit", "Start", "End", "Elapsed", "Comment",
                 "Restarts"]


def read(name: str) -> str:
    return (DATA / name).read_text()


def squeue_rows(name: str) -> list[dict[str, str]]:
    out = []
    for line in read(name).splitlines():
        f = line.split("|")
        assert f[-1] == "", line  # every -O field ends with "|"
        out.append(dict(zip(CAPTURE_SQUEUE, f[:-1], strict=True)))
    return out


def squeue(name: str) -> dict[str, JobInfo]:
    text = "".join("|".join(r[k] for k in slurm.SQUEUE_FIELDS) + "\n" for r in squeue_rows(name))
    problems: list[str] = []
    rows = slurm.parse_squeue(text, tz=UTC, problems=problems)
    assert problems == []
    return {r.job_id: r for r in rows}


def sacct_rows(name: str) -> list[dict[str, str]]:
    return [dict(zip(CAPTURE_SACCT, line.split("|"), strict=True))
            for line in read(name).splitlines()]


def sacct(name: str) -> dict[str, JobInfo]:
    text = "".join("|".join(r[k] for k in slurm.SACCT_FIELDS) + "\n" for r in sacct_rows(name))
    problems: list[str] = []
    jobs = slurm.parse_sacct(text, tz=UTC, problems=problems)
    assert problems == []
    return jobs


def scontrol(name: str) -> dict[str, JobInfo]:
    problems: list[str] = []
    rows = slurm.parse_scontrol_show_job(read(name), tz=UTC, problems=problems)
    assert problems == []
    return {r.job_id: r for r in rows}


def test_captures_are_24_11():
    assert read("versions.txt").startswith("slurm 24.11.")
    assert "trixie" in read("versions.txt")


# ------------------------------------------------------------------ every capture parses


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("squeue_[!o]*.txt")))
def test_every_squeue_capture_parses_with_known_states(name):
    rows = squeue(name)
    assert rows
    for r in rows.values():
        assert r.state is not None, (name, r.raw_state)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("sacct_*.txt")
                                         if "nodup" not in p.name))
def test_every_sacct_capture_parses_and_restarts_match_the_restarts_column(name):
    """With --duplicates (as hpcbridge queries) the counted earlier instances == Restarts."""
    jobs = sacct(name)
    # The last job row (no ".step") of each id carries sacct 24.11's own Restarts count.
    last: dict[str, str] = {}
    for r in sacct_rows(name):
        if "." not in r["JobID"]:
            last[r["JobID"]] = r["Restarts"]
    assert set(jobs) == set(last)
    for job_id, info in jobs.items():
        assert info.state is not None, (name, info.raw_state)
        assert info.restarts == int(last[job_id]), (name, job_id)
        assert len(info.requeue_causes) == info.restarts


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("scontrol_*.txt")))
def test_every_scontrol_capture_parses(name):
    for r in scontrol(name).values():
        assert r.state is not None, (name, r.raw_state)


# ------------------------------------------------------------------ squeue


def test_squeue_exit_code_is_code_colon_signal_on_24_11():
    assert squeue_rows("squeue_failed_exit3.txt")[0]["exit_code"] == "3:0"  # 22.05: "768"
    (exit3,) = squeue("squeue_failed_exit3.txt").values()
    assert (exit3.state, exit3.exit_code, exit3.signal, exit3.reason) == (
        S.FAILED, 3, 0, "NonZeroExitCode")
    (kill9,) = squeue("squeue_failed_signal.txt").values()
    assert (kill9.state, kill9.exit_code, kill9.signal) == (S.FAILED, 0, 9)
    assert kill9.reason == "RaisedSignal:9(Killed)"
    (oom,) = squeue("squeue_oom.txt").values()  # OverMemoryKill, no cgroups: FAILED 0:9
    assert (oom.state, oom.exit_code, oom.signal) == (S.FAILED, 0, 9)
    (cancelled,) = squeue("squeue_cancelled.txt").values()
    assert (cancelled.state, cancelled.signal, cancelled.comment) == (
        S.CANCELLED, 15, "hpcbridge:task=run1")
    (timeout,) = squeue("squeue_timeout.txt").values()
    assert (timeout.state, timeout.reason, timeout.exit_code) == (S.TIMED_OUT, "TimeLimit", 143)
    (ok,) = squeue("squeue_completed.txt").values()
    assert (ok.state, ok.exit_code, ok.signal) == (S.SUCCEEDED, 0, 0)


def test_squeue_preempt_requeue_same_id_restarts_then_runs_again():
    pre = squeue("squeue_preempt_requeue.txt")
    high = pre["53"]
    assert high.state is S.RUNNING and high.partition == "high" and high.end_time is None
    for jid in ("50", "51", "52"):
        low = pre[jid]
        assert (low.state, low.restarts, low.reason, low.partition) == (
            S.QUEUED, 1, "BeginTime", "low")
        assert low.start_time is None and low.end_time is None and low.exit_code is None
    rerun = squeue("squeue_preempt_requeue_rerun.txt")
    assert rerun["53"].state is S.SUCCEEDED
    assert {rerun[j].state for j in ("50", "51", "52")} == {S.RUNNING}
    assert {rerun[j].restarts for j in ("50", "51", "52")} == {1}
    # PreemptMode=CANCEL: terminal PREEMPTED in squeue, killed with SIGTERM
    cancel = squeue("squeue_preempt_cancel.txt")
    assert {cancel[j].state for j in ("54", "55", "56")} == {S.PREEMPTED}
    assert cancel["54"].signal == 15 and cancel["57"].state is S.SUCCEEDED


def test_squeue_node_fail_and_scontrol_requeue_pend_with_restarts():
    (nf,) = squeue("squeue_node_fail.txt").values()
    assert (nf.job_id, nf.state, nf.restarts, nf.reason, nf.nodes) == (
        "60", S.QUEUED, 1, "BeginTime", None)
    (rq,) = squeue("squeue_requeue.txt").values()
    assert (rq.state, rq.restarts, rq.reason) == (S.QUEUED, 1, "BeginTime")
    held = squeue("squeue_requeuehold.txt")
    assert (held["73"].raw_state, held["73"].state, held["73"].restarts) == ("PENDING", S.HELD, 1)
    assert held["73"].reason == "job requeued in held state"
    # SPECIAL_EXIT is a held requeue, not an end (see hpcbridge.slurm.states)
    assert (held["74"].raw_state, held["74"].state, held["74"].restarts) == (
        "SPECIAL_EXIT", S.HELD, 1)


def test_squeue_array_ids_suspend_dependency():
    running = squeue("squeue_array_running.txt")
    assert set(running) == {"67_[2-4%2]", "67_0", "67_1"}
    assert running["67_[2-4%2]"].state is S.QUEUED
    assert running["67_[2-4%2]"].reason == "JobArrayTaskLimit"
    assert running["67_0"].state is S.RUNNING and running["67_0"].nodes == "node1"
    done = squeue("squeue_array_done.txt")
    assert sorted(done) == ["67_0", "67_1", "67_2", "67_3", "67_4"]
    assert (done["67_3"].state, done["67_3"].exit_code) == (S.FAILED, 3)
    assert {k for k, v in done.items() if v.state is S.SUCCEEDED} == {"67_0", "67_1", "67_2", "67_4"}
    (susp,) = squeue("squeue_suspended.txt").values()
    assert susp.state is S.SUSPENDED and susp.end_time is None and susp.exit_code is None
    dep = squeue("squeue_dependency_never_satisfied.txt")
    assert (dep["80"].state, dep["80"].reason) == (S.CANCELLED, "DependencyNeverSatisfied")
    assert (dep["79"].state, dep["79"].exit_code) == (S.FAILED, 1)
    (c,) = squeue("squeue_comment.txt").values()
    assert c.comment == "hpcbridge:task=3f2a9c;run=7 token=abc123"
    assert slurm.token_from_comment(c.comment) is None  # not an hpcb: comment


def test_squeue_unknown_job_and_invalid_field_errors():
    assert slurm.squeue_missing_job_error(int(read("err_squeue_unknown_job.rc")),
                                          read("err_squeue_unknown_job.stderr"))
    assert int(read("err_squeue_known_and_unknown_job.rc")) == 0
    # ExitCode is still no squeue -O field: error on stderr, empty column, exit 0
    assert int(read("err_squeue_exitcode_field.rc")) == 0
    assert "Invalid job format specification: ExitCode" in read("err_squeue_exitcode_field.stderr")


# ------------------------------------------------------------------ sacct


def test_sacct_has_restarts_on_24_11():
    assert int(read("err_sacct_restarts_field.rc")) == 0  # 22.05: exit 1, invalid field
    assert read("err_sacct_restarts_field.stdout").strip().endswith("|COMPLETED|0")
    assert read("err_sacct_unknown_job.stdout") == "" and slurm.parse_sacct("") == {}


def test_sacct_without_duplicates_hides_the_requeue_cause():
    # why hpcbridge always passes --duplicates: without it only the last instance shows
    jobs = sacct("sacct_window_nodup_X.txt")
    last = {r["JobID"]: r["Restarts"] for r in sacct_rows("sacct_window_nodup_X.txt")}
    assert last["50"] == "1" and jobs["50"].requeue_causes == () and jobs["50"].restarts == 0
    assert sacct("sacct_window_X.txt")["50"].requeue_causes == ("PREEMPTED",)


def test_sacct_outcomes_and_exit_codes():
    (exit3,) = sacct("sacct_failed_exit3.txt").values()
    assert (exit3.state, exit3.exit_code, exit3.signal) == (S.FAILED, 3, 0)
    (kill9,) = sacct("sacct_failed_signal.txt").values()
    assert (kill9.state, kill9.exit_code, kill9.signal) == (S.FAILED, 0, 9)
    (timeout,) = sacct("sacct_timeout.txt").values()
    assert timeout.state is S.TIMED_OUT and timeout.end_time is not None
    (cancelled,) = sacct("sacct_cancelled.txt").values()
    assert (cancelled.raw_state, cancelled.state, cancelled.comment) == (
        "CANCELLED by 1000", S.CANCELLED, "hpcbridge:task=run1")
    (ok,) = sacct("sacct_completed.txt").values()
    assert (ok.state, ok.exit_code, ok.name) == (S.SUCCEEDED, 0, "hb-ok")
    dep = sacct("sacct_dependency_never_satisfied.txt")
    assert dep["80"].state is S.CANCELLED and dep["80"].nodes is None  # "None assigned"
    assert dep["80"].start_time is None  # Start "None"
    assert (dep["79"].state, dep["79"].exit_code) == (S.FAILED, 1)
    pc = sacct("sacct_preempt_cancel.txt")
    assert {pc[j].state for j in ("54", "55", "56")} == {S.PREEMPTED}


def test_sacct_oom_without_cgroups_is_failed_signal_9_and_steps_do_not_upgrade_it():
    (oom,) = sacct("sacct_oom.txt").values()
    assert (oom.state, oom.exit_code, oom.signal) == (S.FAILED, 0, 9)
    steps = sacct("sacct_steps_oom.txt")
    assert set(steps) == {"66"} and steps["66"].state is S.FAILED  # batch step: CANCELLED by 0
    assert "66.batch|66.batch|batch|CANCELLED by 0|0:9|" in read("sacct_steps_oom.txt")


def test_sacct_requeue_causes_from_duplicates():
    pre = sacct("sacct_preempt_requeue.txt")  # right after preemption: new instances pending
    for jid in ("50", "51", "52"):
        assert (pre[jid].state, pre[jid].restarts, pre[jid].requeue_causes) == (
            S.QUEUED, 1, ("PREEMPTED",))
        assert pre[jid].nodes is None and pre[jid].start_time is None
    assert pre["53"].state is S.RUNNING and pre["53"].requeue_causes == ()
    rerun = sacct("sacct_preempt_requeue_rerun.txt")
    for jid in ("50", "51", "52"):
        assert (rerun[jid].state, rerun[jid].restarts, rerun[jid].requeue_causes) == (
            S.RUNNING, 1, ("PREEMPTED",))
    assert rerun["50"].reason == "BeginTime" and rerun["50"].end_time is None
    assert rerun["53"].state is S.SUCCEEDED and rerun["53"].restarts == 0

    nf = sacct("sacct_node_fail.txt")["60"]
    assert (nf.state, nf.restarts, nf.requeue_causes, nf.nodes) == (
        S.QUEUED, 1, ("NODE_FAIL",), None)
    assert sacct_rows("sacct_node_fail.txt")[0]["ExitCode"] == "1:0"  # 22.05: 0:0
    nf2 = sacct("sacct_node_fail_rerun.txt")["60"]
    assert (nf2.state, nf2.restarts, nf2.requeue_causes, nf2.nodes) == (
        S.RUNNING, 1, ("NODE_FAIL",), "node2")

    (rq,) = sacct("sacct_requeue.txt").values()
    assert (rq.job_id, rq.state, rq.restarts, rq.requeue_causes) == ("72", S.QUEUED, 1, ("REQUEUED",))
    held = sacct("sacct_requeuehold.txt")  # sacct shows both held jobs PENDING after REQUEUED
    for jid in ("73", "74"):
        assert (held[jid].state, held[jid].restarts, held[jid].requeue_causes) == (
            S.QUEUED, 1, ("REQUEUED",))


def test_sacct_array_and_comment():
    arr = sacct("sacct_array_done.txt")
    assert sorted(arr) == ["67_0", "67_1", "67_2", "67_3", "67_4"]
    assert (arr["67_3"].state, arr["67_3"].exit_code) == (S.FAILED, 3)
    assert {k for k, v in arr.items() if v.state is S.SUCCEEDED} == {"67_0", "67_1", "67_2", "67_4"}
    (c,) = sacct("sacct_comment.txt").values()
    assert c.comment == "hpcbridge:task=3f2a9c;run=7 token=abc123" and c.name == "hb-3f2a9c"


def test_sacct_running_job_has_no_transient_rows_on_24_11():
    # 22.05 showed a just-started job as PENDING named "allocation"; 24.11 does not.
    for name in ("sacct_early_running.txt", "sacct_running.txt"):
        (run,) = sacct(name).values()
        assert (run.state, run.name, run.partition, run.end_time) == (
            S.RUNNING, "hb-running", "debug", None)


# ------------------------------------------------------------------ scontrol, merge, sbatch


def test_scontrol_restarts_and_states():
    assert scontrol("scontrol_requeue.txt")["72"].restarts == 1
    pre = scontrol("scontrol_preempt_requeue.txt")["50"]
    assert (pre.state, pre.restarts, pre.reason) == (S.QUEUED, 1, "BeginTime")
    assert scontrol("scontrol_preempt_requeue_rerun.txt")["50"].state is S.RUNNING
    nf = scontrol("scontrol_node_fail_rerun.txt")["60"]
    assert (nf.state, nf.restarts) == (S.RUNNING, 1)
    held = scontrol("scontrol_requeuehold.txt")
    assert held["74"].raw_state == "SPECIAL_EXIT" and held["74"].state is S.HELD
    assert held["73"].restarts == 1 and held["74"].restarts == 1
    exit3 = scontrol("scontrol_failed_exit3.txt")["64"]
    assert (exit3.state, exit3.exit_code, exit3.signal) == (S.FAILED, 3, 0)
    assert scontrol("scontrol_timeout.txt")["61"].state is S.TIMED_OUT
    assert scontrol("scontrol_preempt_cancel.txt")["54"].state is S.PREEMPTED
    assert scontrol("scontrol_suspended.txt")["77"].state is S.SUSPENDED
    arr = scontrol("scontrol_array_done.txt")
    assert (arr["67_3"].state, arr["67_3"].exit_code) == (S.FAILED, 3)


def test_merge_squeue_restarts_with_sacct_causes():
    merged = slurm.merge_views(squeue("squeue_preempt_requeue_rerun.txt").values(),
                               sacct("sacct_preempt_requeue_rerun.txt"))
    assert merged["50"].source == "squeue" and merged["50"].state is S.RUNNING
    assert (merged["50"].restarts, merged["50"].requeue_causes) == (1, ("PREEMPTED",))
    nf = slurm.merge_views(squeue("squeue_node_fail.txt").values(), sacct("sacct_node_fail.txt"))
    assert (nf["60"].state, nf["60"].requeue_causes) == (S.QUEUED, ("NODE_FAIL",))


def test_sbatch_parsable_captures():
    assert slurm.parse_sbatch(read("sbatch_parsable.txt")).isdigit()
    assert read("sbatch_parsable_clusters.txt").strip().endswith(";lab")
    assert slurm.parse_sbatch(read("sbatch_parsable_clusters.txt")).isdigit()
    assert slurm.parse_sbatch(read("sbatch_parsable_stdin.txt")).isdigit()
