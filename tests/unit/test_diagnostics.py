"""hpcbridge.diagnostics on real failures from the 22.05 lab.

scripts/lab/capture-usage.sh (scenario ``fail``) ran each command of usage_commands.log with
``sbatch --wrap`` (``/bin/sh``, dash), kept its -o / -e files as usage_fail_<name>.stdout /
.stderr and its sacct usage lines in usage_fail_sacct.txt; the ``timeout`` scenario did the
same for a --time=1 job.
"""

from __future__ import annotations

import dataclasses
import re
import signal
from pathlib import Path

import pytest

from hpcbridge.diagnostics import Diagnosis, describe_exit, diagnose, signal_name
from hpcbridge.lifecycle import TaskState
from hpcbridge.slurm.queue import explain_reason
from hpcbridge.slurm.usage import Usage, parse_usage

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"


def read(name: str) -> str:
    return (DATA / name).read_text()


def _job_ids() -> dict[str, str]:
    """name -> job id, from the capture log ("usage_fail_<name>.stdout/.stderr ... job N")."""
    out = {}
    for line in read("usage_commands.log").splitlines():
        m = re.match(r"usage_fail_(\w+)\.stdout/\.stderr\t.*\bjob (\d+)", line)
        if m:
            out[m[1]] = m[2]
    return out


JOBS = _job_ids()
USAGE = {**parse_usage(read("usage_fail_sacct.txt")),
         **parse_usage(read("usage_sacct_timeout.txt"))}


def case(name: str, **kw: object) -> Diagnosis:
    """diagnose() with what hpcbridge would have kept about that real job."""
    u = USAGE[JOBS[name]]
    args: dict[str, object] = {
        "state": u.state, "exit_code": u.exit_code, "signal": u.signal,
        "stderr_tail": read(f"usage_fail_{name}.stderr"),
        "stdout_tail": read(f"usage_fail_{name}.stdout"), "usage": u,
    }  # fmt: skip
    args.update(kw)
    return diagnose(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- describe_exit


@pytest.mark.parametrize("code,sig,text", [
    (2, 0, "exit code 2"),
    (0, 0, "exit code 0"),
    (0, 9, "killed by signal 9 (SIGKILL)"),
    (0, 11, "killed by signal 11 (SIGSEGV)"),
    (1, 15, "exit code 1, killed by signal 15 (SIGTERM)"),
    (139, 0, "exit code 139 (a shell's code for signal 11 (SIGSEGV))"),
    (137, None, "exit code 137 (a shell's code for signal 9 (SIGKILL))"),
    (127, 0, "exit code 127 (command not found)"),
    (126, 0, "exit code 126 (command not executable)"),
    (255, 0, "exit code 255"),
    (None, None, "exit status unknown"),
    (0, 99, "killed by signal 99"),
])  # fmt: skip
def test_describe_exit(code: int | None, sig: int | None, text: str) -> None:
    assert describe_exit(code, sig) == text


def test_signal_names_come_from_pythons_signal_module() -> None:
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM):
        assert signal_name(int(sig)) == sig.name
    assert signal_name(99) is None


# --------------------------------------------------------------------------- real failures


def test_the_captures_are_the_failures_we_think() -> None:
    codes = {n: (USAGE[j].state, USAGE[j].exit_code, USAGE[j].signal) for n, j in JOBS.items()}
    assert codes["exit2"] == ("FAILED", 2, 0)
    assert codes["not_found_bash"] == ("FAILED", 127, 0)
    assert codes["not_executable"] == ("FAILED", 126, 0)
    assert codes["segv_exec"] == ("FAILED", 0, 11)
    # sacct prints exit statuses of 128 and more minus 128: the shell's 139 and `exit 137`
    assert codes["segv"] == ("FAILED", 11, 0) and codes["exit_137"] == ("FAILED", 9, 0)
    assert codes["oom"] == ("FAILED", 0, 9)
    assert codes["timeout"] == ("TIMEOUT", 0, 0)


def test_an_error_line_and_exit_2() -> None:
    d = case("exit2")
    assert d.summary == "failed: exit code 2 on node1"
    assert d.tail == ("error: deck.in has no SOLVER section",) and d.tail_source == "stderr"
    assert d.hint is not None and "exited with code 2" in d.hint


def test_stdout_is_shown_when_stderr_is_empty() -> None:
    d = case("stdout_only")
    assert d.tail_source == "stdout" and d.tail == ("FATAL: mesh file mesh.msh not found",)
    assert d.summary.startswith("failed: exit code 3")


def test_a_missing_input_file() -> None:
    d = case("missing_input")
    assert d.hint is not None
    assert "missing: /home/hpcblab/hpcbridge/capture-usage/no-such-dir/input.dat" in d.hint
    assert "inputs" in d.hint


@pytest.mark.parametrize("name", ["not_found", "not_found_bash"])
def test_a_command_not_found(name: str) -> None:
    # dash said "nosuch-solver: Permission denied" (a PATH entry the user may not read), bash
    # "command not found": exit 127 is what counts
    d = case(name)
    assert "exit code 127 (command not found)" in d.summary
    assert d.hint is not None and d.hint.startswith("A command was not found")
    if name == "not_found_bash":
        assert "not found: nosuch-solver." in d.hint


def test_permission_denied() -> None:
    d = case("not_executable")
    assert "exit code 126" in d.summary
    assert d.hint is not None and "not executable (chmod +x)" in d.hint


