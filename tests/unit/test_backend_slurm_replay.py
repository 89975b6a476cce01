"""The real SlurmBackend, driven over a ReplayTransport that answers with output captured on
the Slurm 22.05 and 24.11 labs (tests/data/slurm/<version>/, see COMMANDS.md).

capture.sh used its own field orders; ``reorder_columns`` turns each capture into exactly the
line shape of hpcbridge's own squeue/sacct queries (SQUEUE_FIELDS / SACCT_FIELDS). The lab
jobs were not submitted by hpcbridge, so where a test needs "one of ours" the capture's
comment is replaced by an ``hpcb:<token>`` comment (on 22.05 a requeued job's new sacct row
has an empty comment: only the first instance gets it, as measured).

Only SlurmBackend's public methods and ``hpcbridge.slurm``'s public names are used, so these
tests survive a reshuffle of the backend's internals.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hpcbridge import slurm
from hpcbridge.backends.base import PollRequest, SubmitRequest
from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.config import ClusterConfig, parse_config
from hpcbridge.errors import CommandTimeout, SchedulerError, SchedulerUnavailable, TransportError
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Resources, Task, TaskSpec
from hpcbridge.testing import ReplayCall, ReplayTransport, Reply, reorder_columns, run_locally
from hpcbridge.transport import LocalTransport
from hpcbridge.transport.base import RemoteFileError

S = TaskState
DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
VERSIONS = ["22.05", "24.11"]
WORK = "/home/hpcb/hpcbridge"

# capture.sh field orders (COMMANDS.md); 24.11's sacct captures have Restarts appended.
CAPTURE_SQUEUE = ["JobID", "JobArrayID", "ArrayJobID", "ArrayTaskID", "Name", "State", "Reason",
                  "NodeList", "Partition", "Comment", "SubmitTime", "StartTime", "EndTime",
                  "RestartCnt", "exit_code"]  # fmt: skip
_SACCT = ["JobID", "JobIDRaw", "JobName", "State", "ExitCode", "DerivedExitCode", "Reason",
          "NodeList", "Partition", "Submit", "Start", "End", "Elapsed", "Comment"]  # fmt: skip
CAPTURE_SACCT = {"22.05": _SACCT, "24.11": [*_SACCT, "Restarts"]}
# The job id of each scenario in each version's captures (commands.log).
JOB = {
    "22.05": {"running": "367", "completed": "368", "failed_exit3": "369", "node_fail": "361",
              "preempted": "348"},
    "24.11": {"running": "62", "completed": "63", "failed_exit3": "64", "node_fail": "60",
              "preempted": "50"},
}


# ------------------------------------------------------------------------------ helpers


def cluster(**extra: object) -> ClusterConfig:
    table = {"backend": "slurm", "transport": "ssh", "host": "login.example", "work_dir": WORK,
             "submit_parallelism": 2, "arrays": False, **extra}  # fmt: skip
    return parse_config({"clusters": {"lab": table}}).cluster("lab")


def make_task(tid: str, *, outputs: tuple[str, ...] = (), **resources: Any) -> Task:
    spec = TaskSpec(command=("python3", "sim.py"), name=f"sim-{tid}", cluster="lab",
                    outputs=outputs, resources=Resources(**resources))  # fmt: skip
    now = time.time()
    return Task(id=tid, spec=spec, state=S.SUBMITTING, metadata={}, created_at=now,
                updated_at=now, attempt_count=1)  # fmt: skip


def request(tid: str, token: str, job_id: str | None, *, attempt: int = 1,
            work_dir: str | None = None) -> PollRequest:  # fmt: skip
    return PollRequest(task_id=tid, attempt=attempt, token=token, job_id=job_id,
                       work_dir=work_dir or f"{WORK}/{tid}")  # fmt: skip


def squeue_out(version: str, scenario: str, *, comment: str | None = None,
               job: str | None = None) -> str:  # fmt: skip
    """squeue's rows in hpcbridge's field order; ``comment`` on ``job``'s row (or every row)."""

    def edit(row: dict[str, str]) -> None:
        if comment is not None and job in (None, row["JobID"]):
            row["Comment"] = comment

    text = (DATA / version / f"squeue_{scenario}.txt").read_text()
    return reorder_columns(text, CAPTURE_SQUEUE, slurm.SQUEUE_FIELDS, trailing_separator=True,
                           edit=edit)  # fmt: skip


