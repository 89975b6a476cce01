"""hpcbridge.testing itself: every scripted behaviour of FakeBackend and ReplayTransport, the
column helpers, and that both fakes satisfy the protocols they stand in for."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import pytest

from hpcbridge import testing
from hpcbridge.backends.base import Backend, PollRequest, SubmitRequest
from hpcbridge.errors import (
    BackendError,
    CommandFailed,
    CommandTimeout,
    HpcBridgeError,
    SchedulerError,
    TransportError,
    UsageError,
)
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import JobInfo, Task, TaskSpec
from hpcbridge.testing import (
    ABSENT,
    FakeBackend,
    FakeState,
    ReplayCall,
    ReplayTransport,
    Reply,
    UnexpectedCommand,
    join_columns,
    normalize_argv,
    reorder_columns,
    run_locally,
    split_columns,
)
from hpcbridge.transport.base import RemoteFileError, RemoteFileNotFound, Transport, script_argv

S = TaskState
DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"


def task(tid: str, name: str = "", **spec: Any) -> Task:
    now = time.time()
    return Task(id=tid, spec=TaskSpec(command=("true",), name=name, **spec), state=S.SUBMITTING,
                metadata={}, created_at=now, updated_at=now)  # fmt: skip


def submit(backend: FakeBackend, *tasks: Task, attempt: int = 1) -> list[PollRequest]:
    """Submit each task's attempt; return the poll requests the cycle would make."""
    reqs = [SubmitRequest(t, attempt, f"tok-{t.id}-{attempt}") for t in tasks]
    outs = backend.submit(reqs)
    return [PollRequest(r.task.id, attempt, r.token, o.job_id, None) for r, o in zip(reqs, outs, strict=True)]


def states(backend: FakeBackend, req: PollRequest, polls: int) -> list[TaskState | None | str]:
    out: list[TaskState | None | str] = []
    for _ in range(polls):
        info = backend.poll([req]).get(req.token)
        out.append("absent" if info is None else info.state)
    return out


# ============================================================================ protocols


def _members(proto: type) -> list[str]:
    return [n for n in vars(proto) if not n.startswith("_")] + list(vars(proto).get(
        "__annotations__", {}))  # fmt: skip