def test_python_tracebacks_show_their_last_line() -> None:
    d = case("traceback")
    assert d.summary.endswith("; Python: json.decoder.JSONDecodeError: Expecting value: line 1 "
                              "column 1 (char 0)")  # fmt: skip
    assert d.tail[-1].startswith("json.decoder.JSONDecodeError")
    missing = case("py_missing_file")
    assert missing.hint is not None and "missing: deck.in." in missing.hint
    module = case("py_missing_module")
    assert module.hint is not None and "could not import a module" in module.hint


@pytest.mark.parametrize("name", ["segv", "segv_exec"])
def test_segfaults(name: str) -> None:
    # segv: the shell printed "Segmentation fault" and exited 139 (sacct: 11:0);
    # segv_exec: the step itself died of SIGSEGV (0:11), with nothing on stderr
    d = case(name)
    assert d.hint is not None and "segmentation fault" in d.hint
    if name == "segv_exec":
        assert "killed by signal 11 (SIGSEGV)" in d.summary and d.tail == ()


def test_the_true_exit_code_of_the_wrapper_reads_better_than_sacct() -> None:
    # `exit 137`: sacct says 9:0; hpcbridge's wrapper marker keeps 137
    assert case("exit_137").summary.startswith("failed: exit code 9")
    d = case("exit_137", exit_code=137)
    assert "a shell's code for signal 9 (SIGKILL)" in d.summary
    assert d.hint == "The program was killed by signal 9 (SIGKILL)."


def test_out_of_memory_is_called_what_it_is() -> None:
    d = case("oom")  # FAILED 0:9 from OverMemoryKill, peak far over the 50M limit
    assert d.summary.startswith("out of memory: killed by signal 9 (SIGKILL) on node1, peak")
    assert "of 50.0 MiB" in d.summary
    assert d.hint is not None and "--mem" in d.hint
    assert "exceeded memory limit" in d.tail[0]
    # the same with hpcbridge's own state name, or cgroup OOM's state without any usage
    assert case("oom", state="out_of_memory").summary.startswith("out of memory")
    cgroup = diagnose(TaskState.OUT_OF_MEMORY, 0, 125, "", "", None)
    assert cgroup.summary.startswith("out of memory") and cgroup.tail_source is None


def test_a_sigkill_far_from_the_memory_limit_is_no_oom() -> None:
    u = USAGE[JOBS["oom"]]
    small = dataclasses.replace(u, max_rss_bytes=1 << 20, mem_efficiency=0.02)
    d = diagnose("FAILED", 0, 9, "", "", small)
    assert not d.summary.startswith("out of memory")
    assert d.hint == "The program was killed by signal 9 (SIGKILL)."


def test_time_limit() -> None:
    u = USAGE[JOBS["timeout"]]
    err = read("usage_fail_timeout.stderr")
    assert "DUE TO TIME LIMIT" in err
    d = diagnose(u.state, u.exit_code, u.signal, err, read("usage_fail_timeout.stdout"), u)
    assert d.summary.startswith("timed out:")
    assert d.hint is not None and "time limit (1 min)" in d.hint and "--time" in d.hint
    # from the slurmstepd line alone, or from hpcbridge's state alone
    assert diagnose(None, None, None, err, "").summary.startswith("timed out")
    assert diagnose("timed_out", 0, 0, "", "").hint is not None


def test_node_failure_and_preemption() -> None:
    # the line Slurm writes into the job's output (SLURM_FACTS.md, "Lifecycle events")
    line = ("slurmstepd: error: *** JOB 77 ON node2 CANCELLED AT 2026-11-25T17:40:06 DUE TO "
            "NODE FAILURE ***")
    d = diagnose("NODE_FAIL", 1, 0, line, "")
    assert d.summary.startswith("node failure") and "node failed" in (d.hint or "")
    assert diagnose(None, None, None, line, "").summary.startswith("node failure")
    p = diagnose("PREEMPTED", 0, 15, line.replace("NODE FAILURE", "PREEMPTION"), "")
    assert p.summary.startswith("preempted") and "higher-priority" in (p.hint or "")


def test_a_dependency_that_can_never_be_met() -> None:
    reason = explain_reason("DependencyNeverSatisfied")
    d = diagnose("CANCELLED", 0, 0, "", "", None, reason)
    assert d.summary.startswith("cancelled") and "can never satisfy" in (d.hint or "")
    assert diagnose("CANCELLED by 1001", 0, 0, "", "", None, "DependencyNeverSatisfied").hint


def test_tail_length_and_forms() -> None:
    text = "".join(f"line {i}\n" for i in range(30)) + "\n\n"
    d = diagnose("FAILED", 1, 0, text, "out", lines=5)
    assert d.tail == tuple(f"line {i}" for i in range(25, 30))
    assert diagnose("FAILED", 1, 0, ["a", "b", ""], None).tail == ("a", "b")
    assert diagnose("FAILED", 1, 0, None, None).tail_source is None
    assert diagnose("FAILED", 1, 0, "x", None, lines=0).tail == ()


def test_to_dict() -> None:
    d = case("exit2").to_dict()
    assert d == {"summary": "failed: exit code 2 on node1", "hint": d["hint"],
                 "tail": ["error: deck.in has no SOLVER section"], "tail_source": "stderr"}
    assert isinstance(USAGE[JOBS["exit2"]], Usage)