def sacct_out(version: str, scenario: str, *, comment: str | None = None,
              job: str | None = None) -> str:  # fmt: skip
    """sacct with steps (hpcbridge's query has no -X); ``comment`` on the first row of ``job``
    (or of every job)."""
    seen: set[str] = set()

    def edit(row: dict[str, str]) -> None:
        jid = row["JobID"]
        if comment is not None and job in (None, jid) and jid not in seen:
            row["Comment"] = comment
        seen.add(jid)

    text = (DATA / version / f"sacct_steps_{scenario}.txt").read_text()
    return reorder_columns(text, CAPTURE_SACCT[version], slurm.SACCT_FIELDS, edit=edit)


def report_line(token: str, rc: int, out: str) -> str:
    """One line of the bulk submission script's report, as its printf writes it."""
    return f"HPCB {token} {rc} {out}\n"


def report_error(token: str, stderr: str) -> str:
    return f"HPCBERR {token} {base64.b64encode(stderr.encode()).decode()}\n"


# ------------------------------------------------------------------------------ polling


@pytest.mark.parametrize("version", VERSIONS)
def test_running_job_comes_from_one_squeue_and_no_sacct(version: str) -> None:
    job = JOB[version]["running"]
    transport = ReplayTransport(DATA / version).on("squeue", squeue_out(version, "running"))
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", job)])

    info = infos["tok1"]
    assert (info.job_id, info.state, info.source) == (job, S.RUNNING, "squeue")
    assert (info.nodes, info.partition, info.restarts) == ("node1", "debug", 0)
    assert info.start_time is not None and info.end_time is None  # squeue's end is a guess
    assert info.exit_code is None
    # One squeue for the whole cluster (--me, never --jobs); nothing for sacct to add.
    (sq,) = transport.calls_to("squeue")
    assert "--me" in sq.command and not any(a.startswith("--jobs") for a in sq.command)
    assert transport.calls_to("sacct") == [] and transport.scripts == []
    transport.verify()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario,state,exit_code",
                         [("completed", S.SUCCEEDED, 0), ("failed_exit3", S.FAILED, 3)])  # fmt: skip
def test_finished_job_squeue_forgot_is_read_from_sacct(
    version: str, scenario: str, state: TaskState, exit_code: int
) -> None:
    job = JOB[version][scenario]
    transport = (ReplayTransport(DATA / version)
                 .on("squeue", "")  # past MinJobAge: squeue --me no longer lists it
                 .on("sacct", sacct_out(version, scenario), has=["--jobs="]))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", job)])

    info = infos["tok1"]
    assert (info.job_id, info.state, info.source, info.exit_code) == (job, state, "sacct", exit_code)
    assert info.end_time is not None and info.nodes == "node1"
    (sa,) = transport.calls_to("sacct")
    assert f"--jobs={job}" in sa.command and "--duplicates" in sa.command
    assert transport.scripts == []  # found: no marker read
    transport.verify()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario,key,cause,cause_state", [
    ("node_fail_rerun", "node_fail", "NODE_FAIL", S.NODE_FAILED),
    # three low-priority jobs were preempted and requeued; the first is ours
    ("preempt_requeue_rerun", "preempted", "PREEMPTED", S.PREEMPTED),
])  # fmt: skip
def test_requeued_job_has_restarts_and_the_cause_from_sacct_duplicates(
    version: str, scenario: str, key: str, cause: str, cause_state: TaskState
) -> None:
    job = JOB[version][key]
    ours = "hpcb:tok1"
    transport = (ReplayTransport(DATA / version)
                 .on("squeue", squeue_out(version, scenario, comment=ours, job=job))
                 .on("sacct", sacct_out(version, scenario, comment=ours, job=job),
                     has=["--jobs="]))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", job)])

    info = infos["tok1"]
    # squeue's live view (running again, same id) with sacct's history merged in.
    assert (info.job_id, info.state, info.source) == (job, S.RUNNING, "squeue")
    assert info.restarts == 1
    assert info.requeue_causes == (cause,)
    assert info.requeue_states == (cause_state,)  # mapped where Slurm output is parsed
    # sacct was asked only because squeue showed a restart of one of our jobs.
    (sa,) = transport.calls_to("sacct")
    assert f"--jobs={job}" in sa.command  # not the other users' restarted jobs
    transport.verify()