@pytest.mark.parametrize("fake,proto", [(FakeBackend(), Backend), (ReplayTransport(), Transport)])
def test_fakes_have_every_protocol_member_with_the_same_parameters(fake: object, proto: type) -> None:
    for name in _members(proto):
        assert hasattr(fake, name), f"{type(fake).__name__} lacks {name}"
        member = getattr(proto, name, None)
        if callable(member):
            want = [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
            got = [(p.name, p.kind, p.default)
                   for p in inspect.signature(getattr(type(fake), name)).parameters.values()]
            assert got == want, f"{type(fake).__name__}.{name}"


def test_replay_transport_is_a_runtime_checkable_transport() -> None:
    assert isinstance(ReplayTransport(), Transport)


def test_exported_names_are_documented() -> None:
    assert testing.__doc__ and "FakeBackend" in testing.__doc__
    for name in testing.__all__:
        obj = getattr(testing, name)
        assert name == "ABSENT" or obj.__doc__, name


# ============================================================================ FakeBackend


def test_job_ids_are_sequential_and_new_jobs_are_queued() -> None:
    backend = FakeBackend(first_job_id=7)
    reqs = submit(backend, task("a"), task("b"))
    assert [r.job_id for r in reqs] == ["7", "8"]
    infos = backend.poll(reqs)
    assert [infos[r.token].state for r in reqs] == [S.QUEUED, S.QUEUED]
    assert infos[reqs[0].token].raw_state == "PENDING" and infos[reqs[0].token].source == "fake"
    assert backend.job("a").job_id == "7" and backend.job("b", 1).token == "tok-b-1"


def test_prepare_returns_work_dirs_and_fail_prepare_one_task() -> None:
    backend = FakeBackend(work_root="/w/")
    backend.fail_prepare("b")
    out = backend.prepare([task("a"), task("b")])
    assert out["a"] == "/w/a"
    assert isinstance(out["b"], BackendError) and not out["b"].transient


def test_a_script_advances_one_item_per_poll_and_the_last_repeats() -> None:
    backend = FakeBackend()
    (req,) = submit(backend, task("a"))
    backend.script("a", 1, S.RUNNING, ABSENT, FakeState(S.SUCCEEDED))
    assert states(backend, req, 5) == [S.RUNNING, "absent", S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED]
    assert backend.job("a").polls == 5


def test_setting_a_script_restarts_it() -> None:
    backend = FakeBackend()
    (req,) = submit(backend, task("a"))
    backend.script("a", None, S.QUEUED, S.RUNNING)
    assert states(backend, req, 2) == [S.QUEUED, S.RUNNING]
    backend.script("a", None, S.QUEUED, S.RUNNING)
    assert states(backend, req, 1) == [S.QUEUED]


def test_scripts_by_name_id_attempt_and_default_most_specific_first() -> None:
    backend = FakeBackend(default=[S.HELD],
                          script={"sim": S.RUNNING, ("sim", 2): S.SUSPENDED,
                                  "b": [S.COMPLETING]})  # fmt: skip
    a1, b1, c1 = submit(backend, task("a", name="sim"), task("b", name="sim"), task("c"))
    (a2,) = submit(backend, task("a", name="sim"), attempt=2)
    got = backend.poll([a1, b1, c1, a2])
    assert got[a1.token].state == S.RUNNING  # by name, every attempt
    assert got[b1.token].state == S.COMPLETING  # by id beats by name
    assert got[c1.token].state == S.HELD  # nothing matches: default
    assert got[a2.token].state == S.SUSPENDED  # (name, attempt) beats name
    backend.set_state("a", 2, S.RUNNING)  # (id, attempt) beats everything
    assert backend.poll([a2])[a2.token].state == S.RUNNING


def test_set_state_fills_every_jobinfo_field() -> None:
    backend = FakeBackend()
    (req,) = submit(backend, task("a"))
    backend.set_state("a", 1, S.QUEUED, reason="BeginTime", restarts=2, nodes="n1,n2",
                      requeue_causes=("NODE_FAIL", "PREEMPTED"),
                      requeue_states=(S.NODE_FAILED, S.PREEMPTED), job_alive=True,
                      submit_time=10.0, partition="low")  # fmt: skip
    info = backend.poll([req])[req.token]
    assert (info.job_id, info.state, info.raw_state, info.reason) == ("1000", S.QUEUED, "PENDING",
                                                                     "BeginTime")  # fmt: skip
    assert (info.restarts, info.nodes, info.partition, info.submit_time) == (2, "n1,n2", "low", 10.0)
    assert info.requeue_causes == ("NODE_FAIL", "PREEMPTED")
    assert info.requeue_states == (S.NODE_FAILED, S.PREEMPTED)
    assert info.job_alive is True
    assert info.comment == f"fake:{req.token}"


@pytest.mark.parametrize("state,raw,exit_code", [
    (S.SUCCEEDED, "COMPLETED", 0), (S.FAILED, "FAILED", None), (S.NODE_FAILED, "NODE_FAIL", None),
    (S.TIMED_OUT, "TIMEOUT", None), (S.CANCELLED, "CANCELLED", None),
])  # fmt: skip
def test_raw_state_defaults_to_the_slurm_word(state: TaskState, raw: str,
                                              exit_code: int | None) -> None:  # fmt: skip
    info = FakeState(state).job_info("1")
    assert (info.raw_state, info.exit_code) == (raw, exit_code)


def test_an_unknown_scheduler_code_is_state_none() -> None:
    info = FakeState(None, raw_state="XQ").job_info("1")
    assert (info.state, info.raw_state) == (None, "XQ")


def test_fake_state_refuses_fields_jobinfo_does_not_have() -> None:
    with pytest.raises(TypeError, match="no_such_field"):
        FakeState(S.RUNNING, extra={"no_such_field": 1})
    with pytest.raises(TypeError):
        FakeState("running")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FakeBackend().script("a", None, "running")  # type: ignore[arg-type]


def test_set_absent_hides_the_job() -> None:
    backend = FakeBackend()
    (req,) = submit(backend, task("a"))
    backend.set_absent("a")
    assert backend.poll([req]) == {}


def test_permanent_submit_failure_is_a_definite_rejection() -> None:
    backend = FakeBackend()
    backend.fail_submit("a")
    (out,) = backend.submit([SubmitRequest(task("a"), 1, "tok")])
    assert out.job_id is None and not out.unknown
    assert isinstance(out.error, SchedulerError) and not out.error.transient
    assert backend.jobs == {}
    (again,) = backend.submit([SubmitRequest(task("a"), 2, "tok2")])  # times=1: used up
    assert again.job_id == "1000"


def test_transient_submit_failure_creates_no_job() -> None:
    backend = FakeBackend()
    backend.fail_submit("a", "transient", times=2)
    outs = backend.submit([SubmitRequest(task("a"), 1, "t1"), SubmitRequest(task("a"), 2, "t2")])
    assert all(isinstance(o.error, TransportError) and o.error.transient and not o.unknown
               for o in outs)  # fmt: skip
    assert backend.jobs == {}


def test_unknown_submit_outcome_job_exists_and_is_found_by_token() -> None:
    backend = FakeBackend()
    backend.fail_submit("a", "unknown")
    backend.set_state("a", None, S.RUNNING)
    (out,) = backend.submit([SubmitRequest(task("a"), 1, "tok")])
    assert out.job_id is None and out.unknown and isinstance(out.error, CommandTimeout)
    info = backend.poll([PollRequest("a", 1, "tok", None, None)])["tok"]
    assert (info.job_id, info.state) == ("1000", S.RUNNING)


def test_unknown_submit_outcome_without_a_job() -> None:
    backend = FakeBackend()
    err = TransportError("connection dropped while `bash -s` was running")
    backend.fail_submit("a", "unknown", job_created=False, error=err, attempt=1)
    (out,) = backend.submit([SubmitRequest(task("a"), 1, "tok")])
    assert out.error is err and out.unknown
    assert backend.poll([PollRequest("a", 1, "tok", None, None)]) == {}


def test_fail_submit_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError):
        FakeBackend().fail_submit("a", "maybe")  # type: ignore[arg-type]


