"""Slurm-side truth (issue 9): the user's environment and options never change what is
submitted or read, a row that fails to parse is not absence, held jobs are held, node lists
are hostlists, and the job wrapper signals once and keeps its markers where hpcbridge reads.

Pure functions are tested directly; the wrapper and the bulk script are run with bash; the
backend is driven over ReplayTransport (hpcbridge.testing)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hpcbridge import slurm
from hpcbridge.backends.base import PollRequest, SubmitRequest
from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.config import ClusterConfig, parse_config
from hpcbridge.errors import UsageError
from hpcbridge.lifecycle import TaskState as S
from hpcbridge.models import Resources, Task, TaskSpec
from hpcbridge.testing import ReplayTransport, run_locally

WORK = "/home/hpcb/hpcbridge"


def line(**over: str) -> str:
    """One squeue row in SQUEUE_FIELDS order."""
    row = {"JobArrayID": "77", "JobID": "77", "State": "PENDING", "Reason": "Priority",
           "RestartCnt": "0", "exit_code": "0", "NodeList": "", "Partition": "debug",
           "SubmitTime": "2026-11-25T17:40:06", "StartTime": "N/A", "EndTime": "N/A",
           "Name": "hpcb-t1-1", "Comment": "hpcb:tok1"}  # fmt: skip
    row.update(over)
    return "|".join(row[k] for k in slurm.SQUEUE_FIELDS) + "\n"


def cluster(**extra: object) -> ClusterConfig:
    table = {"backend": "slurm", "transport": "ssh", "host": "login.example", "work_dir": WORK,
             **extra}  # fmt: skip
    return parse_config({"clusters": {"lab": table}}).cluster("lab")


def request(tid: str, token: str, job_id: str | None) -> PollRequest:
    return PollRequest(task_id=tid, attempt=1, token=token, job_id=job_id,
                       work_dir=f"{WORK}/{tid}")  # fmt: skip


# ------------------------------------------------------------------ item 10: hostlists


@pytest.mark.parametrize("text,names", [
    ("c[01,05],d[2-4]", ["c01", "c05", "d2", "d3", "d4"]),
    ("node[1-3]", ["node1", "node2", "node3"]),
    ("node[8-10]", ["node8", "node9", "node10"]),
    ("gpu[098-101]", ["gpu098", "gpu099", "gpu100", "gpu101"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("node1,node1,node2", ["node1", "node2"]),
    ("login-1.ib", ["login-1.ib"]),
    ("", []),
])  # fmt: skip
def test_expand_hostlist(text: str, names: list[str]) -> None:
    assert slurm.expand_hostlist(text) == names


@pytest.mark.parametrize("bad", ["node[1", "node1]", "node[3-1]", "node[a-b]", "n[1[2]]",
                                 "node1;reboot", "a,,b", "n[1-9999999]"])
def test_expand_hostlist_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        slurm.expand_hostlist(bad)


@pytest.mark.parametrize("names,text", [
    (["c01", "c05", "d2", "d3", "d4"], "c[01,05],d[2-4]"),
    (["node3"], "node3"),
    (["node2", "node1", "node3", "node7"], "node[1-3,7]"),
    (["c09", "c10", "c1"], "c[09-10],c1"),  # c1 is not c01: padding kept apart
    (["login", "node1", "node2"], "login,node[1-2]"),
])  # fmt: skip
def test_compress_hostlist(names: list[str], text: str) -> None:
    assert slurm.compress_hostlist(names) == text
    assert sorted(slurm.expand_hostlist(text)) == sorted(dict.fromkeys(names))


def test_parsers_expand_node_lists() -> None:
    (row,) = slurm.parse_squeue(line(State="RUNNING", NodeList="node[1-2]", StartTime="N/A"))
    assert (row.nodes, row.node_names) == ("node[1-2]", ("node1", "node2"))


def render(**kw: object) -> str:
    base: dict[str, object] = dict(task_id="t1", attempt=2, token="tok1",
                                   spec=TaskSpec(command=("true",)), resources=Resources(),
                                   work_dir="/w/t1")  # fmt: skip
    base.update(kw)
    return slurm.render_batch_script(**base)  # type: ignore[arg-type]


def sbatch_lines(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]


def test_exclusions_are_merged_as_one_hostlist() -> None:
    """A retry after a multi-node failure: the node list is a hostlist, not comma-split words;
    exclusions from every source end up in ONE --exclude (a second would replace the first)."""
    script = render(exclude_nodes=("node[1-2]", "node2", "node3"),
                    resources=Resources(sbatch_options=("--exclude=node5",)))
    assert [ln for ln in sbatch_lines(script) if "exclude" in ln] == [
        '#SBATCH --exclude="node[1-3,5]"']
    # Pieces of a hostlist that an older cycle split on commas are put back together; a
    # leftover piece that can never be a hostlist is dropped instead of failing every submit.
    script = render(exclude_nodes=("node[1", "3]", "node[2"))
    assert [ln for ln in sbatch_lines(script) if "exclude" in ln] == ['#SBATCH --exclude="node[1,3]"']


# ------------------------------------------------------------------ item 7: sbatch options


@pytest.mark.parametrize("option,hint", [
    ("--comment=mine", "--metadata"), ("--comm=mine", "--metadata"),
    ("--job-name=x", "--name"), ("-Jx", "--name"), ("--output=/tmp/o", "logs"),
    ("-o", "logs"), ("--error=e", "logs"), ("-e/tmp/e", "logs"), ("--chdir=/tmp", "work_dir"),
    ("-D/tmp", "work_dir"), ("--array=1-5", "submit_many"), ("-a1-5", "submit_many"),
    ("--requeue", "--requeue"), ("--no-requeue", "--requeue"), ("--test-only", "submits"),
    ("--wait", "wait"), ("-W", "wait"), ("-vW", "wait"), ("--parsable", "parsable"),
    ("--open-mode=truncate", "requeue"), ("--signal=B:USR1@60", "--signal"),
    ("--clusters=other", "cluster"), ("-Mother", "cluster"), ("--uid=0", "user"),
    ("--wrap=true", "command"), ("--help", "help"),
])  # fmt: skip
def test_options_hpcbridge_relies_on_are_refused(option: str, hint: str) -> None:
    with pytest.raises(UsageError) as exc:
        slurm.check_sbatch_options([option])
    assert hint in (exc.value.hint or "")
    with pytest.raises(UsageError):  # and the renderer calls the same check
        render(resources=Resources(sbatch_options=(option,)))


@pytest.mark.parametrize("option", ["--constraint=intel", "--export=ALL,X=1", "--exclusive",
                                    "--wait-all-nodes=1", "--mail-user=a@b", "-pdebug", "-H",
                                    "--hold", "--nice=10", "--verbose", "--dependency=afterok:1"])
def test_other_options_pass(option: str) -> None:
    assert slurm.check_sbatch_options([option]) == ((option,), ())


def test_exclude_options_are_merged() -> None:
    assert slurm.check_sbatch_options(["--exclude=c[01-02]", "-xnode5", "-Hxnode6", "--nice=1"]) == (
        ("-H", "--nice=1"), ("c01", "c02", "node5", "node6"))
    with pytest.raises(UsageError):
        slurm.check_sbatch_options(["--exclude=node[1"])


# ------------------------------------------------------------------ items 9, 11: states


@pytest.mark.parametrize("state,reason,expected,alive", [
    ("PENDING", "JobHeldUser", S.HELD, False),
    ("PENDING", "JobHeldAdmin", S.HELD, False),
    ("PENDING", "job requeued in held state", S.HELD, False),  # squeue's spelling
    ("PENDING", "job_requeued_in_held_state", S.HELD, False),  # scontrol's
    ("REQUEUE_HOLD", "None", S.HELD, False),
    ("SPECIAL_EXIT", "job requeued in held state", S.HELD, False),
    ("RESV_DEL_HOLD", "None", S.HELD, False),
    ("PENDING", "BeginTime", S.QUEUED, False),  # released: queued again
    ("PENDING", "launch failed requeued held", S.NODE_FAILED, True),
    ("PENDING", "launch_failed_requeued_held", S.NODE_FAILED, True),
    ("PENDING,LAUNCH_FAILED", "None", S.NODE_FAILED, True),
    ("CANCELLED", "launch failed requeued held", S.CANCELLED, False),  # over: not alive
    ("DEADLINE", "None", S.TIMED_OUT, False),
    ("REVOKED", "None", None, False),
])  # fmt: skip
def test_held_and_launch_failed_rows(state: str, reason: str, expected: S | None,
                                     alive: bool) -> None:  # fmt: skip
    (row,) = slurm.parse_squeue(line(State=state, Reason=reason))
    assert (row.state, row.job_alive) == (expected, alive)
    if expected in (S.HELD, S.QUEUED) or alive:  # still in the queue: no exit code, no start
        assert row.exit_code is None and row.start_time is None
    scontrol = (f"JobId=77 JobName=hpcb-t1-1 JobState={state} Reason={reason.replace(' ', '_')} "
                "Restarts=0 ExitCode=0:0 SubmitTime=2026-11-25T17:40:06 StartTime=Unknown "
                "EndTime=Unknown NodeList= Partition=debug Comment=hpcb:tok1\n")  # fmt: skip
    (row,) = slurm.parse_scontrol_show_job(scontrol)
    assert (row.state, row.job_alive) == (expected, alive)


def test_a_revoked_sibling_never_hides_the_row_of_the_cluster_running_it() -> None:
    """Federated view: the same job id from two clusters; REVOKED says nothing."""
    running = line(State="RUNNING", NodeList="c1", StartTime="2026-11-25T17:41:00")
    for text in (running + line(State="REVOKED"), line(State="REVOKED") + running):
        (info,) = slurm.merge_views(slurm.parse_squeue(text), {}).values()
        assert info.state is S.RUNNING
    (alone,) = slurm.merge_views(slurm.parse_squeue(line(State="REVOKED")), {}).values()
    assert (alone.state, alone.raw_state) == (None, "REVOKED")  # unknown: change nothing


# ------------------------------------------------------------------ item 8: bad rows, times


def test_times_in_every_format_slurm_prints() -> None:
    exact = datetime(2026, 11, 25, 17, 40, 6, tzinfo=UTC).timestamp()
    assert slurm.parse_slurm_time("2026-11-25T17:40:06", UTC) == exact
    assert slurm.parse_slurm_time("2026-11-25 17:40:06", UTC) == exact
    assert slurm.parse_slurm_time(str(int(exact)), UTC) == exact  # SLURM_TIME_FORMAT=%s
    for relative in ("17:40:06", "Ystday 17:40", "Tomorr 09:00", "Mon 10:00", "25 Apr 17:40",
                     "6 Jun 2012"):  # SLURM_TIME_FORMAT=relative: imprecise, so no time
        assert slurm.parse_slurm_time(relative) is None, relative
    for none in ("Unknown", "None", "N/A", "", "INVALID"):
        assert slurm.parse_slurm_time(none) is None
    with pytest.raises(ValueError):
        slurm.parse_slurm_time("Wednesday, a while ago")


def test_relative_times_do_not_lose_the_row() -> None:
    (row,) = slurm.parse_squeue(line(State="RUNNING", SubmitTime="Ystday 17:40",
                                     StartTime="17:41:02", EndTime="Tomorr 17:41"))
    assert (row.state, row.submit_time, row.start_time) == (S.RUNNING, None, None)


def test_a_row_that_fails_to_parse_names_its_job() -> None:
    bad: list[slurm.BadRow] = []
    problems: list[str] = []
    text = (line(JobArrayID="78", JobID="78", SubmitTime="sometime", Comment="hpcb:tok2")
            + line() + "x|y|z\n" + "garbage\n")  # fmt: skip
    rows = slurm.parse_squeue(text, problems=problems, bad_rows=bad)
    assert [r.job_id for r in rows] == ["77"]
    assert len(problems) == 3 and [b.message for b in bad] == problems
    assert (bad[0].job_id, bad[0].token, bad[0].source) == ("78", "tok2", "squeue")
    assert (bad[1].job_id, bad[1].token) == (None, None)
    sacct_bad: list[slurm.BadRow] = []
    slurm.parse_sacct("5.batch|5.batch|COMPLETED|0:0||n1||when|x|y|batch|\n", bad_rows=sacct_bad)
    assert sacct_bad[0].job_id == "5"


def test_poll_leaves_jobs_with_unreadable_rows_unknown_not_absent() -> None:
    """squeue printed a row hpcbridge cannot read for job 78 (token tok2): that job is unknown
    this cycle (state None: the cycle changes nothing), never absent (the lost-grace clock)."""
    squeue = line() + line(JobArrayID="78", JobID="78", State="RUNNING", StartTime="sometime",
                           Comment="hpcb:tok2")  # fmt: skip
    transport = (ReplayTransport().on("date", "+0000\n").on("squeue", squeue)
                 .on("sacct", "", has=["--name=hpcb-t3-1"]).on_script(""))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll(
        [request("t1", "tok1", "77"), request("t2", "tok2", "78"), request("t3", "tok3", None)])
    assert infos["tok1"].state is S.QUEUED
    assert infos["tok2"].state is None and infos["tok2"].job_id == "78"
    assert "unreadable squeue row" in infos["tok2"].raw_state
    # tok3: an unknown outcome nobody mentions: absent as before (sacct by name finds nothing)
    assert "tok3" not in infos
    # job 78 is not judged from sacct's (lagging) view: only the by-name query ran
    (sa,) = transport.calls_to("sacct")
    assert not any(a.startswith("--jobs=") for a in sa.argv)


def test_poll_with_an_unattributable_squeue_row_trusts_no_absence() -> None:
    squeue = line() + "||RUNNING|None|0|0|node1|debug|N/A|N/A|N/A|x|y\n"
    transport = (ReplayTransport().on("date", "+0000\n").on("squeue", squeue)
                 .on("sacct", "").on_script(""))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll(
        [request("t1", "tok1", "77"), request("t2", "tok2", "78")])
    assert infos["tok1"].state is S.QUEUED
    assert infos["tok2"].state is None and "unreadable" in infos["tok2"].raw_state


# ------------------------------------------------------------------ item 6: scrubbing


def test_every_scheduler_argv_is_scrubbed() -> None:
    argv = slurm.scrub_env(["squeue", "--me"])
    assert argv[0] == "env" and argv[-2:] == ["squeue", "--me"]
    removed = set(argv[2:-2:2])
    assert {"SBATCH_PARTITION", "SQUEUE_USERS", "SQUEUE_FORMAT2", "SACCT_FORMAT",
            "SLURM_TIME_FORMAT", "SCANCEL_BATCH", "SCONTROL_FEDERATION", "SLURM_CLUSTERS",
            "SLURM_JSON", "SLURM_EXIT_ERROR"} <= removed  # fmt: skip
    assert "SLURM_CONF" not in removed and "SLURM_UMASK" not in removed
    assert all(flag == "-u" for flag in argv[1:-2:2])


def test_backend_runs_squeue_sacct_scancel_scrubbed() -> None:
    transport = (ReplayTransport().on("date", "+0000\n").on("squeue", "")
                 .on("sacct", "").on("scancel", "").on_script(""))  # fmt: skip
    backend = SlurmBackend(cluster(), transport)
    backend.poll([request("t1", "tok1", "77")])
    backend.cancel([request("t1", "tok1", "77")])
    calls = [*transport.calls_to("squeue"), *transport.calls_to("sacct"),
             *transport.calls_to("scancel")]  # fmt: skip
    assert len(calls) == 3
    for call in calls:
        assert call.argv[0] == "env" and "SQUEUE_USERS" in call.argv, call.argv


FAKE_SBATCH = """#!/bin/bash
# A stand-in for sbatch that records the environment it ran with.
env | sort > "{record}"
echo 4242
"""


def submit_in_bash(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(record=tmp_path / "env.txt"))
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    transport = ReplayTransport().on_script(run_locally(env={"PATH": os.environ["PATH"], **env}))
    backend = SlurmBackend(cluster(slurm_bin_dir=str(bin_dir), work_dir=str(tmp_path / "w")),
                           transport)  # fmt: skip
    now = time.time()
    task = Task(id="a", spec=TaskSpec(command=("true",), cluster="lab"), state=S.SUBMITTING,
                metadata={}, created_at=now, updated_at=now, attempt_count=1)  # fmt: skip
    (out,) = backend.submit([SubmitRequest(task=task, attempt=1, token="toka")])
    assert out.job_id == "4242", out.error
    return (tmp_path / "env.txt").read_text().splitlines(), tmp_path / "w" / "a" / ".hpcbridge" / "1"


def test_sbatch_in_the_bulk_script_runs_without_the_input_variables(tmp_path: Path) -> None:
    seen, _ = submit_in_bash(tmp_path, {
        "SBATCH_PARTITION": "low", "SBATCH_FUTURE_OPTION": "x", "SLURM_TIME_FORMAT": "relative",
        "SLURM_CLUSTERS": "other", "SLURM_CONF": "/etc/slurm/slurm.conf", "KEEP_ME": "1"})
    names = {entry.split("=", 1)[0] for entry in seen}
    assert not names & {"SBATCH_PARTITION", "SBATCH_FUTURE_OPTION", "SLURM_TIME_FORMAT",
                        "SLURM_CLUSTERS"}  # fmt: skip
    assert {"SLURM_CONF", "KEEP_ME"} <= names  # the job still gets the user's environment


# ------------------------------------------------------------------ item 1: job id marker


def test_bulk_script_writes_the_job_id_into_the_marker_dir(tmp_path: Path) -> None:
    _, markers = submit_in_bash(tmp_path, {})
    assert (markers / "job_id").read_text() == "4242\n"


def test_token_only_attempt_is_resolved_from_its_job_id_marker() -> None:
    """sbatch's reply was lost (no job id recorded), squeue has forgotten the job, accounting
    is off: the job id the submission script wrote, plus the wrapper's exit code, tell."""
    transport = (ReplayTransport().on("date", "+0000\n").on("squeue", "")
                 .on("sacct", exit_status=1, stderr="sacct: error: Slurm accounting storage is disabled\n")
                 .on_script("HPCBMARK tok1 job_id 4242\nHPCBMARK tok1 exit_code 0\n"
                            "HPCBMARK tok1 started 1764092860\n"))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", None)])
    info = infos["tok1"]
    assert (info.job_id, info.state, info.source) == ("4242", S.SUCCEEDED, "marker")