def test_requeue_cause_not_yet_in_sacct_on_22_05() -> None:
    """22.05 right after the node failure: squeue shows PENDING with RestartCnt 1 at once,
    sacct still has only the ended instance. The cause stays unknown (the cycle waits)."""
    version, job, ours = "22.05", JOB["22.05"]["node_fail"], "hpcb:tok1"
    transport = (ReplayTransport(DATA / version)
                 .on("squeue", squeue_out(version, "node_fail", comment=ours))
                 .on("sacct", sacct_out(version, "node_fail", comment=ours), has=["--jobs="]))
    info = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", job)])["tok1"]
    assert (info.state, info.restarts, info.requeue_causes) == (S.QUEUED, 1, ())
    assert info.reason == "BeginTime"


def test_requeue_cause_is_in_sacct_at_once_on_24_11() -> None:
    version, job, ours = "24.11", JOB["24.11"]["node_fail"], "hpcb:tok1"
    transport = (ReplayTransport(DATA / version)
                 .on("squeue", squeue_out(version, "node_fail", comment=ours))
                 .on("sacct", sacct_out(version, "node_fail", comment=ours), has=["--jobs="]))
    info = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", job)])["tok1"]
    assert (info.state, info.restarts, info.requeue_causes) == (S.QUEUED, 1, ("NODE_FAIL",))


def test_other_users_requeued_jobs_cost_no_sacct() -> None:
    """A restarted job that is not ours (no hpcb: comment) is not looked up in sacct."""
    version = "22.05"
    transport = ReplayTransport(DATA / version).on(
        "squeue", squeue_out(version, "node_fail_rerun") + squeue_out(version, "running"))
    info = SlurmBackend(cluster(), transport).poll(
        [request("t1", "tok1", JOB[version]["running"])])["tok1"]
    assert info.state == S.RUNNING
    assert transport.calls_to("sacct") == []


def test_unknown_outcome_job_is_found_in_squeue_by_its_token() -> None:
    """No job id recorded (sbatch's reply was lost): the hpcb:<token> comment finds it."""
    transport = ReplayTransport(DATA / "22.05").on("squeue", file="hpcb-squeue-me-live.txt")
    infos = SlurmBackend(cluster(), transport).poll([request("caprunning", "tokrunning", None)])
    assert infos["tokrunning"].job_id == "15"
    assert transport.calls_to("sacct") == []


def test_unknown_outcome_job_gone_from_squeue_is_looked_up_by_name_in_sacct() -> None:
    transport = (ReplayTransport(DATA / "22.05")
                 .on("squeue", "")
                 .on("sacct", file="hpcb-sacct-live.txt", has=["--name="]))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([request("capexit3", "tokexit3", None)])
    info = infos["tokexit3"]
    assert (info.job_id, info.state, info.exit_code) == ("14", S.FAILED, 3)
    (sa,) = transport.calls_to("sacct")
    assert "--name=hpcb-capexit3-1" in sa.command
    assert any(a.startswith("--starttime=") for a in sa.command)  # else: only since midnight