def test_fail_poll_raises_then_recovers_and_the_call_is_recorded() -> None:
    backend = FakeBackend()
    (req,) = submit(backend, task("a"))
    backend.fail_poll(times=2)
    for _ in range(2):
        with pytest.raises(TransportError):
            backend.poll([req])
    assert backend.poll([req])[req.token].state == S.QUEUED
    assert [c.method for c in backend.calls] == ["submit", "poll", "poll", "poll"]


def test_fail_any_method_with_any_error_and_reset() -> None:
    backend = FakeBackend()
    backend.fail("cancel", SchedulerError(("scancel",), 1, "down"))
    with pytest.raises(SchedulerError):
        backend.cancel([])
    backend.fail("prepare")
    backend.fail_submit("a")
    backend.reset_failures()
    assert backend.prepare([task("a")]) == {"a": "/fake/work/a"}
    with pytest.raises(ValueError):
        backend.fail("frobnicate")


def test_cancel_is_recorded_and_the_job_then_reports_cancelled() -> None:
    backend = FakeBackend()
    (req,) = submit(backend, task("a"))
    backend.set_state("a", None, S.RUNNING)
    backend.cancel([req])
    assert backend.job("a").cancelled
    assert backend.poll([req])[req.token].state == S.CANCELLED
    backend.set_state("a", None, S.RUNNING)  # a new script wins over the cancel
    assert backend.poll([req])[req.token].state == S.RUNNING


def test_cancel_state_none_only_records() -> None:
    backend = FakeBackend(cancel_state=None)
    (req,) = submit(backend, task("a"))
    backend.cancel([req])
    assert backend.job("a").cancelled and backend.poll([req])[req.token].state == S.QUEUED


def test_a_job_the_fake_never_allocated_answers_from_its_tasks_script() -> None:
    backend = FakeBackend()
    req = PollRequest("t9", 1, "tok", "77", "/w/t9")  # written into the registry by a test
    assert backend.poll([req]) == {}  # no script: the scheduler knows nothing
    backend.set_state("t9", None, S.RUNNING)
    assert backend.poll([req])["tok"].job_id == "77"
    assert backend.job("t9").work_dir == "/w/t9"


def test_outputs_are_fetched_by_the_tasks_globs(tmp_path: Path) -> None:
    backend = FakeBackend()
    t = task("a", name="sim", outputs=("*.json", "out/**"))
    backend.set_outputs("sim", {"r.json": "{}", "out/x/y.txt": b"\x00", "log.txt": "no",
                                ".hpcbridge/1/exit_code": "0"})  # fmt: skip
    got = backend.fetch_outputs(t, tmp_path)
    assert got == [tmp_path / "out/x/y.txt", tmp_path / "r.json"]
    assert (tmp_path / "r.json").read_text() == "{}"
    assert backend.fetch_outputs(task("b", outputs=("*",)), tmp_path / "none") == []