def test_token_only_attempt_with_a_job_id_marker_is_looked_up_by_id() -> None:
    """The job id marker names a job squeue lists under another name and comment (an admin's
    `scontrol update`): found by id among the rows already read, no extra query."""
    squeue = line(JobArrayID="4242", JobID="4242", State="RUNNING", Name="renamed",
                  Comment="(null)", StartTime="2026-11-25T17:41:00")  # fmt: skip
    transport = (ReplayTransport().on("date", "+0000\n").on("squeue", squeue)
                 .on("sacct", "", has=["--name="])
                 .on_script("HPCBMARK tok1 job_id 4242\n"))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", None)])
    assert (infos["tok1"].job_id, infos["tok1"].state) == ("4242", S.RUNNING)
    assert len(transport.calls_to("sacct")) == 1 and len(transport.scripts) == 1


def test_token_only_attempt_is_found_by_its_job_name_in_squeue() -> None:
    squeue = line(State="RUNNING", Comment="(null)", StartTime="2026-11-25T17:41:00")
    transport = ReplayTransport().on("date", "+0000\n").on("squeue", squeue)
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", None)])
    assert (infos["tok1"].job_id, infos["tok1"].state) == ("77", S.RUNNING)
    assert transport.calls_to("sacct") == []


# ------------------------------------------------------------------ item 15: the wrapper