def test_scheduler_down_raises_and_reads_nothing_else() -> None:
    transport = ReplayTransport().on(
        "squeue", exit_status=1,
        stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")
    with pytest.raises(SchedulerUnavailable) as err:
        SlurmBackend(cluster(), transport).poll([request("t1", "tok1", "367")])
    assert err.value.transient and "Unable to contact slurm controller" in str(err.value)
    assert transport.calls_to("sacct") == [] and transport.scripts == []


def test_times_are_read_in_the_clusters_zone() -> None:
    """Slurm prints local times without a zone: the backend asks `date +%z` once."""
    transport = ReplayTransport(DATA / "22.05", utc_offset="+0100").on(
        "squeue", squeue_out("22.05", "running"))
    backend = SlurmBackend(cluster(), transport)
    info = backend.poll([request("t1", "tok1", "367")])["tok1"]
    plus1 = dt.timezone(dt.timedelta(hours=1))
    assert info.start_time == dt.datetime(2026, 11, 25, 17, 47, 40, tzinfo=plus1).timestamp()
    assert [c.command for c in transport.calls if c.method == "run"][0] == ("date", "+%z")


def test_one_bad_squeue_line_does_not_hide_the_others() -> None:
    text = "garbage|line\n" + squeue_out("22.05", "running")
    transport = ReplayTransport(DATA / "22.05").on("squeue", text)
    info = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", "367")])["tok1"]
    assert info.state == S.RUNNING


def test_bin_dir_and_an_env_prefix_still_match_the_rules() -> None:
    """Commands built with slurm_bin_dir run as /opt/slurm/bin/squeue; the rules match base
    names (and would skip an `env -u VAR ...` scrubbing prefix, see test_testing.py)."""
    transport = ReplayTransport(DATA / "22.05").on("squeue", squeue_out("22.05", "running"))
    backend = SlurmBackend(cluster(slurm_bin_dir="/opt/slurm/bin"), transport)
    assert backend.poll([request("t1", "tok1", "367")])["tok1"].state == S.RUNNING
    (sq,) = transport.calls_to("squeue")
    assert "/opt/slurm/bin/squeue" in sq.argv


# ------------------------------------------------------------------------------ markers


def test_markers_answer_when_neither_squeue_nor_sacct_knows_the_job() -> None:
    transport = (ReplayTransport(DATA / "22.05")
                 .on("squeue", "")
                 .on("sacct", file="err_sacct_unknown_job")  # rc 0, empty: purged
                 .on_script("HPCBMARK tok1 exit_code 3\nHPCBMARK tok1 node node2\n"
                            "HPCBMARK tok1 started 1764092860\nHPCBMARK tok2 started 1764092861\n",
                            contains="tok1"))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll(
        [request("t1", "tok1", "367"), request("t2", "tok2", "368")])

    info = infos["tok1"]
    assert (info.job_id, info.state, info.source, info.exit_code) == ("367", S.FAILED, "marker", 3)
    assert (info.nodes, info.start_time) == ("node2", 1764092860.0)
    # Started but no exit code: nothing is known about now, so the job stays absent.
    assert "tok2" not in infos
    (probe,) = transport.scripts
    assert f"{WORK}/t1/.hpcbridge/1" in probe and f"{WORK}/t2/.hpcbridge/1" in probe
    transport.verify()


def test_marker_probe_really_reads_marker_files(tmp_path: Path) -> None:
    """The probe script, run in bash over real marker dirs, and its report parsed back."""
    done, started = tmp_path / "t1", tmp_path / "t2"
    for d, marks in ((done, {"exit_code": "0\n", "started": "1764092860\n", "node": "node1\n"}),
                     (started, {"started": "1764092861\n"})):  # fmt: skip
        (d / ".hpcbridge" / "1").mkdir(parents=True)
        for name, text in marks.items():
            (d / ".hpcbridge" / "1" / name).write_text(text)
    transport = (ReplayTransport(DATA / "22.05").on("squeue", "")
                 .on("sacct", file="err_sacct_unknown_job").on_script(run_locally()))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([
        request("t1", "tok1", "501", work_dir=str(done)),
        request("t2", "tok2", "502", work_dir=str(started)),
        request("t3", "tok3", "503", work_dir=str(tmp_path / "never-ran")),
    ])
    assert set(infos) == {"tok1"}
    assert (infos["tok1"].state, infos["tok1"].nodes) == (S.SUCCEEDED, "node1")


def test_without_accounting_markers_are_the_only_fallback_and_sacct_is_not_asked_again() -> None:
    # Not a capture: the message sacct prints with AccountingStorageType=accounting_storage/none.
    transport = (ReplayTransport()
                 .on("squeue", "")
                 .on("sacct", exit_status=1, stderr="sacct: error: Slurm accounting storage is disabled\n")
                 .on_script("HPCBMARK tok1 exit_code 0\n"))  # fmt: skip
    backend = SlurmBackend(cluster(), transport)
    assert backend.poll([request("t1", "tok1", "367")])["tok1"].state == S.SUCCEEDED
    assert backend.poll([request("t1", "tok1", "367")])["tok1"].source == "marker"
    assert len(transport.calls_to("sacct")) == 1


# ------------------------------------------------------------------------------ staging


def test_prepare_uploads_inputs_into_each_work_dir(tmp_path: Path) -> None:
    # Inputs are placed by a real bash (hard link or copy) over LocalTransport; see also
    # tests/unit/test_shared_inputs.py.
    params = tmp_path / "params.json"
    params.write_text('{"n": 64}')
    work = tmp_path / "cluster"
    task = make_task("t1")
    task = replace(task, spec=replace(task.spec, inputs=(str(params),)))
    dirs = SlurmBackend(cluster(work_dir=str(work)), LocalTransport(home=tmp_path)).prepare(
        [task, make_task("t2")])
    assert dirs == {"t1": f"{work}/t1", "t2": f"{work}/t2"}
    assert (work / "t1" / "params.json").read_bytes() == b'{"n": 64}'
    transport = ReplayTransport()
    SlurmBackend(cluster(), transport).prepare([make_task("t3")])
    assert transport.calls[0].method == "connect"  # unreachable fails before the write-ahead


def test_prepare_on_an_unreachable_cluster_raises_before_any_upload(tmp_path: Path) -> None:
    transport = ReplayTransport().fail("connect")
    with pytest.raises(TransportError):
        SlurmBackend(cluster(), transport).prepare([make_task("t1")])
    assert [c.method for c in transport.calls] == ["connect"]


def test_prepare_a_failed_upload_fails_that_task_alone(tmp_path: Path) -> None:
    (tmp_path / "in.dat").write_text("x")
    transport = ReplayTransport().on("bash", "").fail(  # the probe: nothing uploaded before
        "put", RemoteFileError("put: permission denied: /home/hpcb/hpcbridge/t1/in.dat",
                               path="/home/hpcb/hpcbridge/t1/in.dat"))  # fmt: skip
    t1 = make_task("t1")
    t1 = replace(t1, spec=replace(t1.spec, inputs=(str(tmp_path / "in.dat"),)))
    out = SlurmBackend(cluster(), transport).prepare([t1, make_task("t2")])
    assert isinstance(out["t1"], RemoteFileError) and out["t2"] == f"{WORK}/t2"


# ------------------------------------------------------------------------------ submission


def submit_requests(*tids: str, **resources: Any) -> list[SubmitRequest]:
    return [SubmitRequest(task=make_task(t, **resources), attempt=1, token=f"tok{t}") for t in tids]


def test_partial_bulk_report() -> None:
    """One job submitted, one rejected with sbatch's real error text, one with no line (the
    script died before it): job id / definite failure / unknown outcome."""
    rejected = Reply.from_files(DATA / "22.05", "err_sbatch_invalid_partition")
    reqs = submit_requests("a", "b", "c")

    def bulk(call: ReplayCall) -> Reply:
        script = call.script or ""
        assert all(r.token in script for r in reqs)  # the one script carries every job
        return Reply(report_line("toka", 0, "4242")
                     + report_line("tokb", rejected.exit_status, rejected.stdout.strip())
                     + report_error("tokb", rejected.stderr),
                     stderr="bash: line 9: Killed\n", exit_status=137)  # fmt: skip

    transport = ReplayTransport(DATA / "22.05").on_script(bulk, times=1)
    a, b, c = SlurmBackend(cluster(), transport).submit(reqs)

    assert (a.token, a.job_id, a.error, a.unknown) == ("toka", "4242", None, False)
    assert b.job_id is None and not b.unknown and isinstance(b.error, SchedulerError)
    assert not b.error.transient and b.error.exit_status == 1
    assert "Invalid partition name specified" in str(b.error)
    assert c.job_id is None and c.unknown and isinstance(c.error, TransportError)
    assert "Killed" in str(c.error)  # the script's stderr is the evidence
    assert len(transport.scripts) == 1  # one round trip for the whole batch
    transport.verify()


def test_bulk_report_with_a_lost_sbatch_reply_is_unknown() -> None:
    """sbatch itself says the controller did not answer: the job may exist, find it by token."""
    transport = ReplayTransport().on_script(
        report_line("toka", 1, "")
        + report_error("toka", "sbatch: error: Batch job submission failed: "
                               "Socket timed out on send/recv operation\n"))  # fmt: skip
    (a,) = SlurmBackend(cluster(), transport).submit(submit_requests("a"))
    assert a.job_id is None and a.unknown and isinstance(a.error, SchedulerError)


def test_bulk_script_timing_out_makes_every_outcome_unknown() -> None:
    timeout = CommandTimeout("submitting jobs: `bash -s` did not finish within 122 s; "
                             "its outcome is unknown")  # fmt: skip
    transport = ReplayTransport().on_script(raises=timeout)
    outcomes = SlurmBackend(cluster(), transport).submit(submit_requests("a", "b"))
    assert [(o.job_id, o.unknown, o.error) for o in outcomes] == [(None, True, timeout)] * 2
    (call,) = [c for c in transport.calls if c.method == "run_script"]
    assert call.timeout is not None and call.timeout > cluster().command_timeout  # + per job


def test_bad_option_is_rejected_alone_before_anything_runs() -> None:
    transport = ReplayTransport().on_script(report_line("tokb", 0, "77"))
    bad, good = SlurmBackend(cluster(), transport).submit(
        [*submit_requests("a", time="ten minutes"), *submit_requests("b")])
    assert bad.error is not None and not bad.unknown and bad.job_id is None
    assert good.job_id == "77"
    assert "toka" not in transport.scripts[0]


FAKE_SBATCH = """#!/bin/bash
# A stand-in for sbatch on slurm_bin_dir: replays the captured rejection for a job script
# asking for partition nosuchpart, else prints the next job id (with --parsable).
data={data}
job="${{@: -1}}"
if grep -q 'nosuchpart' "$job"; then
  cat "$data/err_sbatch_invalid_partition.stdout"
  cat "$data/err_sbatch_invalid_partition.stderr" >&2
  exit "$(cat "$data/err_sbatch_invalid_partition.rc")"
fi
n=$(cat {counter} 2>/dev/null || echo 5000); echo $((n + 1)) > {counter}
{extra}echo "$((n + 1))"
"""


def fake_sbatch(tmp_path: Path, extra: str = "") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(data=DATA / "22.05", counter=tmp_path / "counter",
                                         extra=extra))  # fmt: skip
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_bulk_script_run_in_bash_against_a_fake_sbatch(tmp_path: Path) -> None:
    """The real submission script, executed, with sbatch replaying the captured rejection."""
    bin_dir = fake_sbatch(tmp_path)
    transport = ReplayTransport().on_script(run_locally(env={"PATH": os.environ["PATH"]}))
    backend = SlurmBackend(cluster(slurm_bin_dir=str(bin_dir), work_dir=str(tmp_path / "w")),
                           transport)  # fmt: skip
    reqs = [*submit_requests("a"), *submit_requests("b", partition="nosuchpart"),
            *submit_requests("c")]  # fmt: skip
    a, b, c = backend.submit(reqs)
    assert {a.job_id, c.job_id} == {"5001", "5002"}  # two lanes: either order
    assert b.job_id is None and not b.unknown and isinstance(b.error, SchedulerError)
    assert "sbatch: error: Batch job submission failed: Invalid partition name specified" in str(b.error)
    # The job scripts stay in each attempt's marker dir, as submitted.
    job_sh = tmp_path / "w" / "b" / ".hpcbridge" / "1" / "job.sh"
    assert '#SBATCH --partition="nosuchpart"' in job_sh.read_text()