def test_logs_and_tail() -> None:
    backend = FakeBackend()
    backend.set_log("a", 1, "stdout", "1\n2\n3\n")
    t = task("a")
    assert backend.read_log(t, 1, "stdout", None) == "1\n2\n3\n"
    assert backend.read_log(t, 1, "stdout", 2) == "2\n3\n"
    assert backend.read_log(t, 1, "stderr", None) == ""
    with pytest.raises(UsageError):
        backend.read_log(t, 1, "stdin", None)


def test_calls_are_recorded_in_order_with_their_arguments(tmp_path: Path) -> None:
    backend = FakeBackend()
    t = task("a")
    backend.prepare([t])
    (req,) = submit(backend, t)
    backend.poll([req])
    backend.read_log(t, 1, "stdout", 5)
    backend.close()
    assert [c.method for c in backend.calls] == ["prepare", "submit", "poll", "read_log", "close"]
    assert backend.calls_to("poll")[0].args == ((req,),)
    assert backend.calls_to("read_log")[0].args == (t, 1, "stdout", 5)
    assert [r.token for r in backend.submitted] == [req.token] and backend.closed


# ========================================================================= ReplayTransport


@pytest.mark.parametrize("argv,expected", [
    (["squeue", "--me"], ("squeue", "--me")),
    (["/opt/slurm/bin/squeue", "--me"], ("squeue", "--me")),
    (["env", "-u", "SQUEUE_FORMAT", "-u", "SLURM_TIME_FORMAT", "squeue"], ("squeue",)),
    (["/usr/bin/env", "-uSACCT_FORMAT", "--unset=SLURM_CLUSTERS", "-i", "TZ=UTC", "--",
      "/opt/bin/sacct", "-X"], ("sacct", "-X")),
    (["env", "-u", "X"], ()),
])  # fmt: skip
def test_normalize_argv(argv: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_argv(argv) == expected


def test_prefix_rules_match_after_an_env_prefix_and_bin_dir() -> None:
    transport = ReplayTransport().on("sacct --parsable2", "rows\n")
    res = transport.run(["env", "-u", "SACCT_FORMAT", "/opt/bin/sacct", "--parsable2", "-j", "1"])
    assert (res.stdout, res.exit_status, res.ok) == ("rows\n", 0, True)
    (call,) = transport.calls
    assert call.argv[0] == "env" and call.command[:2] == ("sacct", "--parsable2")
    assert res.argv == call.argv  # the result names what was really run


def test_rules_first_match_wins_and_times_retires_them() -> None:
    transport = (ReplayTransport()
                 .on(["squeue"], "first\n", times=1)
                 .on(["squeue"], "later\n")
                 .on(["squeue", "--me"], "never: the rule above matches first\n"))  # fmt: skip
    assert [transport.run(["squeue", "--me"]).stdout for _ in range(3)] == [
        "first\n", "later\n", "later\n"]
    transport.verify()


def test_has_matches_an_argument_anywhere_by_prefix() -> None:
    transport = (ReplayTransport()
                 .on("sacct", "by name\n", has=["--name="])
                 .on("sacct", "by id\n", has=["--jobs="]))  # fmt: skip
    assert transport.run(["sacct", "-X", "--name=hpcb-a-1"]).stdout == "by name\n"
    assert transport.run(["sacct", "--jobs=1,2"]).stdout == "by id\n"
    with pytest.raises(UnexpectedCommand):
        transport.run(["sacct", "-X"])


def test_an_unmatched_command_is_a_loud_test_failure() -> None:
    transport = ReplayTransport().on("squeue", "")
    with pytest.raises(UnexpectedCommand) as err:
        transport.run(["sbatch", "--parsable"], what="submitting")
    assert isinstance(err.value, AssertionError) and not isinstance(err.value, HpcBridgeError)
    assert "sbatch --parsable" in str(err.value) and "squeue" in str(err.value)  # rules listed
    assert [c.command for c in transport.unmatched] == [("sbatch", "--parsable")]
    with pytest.raises(UnexpectedCommand, match="unanswered"):
        transport.verify()  # reported again, in case the code under test swallowed it


def test_verify_reports_rules_not_used_up() -> None:
    transport = ReplayTransport().on("scancel", "", times=2)
    transport.run(["scancel", "1"])
    with pytest.raises(UnexpectedCommand, match="not used up: scancel, used 1/2"):
        transport.verify()


def test_replies_from_capture_files() -> None:
    triple = Reply.from_files(DATA, "err_sbatch_invalid_partition")
    assert triple.exit_status == 1 and triple.stdout == ""
    assert "Invalid partition name specified" in triple.stderr
    whole = Reply.from_files(DATA, "sbatch_parsable.txt")
    assert whole.stdout.strip().isdigit() and whole.exit_status == 0
    with pytest.raises(FileNotFoundError, match="no capture"):
        Reply.from_files(DATA, "no_such_capture")
    transport = ReplayTransport(DATA)
    with pytest.raises(FileNotFoundError):
        transport.on("squeue", file="squeue_typo.txt")  # read when the rule is made
    with pytest.raises(ValueError):
        ReplayTransport().on("squeue", file="squeue_running.txt")  # no data_dir
    with pytest.raises(ValueError):
        transport.on("squeue", "x", file="squeue_running.txt")


def test_check_true_raises_command_failed_with_the_evidence() -> None:
    transport = ReplayTransport(DATA).on("sbatch", file="err_sbatch_invalid_partition")
    assert transport.run(["sbatch"]).exit_status == 1  # check=False: a result
    with pytest.raises(CommandFailed) as err:
        transport.run(["sbatch"], check=True, what="sbatch")
    assert err.value.exit_status == 1 and "Invalid partition" in err.value.stderr


def test_a_rule_can_raise_a_transport_failure() -> None:
    timeout = CommandTimeout("squeue did not finish within 120 s")
    transport = ReplayTransport().on("squeue", raises=timeout)
    with pytest.raises(CommandTimeout) as err:
        transport.run(["squeue"])
    assert err.value is timeout and transport.stats.round_trips == 1


def test_a_callable_rule_sees_the_call() -> None:
    seen: list[ReplayCall] = []

    def respond(call: ReplayCall) -> str:
        seen.append(call)
        return f"{len(call.command)} words, stdin {call.stdin!r}\n"

    transport = ReplayTransport().on("cat", respond)
    assert transport.run(["cat", "-"], stdin="hi", timeout=5, what="w").stdout == \
        "2 words, stdin 'hi'\n"  # fmt: skip
    assert (seen[0].timeout, seen[0].what) == (5, "w")


def test_argv_is_validated_as_by_the_real_transports() -> None:
    transport = ReplayTransport().on("squeue", "")
    with pytest.raises(UsageError):
        transport.run("squeue --me")  # a str is a Sequence[str]: refused at run time
    with pytest.raises(UsageError):
        transport.run(["squeue", "a\x00b"])


def test_script_rules() -> None:
    transport = (ReplayTransport()
                 .on_script("markers\n", contains="HPCBMARK")
                 .on_script(Reply("", "boom\n", 2), contains=["sbatch", "tokA"]))  # fmt: skip
    assert transport.run_script("echo HPCBMARK").stdout == "markers\n"
    res = transport.run_script("sbatch ... tokA")
    assert (res.exit_status, res.stderr, res.argv) == (2, "boom\n", script_argv(False))
    with pytest.raises(CommandFailed):
        transport.run_script("sbatch ... tokA", check=True)
    with pytest.raises(UnexpectedCommand, match="run_script"):
        transport.run_script("something else")
    assert transport.scripts[:2] == ["echo HPCBMARK", "sbatch ... tokA"]


def test_date_offset_fallback_and_override() -> None:
    assert ReplayTransport(utc_offset="-0500").run(["date", "+%z"]).stdout == "-0500\n"
    assert ReplayTransport().on("date", "+0200\n").run(["date", "+%z"]).stdout == "+0200\n"
    with pytest.raises(UnexpectedCommand):
        ReplayTransport(utc_offset=None).run(["date", "+%z"])


def test_run_locally_runs_scripts_and_commands(tmp_path: Path) -> None:
    transport = ReplayTransport().on_script(run_locally(cwd=tmp_path)).on("printf",
                                                                          run_locally())
    res = transport.run_script("pwd; echo err >&2; exit 3")
    assert (res.stdout.strip(), res.stderr, res.exit_status) == (str(tmp_path), "err\n", 3)
    assert transport.run(["printf", "%s-%s", "a b", "$HOME"]).stdout == "a b-$HOME"  # no shell


# ------------------------------------------------------------------------ files


def test_paths_expand_against_home() -> None:
    transport = ReplayTransport(home="/home/u")
    assert transport.expand("~") == "/home/u"
    assert transport.expand("~/w/x") == "/home/u/w/x"
    assert transport.expand("w") == "/home/u/w"
    assert transport.expand("/abs") == "/abs"
    with pytest.raises(UsageError):
        transport.expand("~other/x")


def test_write_read_tail_exists_makedirs() -> None:
    transport = ReplayTransport(home="/h")
    transport.write_text("w/log.txt", "a\nb\nc\n", mode=0o600)
    assert transport.files["/h/w/log.txt"] == b"a\nb\nc\n" and transport.modes["/h/w/log.txt"] == 0o600
    assert transport.read_text("~/w/log.txt") == "a\nb\nc\n"
    assert transport.read_text("/h/w/log.txt", tail_lines=2) == "b\nc\n"
    assert transport.exists("/h/w") and transport.exists("/h/w/log.txt")
    assert not transport.exists("/h/nope")
    transport.makedirs("/h/empty/dir")
    assert transport.exists("/h/empty") and transport.list_files("/h/empty") == []
    with pytest.raises(RemoteFileNotFound) as err:
        transport.read_text("/h/missing")
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(RemoteFileError):
        transport.makedirs("/h/w/log.txt")


def test_put_get_and_list_files(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    transport = ReplayTransport()
    transport.put(src, "/w/in")
    transport.put(src / "a.txt", "/w/single.txt")
    assert transport.list_files("/w") == ["in/a.txt", "in/sub/b.txt", "single.txt"]
    transport.get("/w/in/sub/b.txt", tmp_path / "back" / "b.txt")
    assert (tmp_path / "back" / "b.txt").read_text() == "B"
    with pytest.raises(RemoteFileNotFound):
        transport.get("/w/nope", tmp_path / "x")
    with pytest.raises(RemoteFileNotFound):
        transport.put(tmp_path / "does-not-exist", "/w/x")
    with pytest.raises(RemoteFileNotFound):
        transport.list_files("/nowhere")
    with pytest.raises(RemoteFileError) as err:
        transport.list_files("/w/single.txt")
    assert not isinstance(err.value, RemoteFileNotFound)
    assert [c.method for c in transport.calls][:2] == ["put", "put"]
    assert transport.calls[0].path == "/w/in" and transport.calls[0].local == src


def test_file_operations_and_connect_can_fail() -> None:
    transport = ReplayTransport().fail("connect").fail("write_text", times=None)
    with pytest.raises(TransportError):
        transport.connect()
    transport.connect()  # times=1: used up
    for _ in range(3):
        with pytest.raises(TransportError):
            transport.write_text("/x", "y")
    assert transport.files == {}
    with pytest.raises(ValueError):
        transport.fail("run")  # commands fail through their rules


def test_close_is_recorded() -> None:
    transport = ReplayTransport()
    transport.close()
    assert transport.closed and transport.calls[-1].method == "close"


# ========================================================================= column helpers


def test_columns_round_trip_and_reorder() -> None:
    text = "1|a|x|\n2|b|y|\n"
    rows = split_columns(text, ["id", "name", "extra"], trailing_separator=True)
    assert rows == [{"id": "1", "name": "a", "extra": "x"}, {"id": "2", "name": "b", "extra": "y"}]
    assert join_columns(rows, ["id", "name", "extra"], trailing_separator=True) == text

    def rename(row: dict[str, str]) -> None:
        row["name"] = row["name"].upper()

    assert reorder_columns(text, ["id", "name", "extra"], ["name", "id"], trailing_separator=True,
                           edit=rename) == "A|1\nB|2\n"  # fmt: skip


def test_columns_refuse_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected 2 fields"):
        split_columns("1|2|3\n", ["a", "b"])
    with pytest.raises(KeyError, match="missing"):
        join_columns([{"a": "1"}], ["a", "missing"])


def test_reorder_a_real_capture_into_hpcbridges_query_shape() -> None:
    from hpcbridge import slurm

    capture = ["JobID", "JobArrayID", "ArrayJobID", "ArrayTaskID", "Name", "State", "Reason",
               "NodeList", "Partition", "Comment", "SubmitTime", "StartTime", "EndTime",
               "RestartCnt", "exit_code"]  # fmt: skip
    text = reorder_columns((DATA / "squeue_running.txt").read_text(), capture,
                           slurm.SQUEUE_FIELDS, trailing_separator=True)  # fmt: skip
    (row,) = slurm.parse_squeue(text)
    assert isinstance(row, JobInfo) and (row.job_id, row.state) == ("367", S.RUNNING)