def run_wrapper(tmp_path: Path, spec: TaskSpec, **kw: object) -> tuple[subprocess.Popen[str], Path]:
    work = tmp_path / "work"
    (work / ".hpcbridge").mkdir(parents=True, exist_ok=True)
    script = slurm.render_batch_script(task_id="t1", attempt=1, token="tok1", spec=spec,
                                       resources=Resources(), work_dir=str(work), **kw)  # type: ignore[arg-type]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "SLURM_JOB_ID": "4242"}  # fmt: skip
    proc = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    return proc, work


def wait_for_file(path: Path, timeout: float = 10) -> None:
    """Until ``path`` exists and is not empty (it is written by another process)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.skipif(sys.platform != "linux", reason="signals as Slurm sends them")
def test_a_term_from_slurm_reaches_the_task_once(tmp_path: Path) -> None:
    """scancel, the time limit and preemption TERM every process of the job (the batch step's
    whole process tree, one after the other): the wrapper must not pass on a second TERM
    while the task is checkpointing."""
    child = ("import os, signal, sys, time\n"
             "n = 0\n"
             "def h(s, f):\n"
             "    global n\n"
             "    n += 1\n"
             "    open(f'got{n}', 'w').write('1')\n"
             "signal.signal(signal.SIGTERM, h)\n"
             "open('pid', 'w').write(str(os.getpid()))\n"
             "t = time.monotonic()\n"
             "while time.monotonic() - t < 20 and not n:\n"
             "    time.sleep(0.01)\n"
             "time.sleep(1.5)  # a checkpoint being written: a second TERM would land here\n"
             "print('terms', n, flush=True)\n"
             "sys.exit(0)\n")  # fmt: skip
    proc, work = run_wrapper(tmp_path, TaskSpec(command=("python3", "-c", child)))
    wait_for_file(work / "pid")
    os.kill(int((work / "pid").read_text()), signal.SIGTERM)  # the task first...
    wait_for_file(work / "got1")
    os.kill(proc.pid, signal.SIGTERM)  # ...then the batch shell, as slurmstepd goes through them
    out, _ = proc.communicate(timeout=30)
    assert out == "terms 1\n"
    assert (work / ".hpcbridge" / "1" / "exit_code").read_text() == "0\n"


def test_task_env_cannot_redirect_or_break_the_markers(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = TaskSpec(command=("/bin/sh", "-c", "exit 3"),
                    env={"__hpcb_dir": str(elsewhere), "PATH": "/nonexistent"})
    proc, work = run_wrapper(tmp_path, spec)
    proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert (work / ".hpcbridge" / "1" / "exit_code").read_text() == "3\n"
    assert not list(elsewhere.iterdir())


def test_setup_and_env_still_reach_the_task(tmp_path: Path) -> None:
    spec = TaskSpec(command=("bash", "-c", 'printf "%s|%s" "$X" "$FROM_SETUP"'), env={"X": "1"})
    proc, _ = run_wrapper(tmp_path, spec, setup=("export FROM_SETUP=site",))
    out, _ = proc.communicate(timeout=30)
    assert out == "1|site"


def test_work_dir_with_a_backslash_is_refused() -> None:
    """slurmstepd drops backslashes from --output/--error paths (and before 23.x reads them as
    escapes), so the logs would not be where hpcbridge reads them."""
    with pytest.raises(UsageError) as exc:
        render(work_dir="/w/a\\b")
    assert "backslash" in str(exc.value)
    assert '--output="/w/100%%/.hpcbridge/attempt-2.out"' in render(work_dir="/w/100%")


@pytest.mark.parametrize("spec", ["B:TERM@60", "B:15@60", "RB:SIGTERM@30"])
def test_a_batch_shell_term_signal_is_refused(spec: str) -> None:
    with pytest.raises(UsageError) as exc:
        render(resources=Resources(signal=spec))
    assert "USR1" in (exc.value.hint or "")


def test_real_relative_time_output_keeps_every_row() -> None:
    """22.05 lab output with SLURM_TIME_FORMAT=relative (tests/data/slurm/22.05/README-hpcb.md):
    the rows and their states survive, the imprecise times are dropped, nothing is reported."""
    data = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"
    problems: list[str] = []
    rows = {r.job_id: r for r in slurm.parse_squeue(
        (data / "hpcb-squeue-relative-time.txt").read_text(), problems=problems)}
    assert problems == []
    assert (rows["469"].state, rows["469"].submit_time, rows["469"].nodes) == (S.RUNNING, None, "node1")
    assert (rows["470"].state, rows["470"].reason) == (S.HELD, "JobHeldUser")
    assert slurm.token_from_comment(rows["469"].comment) == "tokrel"
    jobs = slurm.parse_sacct((data / "hpcb-sacct-relative-time.txt").read_text(), problems=problems)
    assert problems == [] and jobs["469"].submit_time is None


def test_the_package_exports_every_public_function_and_class() -> None:
    import importlib
    import inspect

    assert all(hasattr(slurm, n) for n in slurm.__all__)
    for name in ("states", "commands", "parse", "script", "bulk", "hostlist", "sbatch_options"):
        mod = importlib.import_module(f"hpcbridge.slurm.{name}")
        defined = {n for n, o in vars(mod).items() if not n.startswith("_")
                   and (inspect.isfunction(o) or inspect.isclass(o))
                   and o.__module__ == mod.__name__}  # fmt: skip
        assert defined <= set(slurm.__all__), (name, defined - set(slurm.__all__))