# Was a strict xfail: the bulk script folded sbatch's stdout onto one line, so anything sbatch
# (or a site's sbatch wrapper) printed before the id made the outcome "unknown". It now keeps
# the last line, as parse_sbatch expects.
def test_sbatch_output_before_the_job_id_still_gives_the_job_id(tmp_path: Path) -> None:
    bin_dir = fake_sbatch(tmp_path, extra='echo "sbatch: site notice: project quota at 91%"\n')
    transport = ReplayTransport().on_script(run_locally(env={"PATH": os.environ["PATH"]}))
    backend = SlurmBackend(cluster(slurm_bin_dir=str(bin_dir), work_dir=str(tmp_path / "w")),
                           transport)  # fmt: skip
    (a,) = backend.submit(submit_requests("a"))
    assert (a.job_id, a.unknown) == ("5001", False)


# ------------------------------------------------------------------------------ the rest


def test_cancel_is_one_scancel_and_an_ended_id_is_not_an_error() -> None:
    transport = ReplayTransport(DATA / "22.05").on("scancel", file="err_scancel_unknown_job")
    SlurmBackend(cluster(), transport).cancel(
        [request("t1", "tok1", "367"), request("t2", "tok2", "999999"), request("t3", "tok3", None)])
    (call,) = transport.calls_to("scancel")
    assert call.command == ("scancel", "367", "999999")


