"""hpcbridge.slurm.usage on real sacct / sstat output from the 22.05 lab.

Captured by scripts/lab/capture-usage.sh (tests/data/slurm/COMMANDS.md, "Usage, live usage,
queue insight"). Jobs of usage_sacct.txt: 465 holds ~300 MB and spins one CPU (--mem=500M
-c1 --time=5), 466 a batch step plus ``srun -n2`` of two ~100 MB tasks (--mem-per-cpu=200M),
467 ~200 MB, cancelled by its user, 468 ``true``. usage_sacct_timeout.txt: 514 ran into
--time=1. usage_fail_sacct.txt: the failures of test_diagnostics, 503 the OverMemoryKill job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hpcbridge.errors import UsageError
from hpcbridge.slurm.usage import (
    SSTAT_FIELDS,
    USAGE_FIELDS,
    LiveUsage,
    Thresholds,
    Usage,
    accounting_gathers_nothing,
    efficiency_warnings,
    format_size,
    live_cpu_efficiency,
    looks_out_of_memory,
    parse_duration,
    parse_gather_type,
    parse_size,
    parse_sstat,
    parse_tres,
    parse_usage,
    sacct_usage_argv,
    sstat_argv,
    sstat_not_running,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"
K, M = 1024, 1024**2


def read(name: str) -> str:
    return (DATA / name).read_text()


def logged(name: str) -> str:
    """The command line that produced a capture (usage_commands.log: the argv joined by
    spaces, unquoted)."""
    for line in read("usage_commands.log").splitlines():
        file, _, cmd = line.partition("\t")
        if file == name:
            return cmd
    raise KeyError(name)


@pytest.fixture(scope="module")
def usage() -> dict[str, Usage]:
    problems: list[str] = []
    out = parse_usage(read("usage_sacct.txt"), problems)
    out.update(parse_usage(read("usage_sacct_timeout.txt"), problems))
    out.update(parse_usage(read("usage_fail_sacct.txt"), problems))
    assert problems == []
    return out


# --------------------------------------------------------------------------- sizes, durations


@pytest.mark.parametrize("text,unit,expected", [
    ("317048K", "", 317048 * K), ("500M", "", 500 * M), ("1.50G", "", int(1.5 * 1024**3)),
    ("49241", "", 49241), ("0", "", 0), ("", "", None), ("N/A", "", None),
    ("4000", "M", 4000 * M), ("30196", "K", 30196 * K), ("2T", "M", 2 * 1024**4),
])  # fmt: skip
def test_parse_size(text: str, unit: str, expected: int | None) -> None:
    assert parse_size(text, unit=unit) == expected


@pytest.mark.parametrize("bad", ["12Q", "M", "-5K", "1,5G", "100Mc"])
def test_parse_size_rejects_what_is_no_size(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,expected", [
    ("00:07.754", 7.754), ("01:06.002", 66.002), ("00:01:07", 67), ("00:00:00", 0),
    ("12:34:56", 45296), ("1-02:03:04", 93784), ("3-00:00:00.500", 259200.5),
    ("UNLIMITED", None), ("Partition_Limit", None), ("", None), ("INVALID", None),
])  # fmt: skip
def test_parse_duration(text: str, expected: float | None) -> None:
    assert parse_duration(text) == pytest.approx(expected) if expected is not None else (
        parse_duration(text) is None)


@pytest.mark.parametrize("bad", ["90", "1:2:3:4", "abc", "1-", "00:07.x"])
def test_parse_duration_rejects_bare_and_broken_numbers(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_parse_tres_reads_a_captured_usage_string() -> None:
    line = read("usage_sacct.txt").splitlines()[1]
    tres = parse_tres(line.split("|")[USAGE_FIELDS.index("TRESUsageInTot")])
    assert tres == {"cpu": "00:00:07", "energy": "0", "fs/disk": "49241", "mem": "317048K",
                    "pages": "0", "vmem": "323648K"}  # fmt: skip


def test_format_size() -> None:
    assert [format_size(x) for x in (None, 12, 317048 * K, 500 * M, 3 * 1024**3)] == [
        "?", "12 B", "309.6 MiB", "500.0 MiB", "3.0 GiB"]  # fmt: skip


# --------------------------------------------------------------------------- sacct


def test_sacct_usage_argv_is_the_captured_command() -> None:
    argv = sacct_usage_argv(["465", "466", "467", "468"])
    assert " ".join(argv) == logged("usage_sacct.txt")
    assert "-X" not in argv and "--allocations" not in argv  # MaxRSS lives on the steps
    assert "--duplicates" not in argv  # the last instance of a requeued job only
    assert sacct_usage_argv(["44_7"], bin_dir="/opt/slurm/bin")[0] == "/opt/slurm/bin/sacct"
    assert sacct_usage_argv(["44_7"])[-1] == "--jobs=44_7"


@pytest.mark.parametrize("bad", [[], ["12;rm"], ["1.batch"], ["$(x)"]])
def test_sacct_usage_argv_refuses_bad_ids(bad: list[str]) -> None:
    with pytest.raises(UsageError):
        sacct_usage_argv(bad)


def test_spinner_agrees_with_what_sacct_prints(usage: dict[str, Usage]) -> None:
    """~300 MB and one busy CPU: the figures are sacct's own (usage_sacct_human.txt is the
    same job in sacct's default table), and the efficiencies are seff's formulas."""
    u = usage["465"]
    human = {ln.split()[0]: ln.split() for ln in read("usage_sacct_human.txt").splitlines()[2:]}
    # JobID State Elapsed TotalCPU AllocCPUS ReqMem AllocTRES MaxRSS NTasks
    assert parse_duration(human["465"][3]) == u.cpu_seconds == pytest.approx(7.754)
    assert parse_size(human["465.batch"][6], unit="K") == u.max_rss_bytes == 317048 * K
    assert parse_duration(human["465"][2]) == u.elapsed_seconds == 13
    assert 290 * M < u.max_rss_bytes < 320 * M  # the job held about 300 MB
    assert (u.alloc_cpus, u.alloc_mem_bytes, u.timelimit_seconds) == (1, 500 * M, 300)
    assert u.cpu_efficiency == pytest.approx(7.754 / 13)
    assert u.mem_efficiency == pytest.approx(317048 * K / (500 * M))
    assert u.time_efficiency == pytest.approx(13 / 300)
    assert u.core_hours == pytest.approx(13 / 3600)
    assert (u.state, u.exit_code, u.signal, u.nodes) == ("COMPLETED", 0, 0, "node1")
    assert u.gathered and not u.undercounted


def test_srun_step_memory_is_the_sum_of_its_tasks(usage: dict[str, Usage]) -> None:
    # 466.0: two tasks, MaxRSS 110712K (one task), TRESUsageInTot mem=221412K (both): seff
    # takes the largest step's TRESUsageInTot mem; AllocTRES mem=400M = 2 CPUs x 200M.
    u = usage["466"]
    assert u.max_rss_bytes == 221412 * K
    assert (u.alloc_cpus, u.alloc_mem_bytes) == (2, 400 * M)
    assert u.cpu_efficiency == pytest.approx(4.923 / (10 * 2))
    assert u.core_hours == pytest.approx(20 / 3600)


def test_cancelled_and_timed_out_jobs_undercount(usage: dict[str, Usage]) -> None:
    cancelled, timeout = usage["467"], usage["514"]
    assert cancelled.state == "CANCELLED by 1001" and cancelled.undercounted
    assert cancelled.max_rss_bytes == 214596 * K
    assert timeout.state == "TIMEOUT" and timeout.undercounted
    # killed some seconds after its 1 minute: more than the whole time limit
    assert timeout.elapsed_seconds == 84 and timeout.time_efficiency == pytest.approx(84 / 60)
    assert timeout.cpu_seconds == pytest.approx(45.003)


def test_a_job_shorter_than_one_sample_has_cpu_but_no_memory(usage: dict[str, Usage]) -> None:
    # `true`: TotalCPU from rusage, but the batch step's TRESUsageInTot is only "energy=0"
    u = usage["468"]
    assert u.cpu_seconds == pytest.approx(0.002) and u.gathered
    assert u.max_rss_bytes is None and u.mem_efficiency is None
    assert u.elapsed_seconds == 0 and u.cpu_efficiency is None
    assert u.timelimit_seconds == 3600  # no --time: the partition's MaxTime


def test_to_dict_has_the_registry_shape(usage: dict[str, Usage]) -> None:
    d = usage["465"].to_dict()
    for key in ("cpu_seconds", "max_rss_bytes", "cpu_efficiency", "mem_efficiency",
                "time_efficiency", "core_hours", "alloc_cpus", "alloc_mem_bytes",
                "elapsed_seconds", "timelimit_seconds", "undercounted"):  # fmt: skip
        assert key in d
    assert d["max_rss_bytes"] == 317048 * K


def _swap(line: str, **fields: str) -> str:
    parts = line.split("|")
    for name, value in fields.items():
        parts[USAGE_FIELDS.index(name)] = value
    return "|".join(parts)


@pytest.mark.parametrize("req_mem,expected", [
    ("4000M", 4000 * M), ("100Mc", 100 * M), ("4Gn", 4 * 1024**3), ("2Gc", 2 * 1024**3),
    ("0n", None), ("", None),
])  # fmt: skip
def test_req_mem_forms_when_alloc_tres_has_no_memory(req_mem: str, expected: int | None) -> None:
    # 22.05 prints ReqMem as the job's total ("500M"); before 21.08 it was "100Mc" (per CPU)
    # or "4Gn" (per node). The real line 465 with AllocTRES emptied and ReqMem replaced.
    job, step = read("usage_sacct.txt").splitlines()[:2]
    u = parse_usage(_swap(job, AllocTRES="", ReqMem=req_mem) + "\n" + step)["465"]
    assert u.alloc_mem_bytes == expected  # 1 CPU, 1 node


def test_no_accounting_gathered_gives_no_numbers() -> None:
    # jobacct_gather/none: no step reports MaxRSS or TRES usage, TotalCPU stays 0 (what
    # Slurm's source does: as_mysql_step_complete without jobacct; not measured: the lab
    # gathers with jobacct_gather/linux). The real line 465 so emptied.
    job, step = read("usage_sacct.txt").splitlines()[:2]
    text = _swap(job, TotalCPU="00:00:00") + "\n" + _swap(step, TotalCPU="00:00:00",
                                                           MaxRSS="", TRESUsageInTot="")
    u = parse_usage(text)["465"]
    assert not u.gathered
    assert u.cpu_seconds is None and u.cpu_efficiency is None and u.max_rss_bytes is None
    assert u.core_hours == pytest.approx(13 / 3600)  # the allocation is still known
    assert efficiency_warnings(u) == []


def test_a_bad_line_is_reported_and_only_its_job_loses_what_it_held() -> None:
    lines = read("usage_sacct.txt").splitlines()
    lines[4] = _swap(lines[4], MaxRSS="lots")  # 466.0, the step with the peak
    lines.insert(0, "garbage")
    problems: list[str] = []
    out = parse_usage("\n".join(lines), problems)
    assert len(problems) == 2 and "garbage" in problems[0] and "lots" in problems[1]
    assert out["466"].max_rss_bytes is None and out["466"].cpu_seconds == pytest.approx(4.923)
    assert out["465"].max_rss_bytes == 317048 * K  # the others are untouched
    assert set(out) == {"465", "466", "467", "468"}


def test_array_task_ids_are_kept() -> None:
    job, step = read("usage_sacct.txt").splitlines()[:2]
    text = job.replace("465|", "44_7|", 1) + "\n" + step.replace("465.batch", "44_7.batch", 1)
    assert parse_usage(text)["44_7"].max_rss_bytes == 317048 * K


# --------------------------------------------------------------------------- judgement


def test_warnings_on_real_jobs(usage: dict[str, Usage]) -> None:
    assert efficiency_warnings(usage["465"]) == []  # 60% CPU, 62% of the memory
    (steps,) = efficiency_warnings(usage["466"])
    assert steps.startswith("CPU efficiency 25% (below 50%)") and "0.5 of 2" in steps
    cancelled = efficiency_warnings(usage["467"])
    assert len(cancelled) == 1 and "under-counts for a CANCELLED job" in cancelled[0]
    cpu, oom = efficiency_warnings(usage["503"])  # killed by signal 9: CPU under-counted
    assert "under-counts for a FAILED job" in cpu
    assert "close to being killed for memory" in oom and "of the 50.0 MiB limit" in oom


def test_warning_thresholds_are_configurable(usage: dict[str, Usage]) -> None:
    strict = Thresholds(min_cpu_efficiency=0.7, min_mem_efficiency=0.7)
    w = efficiency_warnings(usage["465"], strict)
    assert w[0].startswith("CPU efficiency 60% (below 70%)")
    assert "memory peak 309.6 MiB is only 62% of the 500.0 MiB requested" in w[1]
    assert "about 387.0 MiB would do" in w[1]
    assert efficiency_warnings(usage["465"], Thresholds(min_elapsed_seconds=60)) == []
    near = efficiency_warnings(usage["465"], Thresholds(max_mem_efficiency=0.6))
    assert near and "close to being killed" in near[0]


def test_looks_out_of_memory(usage: dict[str, Usage]) -> None:
    oom = usage["503"]  # --mem=50M, touched 300 MB: OverMemoryKill -> FAILED 0:9
    assert (oom.state, oom.exit_code, oom.signal) == ("FAILED", 0, 9)
    assert oom.mem_efficiency is not None and oom.mem_efficiency > 6  # sampled past the limit
    assert looks_out_of_memory(oom, "FAILED", 9)
    assert looks_out_of_memory(oom, None, None)  # state and signal from the usage
    assert looks_out_of_memory(None, "OUT_OF_MEMORY", None)  # cgroup OOM says so itself
    far = dataclasses.replace(oom, max_rss_bytes=5 * M, mem_efficiency=0.1)
    assert not looks_out_of_memory(far, "FAILED", 9)  # a SIGKILL far from the limit
    assert not looks_out_of_memory(usage["500"], "FAILED", 11)  # segfault
    assert not looks_out_of_memory(usage["465"], "COMPLETED", 0)
    assert not looks_out_of_memory(None, "FAILED", 9)  # no memory figures: cannot say


# --------------------------------------------------------------------------- sstat


def test_sstat_argv_is_the_captured_command() -> None:
    assert " ".join(sstat_argv(["466", "465"])) == logged("usage_sstat_steps.txt")
    assert "--allsteps" in sstat_argv(["1"])
    assert SSTAT_FIELDS[0] == "JobID"
    with pytest.raises(UsageError):
        sstat_argv(["1;x"])


def test_without_allsteps_a_batch_only_job_shows_nothing() -> None:
    # why sstat_argv has --allsteps: `sstat -j 465` looks at the first normal step only,
    # and a script without srun has none (exit 0, no output, no error)
    assert read("usage_sstat_plain_jobid.stdout") == ""
    assert read("usage_sstat_plain_jobid.stderr") == ""
    assert read("usage_sstat_batch.stdout").startswith("465.batch|317048K|")


def test_live_usage_of_the_spinner() -> None:
    (live,) = parse_sstat(read("usage_sstat_running.txt"), sampled_at=1796124000.0).values()
    assert (live.job_id, live.steps, live.ntasks) == ("465", ("batch",), 1)
    assert live.rss_bytes == live.max_rss_bytes == 317048 * K
    assert live.cpu_seconds == 1.0 and live.disk_read_bytes == 49241
    assert live.disk_write_bytes == 1 and live.gathered
    assert live.to_dict()["sampled_at"] == 1796124000.0
    assert live_cpu_efficiency(live, elapsed_seconds=2, alloc_cpus=1) == pytest.approx(0.5)
    assert live_cpu_efficiency(live, elapsed_seconds=0, alloc_cpus=1) is None


def test_live_usage_sums_the_running_steps() -> None:
    live = parse_sstat(read("usage_sstat_steps.txt"), sampled_at=5.0)
    steps = live["466"]
    assert steps.steps == ("batch", "0") and steps.ntasks == 3
    # now: batch 10536K + step 0 221412K; peak: the largest step, 221412K (> its MaxRSS)
    assert steps.rss_bytes == (10536 + 221412) * K
    assert steps.max_rss_bytes == 221412 * K
    assert steps.disk_write_bytes == 1100 + 2
    assert live["465"].rss_bytes == 317048 * K
    assert not accounting_gathers_nothing(live)


def test_a_step_printed_twice_counts_once() -> None:
    line = read("usage_sstat_running.txt").strip()
    (live,) = parse_sstat(line + "\n" + line + "\n", sampled_at=0).values()
    assert live.rss_bytes == 317048 * K and live.ntasks == 1


def test_sstat_of_an_ended_job() -> None:
    assert read("usage_sstat_finished.stdout") == ""
    assert read("usage_sstat_finished.rc").strip() == "0"
    assert sstat_not_running(read("usage_sstat_finished.stderr"))
    assert not sstat_not_running("sstat: error: Unable to contact slurm controller")
    assert parse_sstat("", sampled_at=0) == {}


def test_no_accounting_gathered_live() -> None:
    # jobacct_gather/none: the stepd keeps no jobacct, so sstat prints the step with NTasks
    # and Nodelist but every usage field empty (src/sstat/sstat.c _do_stat; not measured)
    line = read("usage_sstat_running.txt").strip().split("|")
    empty = "|".join(line[:3] + ["", "", ""])
    live = parse_sstat(empty, sampled_at=0)
    assert not live["465"].gathered and live["465"].rss_bytes is None
    assert accounting_gathers_nothing(live)
    assert not accounting_gathers_nothing({})


def test_bad_sstat_lines_are_reported() -> None:
    problems: list[str] = []
    good = read("usage_sstat_running.txt").strip()
    out = parse_sstat(f"465|1|x\n466|1|node1|||\n{good}\n", sampled_at=0, problems=problems)
    assert list(out) == ["465"] and len(problems) == 2


def test_gather_type_from_the_lab_config() -> None:
    assert parse_gather_type(read("usage_scontrol_config.txt")) == "jobacct_gather/linux"
    assert parse_gather_type("JobAcctGatherType       = jobacct_gather/none\n") == (
        "jobacct_gather/none")
    assert parse_gather_type("") is None


def test_live_usage_is_frozen() -> None:
    live = LiveUsage("1", ("batch",), 1, None, None, None, None, None, 0.0, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        live.rss_bytes = 5  # type: ignore[misc]
