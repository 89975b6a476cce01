"""Parsers and builders, on output captured from the real Slurm 22.05 lab (tests/data/slurm)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from hpcbridge import slurm
from hpcbridge.errors import ParseError, UsageError
from hpcbridge.lifecycle import TaskState as S

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"


def read(name: str) -> str:
    return (DATA / name).read_text()


def colleague_sacct(name: str) -> str:
    """The slurm-lab helper's captures (snapshots: hpcb-from-lab-*) use sacct --format=JobID,JobIDRaw,JobName,State,ExitCode,
    DerivedExitCode,Reason,NodeList,Partition,Submit,Start,End,Elapsed,Comment (see
    commands.log); reorder those real values into SACCT_FIELDS order."""
    out = []
    for line in read(name).splitlines():
        f = line.split("|")
        row = dict(zip(["JobID", "JobIDRaw", "JobName", "State", "ExitCode", "DerivedExitCode",
                        "Reason", "NodeList", "Partition", "Submit", "Start", "End", "Elapsed",
                        "Comment"], f, strict=True))
        out.append("|".join(row[k] for k in slurm.SACCT_FIELDS))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ builders


def test_squeue_argv_default_is_one_query_for_my_jobs():
    argv = slurm.squeue_argv()
    # --array: one row per array element, pending ones too (never "123_[4-9]")
    assert argv[:4] == ["squeue", "--noheader", "--states=all", "--array"]
    assert argv[4].startswith("--Format=JobArrayID:|,JobID:|,State:|")
    assert "RestartCnt:|" in argv[4] and argv[4].endswith(",Comment:")
    assert argv[-1] == "--me" and not any(a.startswith("--jobs") for a in argv)


def test_squeue_argv_with_ids_and_bin_dir():
    argv = slurm.squeue_argv(["12", "17_3"], bin_dir="/opt/slurm/bin")
    assert argv[0] == "/opt/slurm/bin/squeue"
    assert argv[-1] == "--jobs=12,17_3"
    assert "--me" not in argv


@pytest.mark.parametrize("bad", ["12;rm", "-1", "12 13", "", "1.batch", "$(x)"])
def test_builders_reject_bad_job_ids(bad):
    for build in (slurm.squeue_argv, slurm.sacct_argv, slurm.scancel_argv):
        with pytest.raises(UsageError):
            build([bad])
    with pytest.raises(UsageError):
        slurm.scontrol_show_job_argv(bad)


def test_builders_reject_bad_bin_dir_and_user():
    with pytest.raises(UsageError):
        slurm.sbatch_argv(bin_dir="relative/bin")
    with pytest.raises(UsageError):
        slurm.squeue_argv(user="bob;rm -rf")
    with pytest.raises(UsageError):
        slurm.squeue_argv(names=["a,b"])


def test_sacct_argv():
    argv = slurm.sacct_argv(["16"])
    assert argv == ["sacct", "--parsable2", "--noheader", "--duplicates",
                    "--format=JobID,JobIDRaw,State,ExitCode,Reason,NodeList,Partition,Submit,"
                    "Start,End,JobName,Comment", "--jobs=16"]
    assert "Restarts" not in argv[4]  # 22.05 has no such field
    since = datetime(2026, 11, 25, 17, 0, tzinfo=UTC).timestamp()
    by_name = slurm.sacct_argv(names=["hpcb-x-1"], since=since, tz=UTC)
    assert by_name[-2:] == ["--name=hpcb-x-1", "--starttime=2026-11-25T17:00:00"]
    with pytest.raises(UsageError):
        slurm.sacct_argv()  # would silently only look from midnight


def test_sbatch_scancel_scontrol_argv():
    assert slurm.sbatch_argv() == ["sbatch", "--parsable"]
    assert slurm.sbatch_argv(script_path="/w/job.sh") == ["sbatch", "--parsable", "/w/job.sh"]
    assert slurm.scancel_argv(["1", "2_3"]) == ["scancel", "1", "2_3"]
    assert slurm.scancel_argv(["1"], signal="USR1") == ["scancel", "--signal=USR1", "1"]
    assert slurm.scontrol_show_job_argv("5") == ["scontrol", "-o", "show", "job", "5"]


# ------------------------------------------------------------------ sbatch


@pytest.mark.parametrize("out,job", [("123\n", "123"), ("123;lab\n", "123"),
                                     ("sbatch: warning: x\n45\n", "45")])
def test_parse_sbatch(out, job):
    assert slurm.parse_sbatch(out) == job


def test_parse_sbatch_real_captures():
    assert slurm.parse_sbatch(read("sbatch_parsable.txt")).isdigit()
    assert slurm.parse_sbatch(read("sbatch_parsable_clusters.txt")).isdigit()


@pytest.mark.parametrize("out", ["", "Submitted batch job 12\n", "abc;lab", "12abc"])
def test_parse_sbatch_rejects_with_the_text(out):
    with pytest.raises(ParseError) as err:
        slurm.parse_sbatch(out)
    assert err.value.text == out


# ------------------------------------------------------------------ squeue


def test_squeue_live_capture():
    problems: list[str] = []
    rows = {r.job_id: r for r in slurm.parse_squeue(read("hpcb-squeue-me-live.txt"),
                                                    problems=problems)}
    assert problems == []
    assert len(rows) == 22
    exit3 = rows["14"]
    assert (exit3.state, exit3.exit_code, exit3.signal, exit3.reason) == (
        S.FAILED, 3, 0, "NonZeroExitCode")  # exit_code field is the wait status 768
    assert exit3.name == "hpcb-capexit3-1" and exit3.comment == "hpcb:tokexit3"
    assert slurm.token_from_comment(exit3.comment) == "tokexit3"
    ok = rows["13"]
    assert (ok.state, ok.exit_code, ok.nodes, ok.partition) == (S.SUCCEEDED, 0, "node1", "debug")
    # scancel'd while running: wait status 65280 = exit 255.
    assert rows["15"].state is S.CANCELLED and rows["15"].exit_code == 255
    # Array: the started task and the pending remainder, both under their display ids.
    assert rows["17_1"].state is S.CANCELLED and rows["17_1"].signal == 15
    assert rows["17_[2-4%1]"].reason == "JobArrayTaskLimit"
    # Not ours: (null) comment -> None; preempted-and-requeued jobs pend with RestartCnt 1.
    assert rows["1"].comment is None and slurm.token_from_comment(rows["1"].comment) is None
    low = rows["19"]
    assert (low.state, low.restarts, low.reason, low.start_time, low.end_time) == (
        S.QUEUED, 1, "BeginTime", None, None)  # expected times of a pending job are dropped
    assert rows["4"].comment == "hpcbridge:task=stdin1"
    high = rows["22"]
    assert high.state is S.RUNNING and high.end_time is None and high.start_time is not None


def test_squeue_times_are_cluster_local():
    rows = slurm.parse_squeue(read("hpcb-squeue-jobs-live.txt"), tz=UTC)
    r14 = next(r for r in rows if r.job_id == "14")
    assert r14.submit_time == datetime(2026, 11, 25, 17, 40, 38, tzinfo=UTC).timestamp()
    plus2 = timezone(timedelta(hours=2))
    r14b = next(r for r in slurm.parse_squeue(read("hpcb-squeue-jobs-live.txt"), tz=plus2)
                if r.job_id == "14")
    assert r14.submit_time - r14b.submit_time == 7200


def test_squeue_requeued_job_keeps_its_id_with_restarts():
    after = {r.job_id: r for r in slurm.parse_squeue(read("hpcb-squeue-after-cancel-requeue.txt"))}
    assert (after["16"].state, after["16"].restarts, after["16"].reason) == (S.QUEUED, 1, "BeginTime")
    (again,) = slurm.parse_squeue(read("hpcb-squeue-requeued-running.txt"))
    assert (again.job_id, again.state, again.restarts, again.exit_code) == ("16", S.RUNNING, 1, None)


def test_squeue_bad_lines_are_reported_not_fatal():
    good = read("hpcb-squeue-requeued-running.txt")
    text = "garbage\n" + good + "x|y|BOGUS|None|0|0||debug|N/A|N/A|N/A|n|(null)\n" + \
        "99|99|WEIRDSTATE|None|0|0||debug|Unknown|Unknown|Unknown|n|(null)\n"
    problems: list[str] = []
    rows = slurm.parse_squeue(text, problems=problems)
    assert [r.job_id for r in rows] == ["16", "99"]
    assert rows[1].state is None and rows[1].raw_state == "WEIRDSTATE"  # unknown: no guess
    assert len(problems) == 2 and "garbage" in problems[0]


def test_squeue_pipe_in_comment_is_kept():
    line = "5|5|RUNNING|None|0|0|node1|debug|Unknown|Unknown|Unknown|n|a|b|c\n"
    (row,) = slurm.parse_squeue(line)
    assert row.comment == "a|b|c"


def test_squeue_missing_job_error_real_capture():
    rc = int(read("err_squeue_unknown_job.rc").strip())
    assert slurm.squeue_missing_job_error(rc, read("err_squeue_unknown_job.stderr"))
    assert not slurm.squeue_missing_job_error(1, "slurm_load_jobs error: Unable to contact")
    # A mix of known and unknown ids exits 0.
    assert int(read("err_squeue_known_and_unknown_job.rc").strip()) == 0


# ------------------------------------------------------------------ sacct


def test_sacct_live_capture():
    jobs = slurm.parse_sacct(read("hpcb-sacct-live.txt"))
    assert set(jobs) == {"12", "13", "14", "15", "16", "17_1", "17_[2-4%1]"}
    assert jobs["12"].raw_state == "CANCELLED by 0" and jobs["12"].state is S.CANCELLED
    assert jobs["12"].nodes is None  # "None assigned"
    assert (jobs["14"].state, jobs["14"].exit_code, jobs["14"].signal) == (S.FAILED, 3, 0)
    assert jobs["13"].state is S.SUCCEEDED and jobs["13"].comment == "hpcb:tokok"
    assert jobs["14"].name == "hpcb-capexit3-1"  # the job row, not the "batch" step row
    assert all(j.restarts == 0 and j.requeue_causes == () for j in jobs.values())


def test_sacct_requeue_folds_duplicates():
    (job,) = slurm.parse_sacct(read("hpcb-sacct-requeued-running.txt")).values()
    assert (job.job_id, job.state, job.restarts, job.requeue_causes) == (
        "16", S.RUNNING, 1, ("REQUEUED",))
    assert job.end_time is None and job.exit_code is None
    # sacct 22.05 prints an empty Comment for the new instance; the parser carries it over.
    assert read("hpcb-sacct-requeued-running.txt").splitlines()[2].endswith("|")
    assert job.comment == "hpcb:tokrequeue"
    assert job.requeue_states == (None,)  # an admin's requeue is no interruption


def test_sacct_node_fail_and_preemption_requeues_real_captures():
    nf = slurm.parse_sacct(colleague_sacct("hpcb-from-lab-sacct_node_fail_rerun.txt"))["29"]
    assert (nf.state, nf.restarts, nf.requeue_causes, nf.nodes) == (
        S.RUNNING, 1, ("NODE_FAIL",), "node2")
    pre = slurm.parse_sacct(colleague_sacct("hpcb-from-lab-sacct_preempt_requeue_rerun.txt"))
    assert pre["19"].requeue_causes == ("PREEMPTED",) and pre["19"].state is S.RUNNING
    # The causes come mapped to lifecycle states where they are parsed: the cycle reads these.
    assert nf.requeue_states == (S.NODE_FAILED,)
    assert pre["19"].requeue_states == (S.PREEMPTED,)
    assert pre["22"].requeue_states == ()
    assert pre["21"].state is S.QUEUED and pre["21"].requeue_causes == ("PREEMPTED",)
    assert pre["22"].state is S.SUCCEEDED and pre["22"].requeue_causes == ()


def test_sacct_array_with_one_failing_task_real_capture():
    arr = slurm.parse_sacct(colleague_sacct("hpcb-from-lab-sacct_array_done.txt"))
    assert sorted(arr) == ["36_0", "36_1", "36_2", "36_3", "36_4"]
    assert arr["36_3"].state is S.FAILED and arr["36_3"].exit_code == 3
    assert {k for k, v in arr.items() if v.state is S.SUCCEEDED} == {"36_0", "36_1", "36_2", "36_4"}


def test_sacct_signal_kill_is_failed_with_signal():
    oom = slurm.parse_sacct(colleague_sacct("hpcb-from-lab-sacct_oom.txt"))["35"]
    assert (oom.state, oom.exit_code, oom.signal) == (S.FAILED, 0, 9)


def test_sacct_oom_step_upgrades_failed_job():
    text = ("7|7|FAILED|0:125|None|n1|debug|Unknown|Unknown|Unknown|j|\n"
            "7.batch|7.batch|OUT_OF_MEMORY|0:125||n1||Unknown|Unknown|Unknown|batch|\n")
    assert slurm.parse_sacct(text)["7"].state is S.OUT_OF_MEMORY


def test_sacct_unknown_job_is_empty():
    assert slurm.parse_sacct(read("err_sacct_unknown_job.stdout")) == {}


def test_sacct_bad_lines_reported():
    problems: list[str] = []
    out = slurm.parse_sacct("1|1|RUNNING|0:0|None|n|p|bad-time|x|y|n|c\nshort\n",
                            problems=problems)
    assert out == {} and len(problems) == 2


# ------------------------------------------------------------------ scontrol, merge, misc


def test_scontrol_captures():
    (req,) = slurm.parse_scontrol_show_job(read("hpcb-scontrol-requeued.txt"))
    assert (req.job_id, req.state, req.restarts, req.reason, req.comment) == (
        "16", S.QUEUED, 1, "BeginTime", "hpcb:tokrequeue")
    (pend,) = slurm.parse_scontrol_show_job(read("hpcb-scontrol-pending.txt"))
    assert pend.state is S.CANCELLED and pend.nodes is None and pend.name == "hpcb-cappending-1"
    (cancelled,) = slurm.parse_scontrol_show_job(read("hpcb-scontrol-running.txt"))
    assert (cancelled.state, cancelled.exit_code, cancelled.nodes) == (S.CANCELLED, 255, "node1")


def test_merge_views_prefers_squeue_and_takes_causes_from_sacct():
    sq = slurm.parse_squeue(read("hpcb-squeue-requeued-running.txt"))
    sa = slurm.parse_sacct(read("hpcb-sacct-live.txt"))
    sa.update(slurm.parse_sacct(read("hpcb-sacct-requeued-running.txt")))
    merged = slurm.merge_views(sq, sa)
    assert merged["16"].source == "squeue" and merged["16"].requeue_causes == ("REQUEUED",)
    assert merged["16"].requeue_states == (None,)
    assert merged["16"].restarts == 1 and merged["16"].comment == "hpcb:tokrequeue"
    assert merged["14"].source == "sacct" and merged["14"].exit_code == 3  # gone from squeue


@pytest.mark.parametrize("text,expected", [("3:0", (3, 0)), ("0:9", (0, 9)), ("768", (3, 0)),
                                           ("9", (0, 9)), ("65280", (255, 0)), ("", (None, None)),
                                           ("N/A", (None, None))])
def test_parse_exit_code(text, expected):
    assert slurm.parse_exit_code(text) == expected


def test_parse_slurm_time():
    assert slurm.parse_slurm_time("Unknown") is None
    assert slurm.parse_slurm_time("None") is None
    assert slurm.parse_slurm_time("1970-01-01T00:01:00", UTC) == 60.0
    with pytest.raises(ValueError):
        slurm.parse_slurm_time("yesterday")


def test_hostile_work_dir_round_trips_through_real_sbatch():
    text = read("hpcb-scontrol-hostile-workdir.txt")
    assert "WorkDir=/tmp/it's a \"dir\" $(x) 100% " in text
    (job,) = slurm.parse_scontrol_show_job(text)
    assert (job.state, job.reason, job.comment, job.name) == (
        S.HELD, "JobHeldUser", "hpcb:tokhostile", "hpcb-hostile-1")