def test_cancel_with_the_controller_down_raises() -> None:
    transport = ReplayTransport().on(
        "scancel", exit_status=1,
        stderr="scancel: error: Kill job error on job id 367: Unable to contact slurm controller "
               "(connect failure)\n")  # fmt: skip
    with pytest.raises(SchedulerUnavailable):
        SlurmBackend(cluster(), transport).cancel([request("t1", "tok1", "367")])


def test_fetch_outputs_and_logs_go_through_the_transport_files(tmp_path: Path) -> None:
    # The fetch streams a tar through a real bash/find/tar (it converses with the command,
    # which a replayed reply cannot), so it runs over LocalTransport; logs go through files.
    work = tmp_path / "cluster"
    backend = SlurmBackend(cluster(work_dir=str(work)), LocalTransport(home=tmp_path))
    task = make_task("t1", outputs=("*.json",))
    (work / "t1" / ".hpcbridge").mkdir(parents=True)
    (work / "t1" / "result.json").write_text("{}")
    (work / "t1" / "scratch.bin").write_text("x")
    (work / "t1" / ".hpcbridge" / "attempt-1.out").write_text("one\ntwo\nthree\n")
    dest = tmp_path / "out"
    got = backend.fetch_outputs(task, dest)
    assert got == [dest / "result.json"] and (dest / "result.json").read_text() == "{}"
    assert backend.read_log(task, 1, "stdout", 2) == "two\nthree\n"
    assert backend.read_log(make_task("t2"), 1, "stderr", None) == ""  # no log yet: empty


def test_a_token_only_attempt_whose_submission_script_still_runs_is_submitting_not_absent() -> None:
    """The marker probe says the attempt's submission script still holds its lock (inside a
    slow sbatch): the backend answers SUBMITTING, so no grace period runs out on it."""
    transport = (ReplayTransport(DATA / "22.05").on("squeue", "")
                 .on("sacct", file="err_sacct_unknown_job")
                 .on_script("HPCBMARK tok1 submitting 1\n"))  # fmt: skip
    infos = SlurmBackend(cluster(), transport).poll([request("t1", "tok1", None)])
    assert infos["tok1"].state == S.SUBMITTING and infos["tok1"].job_id == ""


def test_the_cluster_utc_offset_is_read_again_so_a_dst_change_is_followed(monkeypatch) -> None:
    import hpcbridge.backends.slurm as slurm_backend

    clock = [1000.0]
    monkeypatch.setattr(slurm_backend.time, "monotonic", lambda: clock[0])
    transport = (ReplayTransport(DATA / "22.05")
                 .on("date", "+0100\n", times=1).on("date", "+0200\n")
                 .on("squeue", squeue_out("22.05", "running")))  # fmt: skip
    backend = SlurmBackend(cluster(), transport)
    first = backend.poll([request("t1", "tok1", "367")])["tok1"].start_time
    clock[0] += slurm_backend.ZONE_TTL_SECONDS + 1  # the daemon ran on past the DST change
    second = backend.poll([request("t1", "tok1", "367")])["tok1"].start_time
    assert first is not None and second is not None and first - second == 3600
    assert len(transport.calls_to("date")) == 2


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("capture", "reason"), [
    ("limits_refused_assoc", "AssocMaxSubmitJobLimit"),
    ("limits_refused_assoc_array", "AssocMaxSubmitJobLimit"),
    ("limits_refused_qos", "QOSMaxSubmitJobPerUserLimit"),
])  # fmt: skip
def test_sbatch_refused_for_a_submit_limit_is_a_wait_not_a_failure(version: str, capture: str, reason: str) -> None:
    """sbatch's real refusal (the lab enforcing MaxSubmitJobs, scripts/lab/capture-limits.sh)
    becomes SubmitLimitReached naming the limit: no job exists, and the task waits."""
    from hpcbridge.errors import SubmitLimitReached

    refused = Reply.from_files(DATA / version, capture)
    assert refused.exit_status == 1 and slurm.submit_limit_reason(refused.stderr) == reason
    transport = ReplayTransport().on_script(
        report_line("toka", refused.exit_status, refused.stdout.strip()) + report_error("toka", refused.stderr))
    (a,) = SlurmBackend(cluster(), transport).submit(submit_requests("a"))
    assert a.job_id is None and not a.unknown and isinstance(a.error, SubmitLimitReached)
    assert a.error.reason == reason and not a.error.transient


@pytest.mark.parametrize("version", VERSIONS)
def test_a_size_or_time_policy_refusal_stays_a_failure(version: str) -> None:
    """The same "violates accounting/QOS policy" line ends a job over a size or time limit,
    which waiting never cures: only the submit-count reasons mean wait."""
    stderr = Reply.from_files(DATA / version, "limits_refused_max_wall").stderr  # QOS MaxWall, DenyOnLimit
    assert "violates accounting/QOS policy" in stderr and slurm.submit_limit_reason(stderr) is None
    transport = ReplayTransport().on_script(report_line("toka", 1, "") + report_error("toka", stderr))
    (a,) = SlurmBackend(cluster(), transport).submit(submit_requests("a"))
    assert isinstance(a.error, SchedulerError) and type(a.error).__name__ == "SchedulerError" and not a.unknown
