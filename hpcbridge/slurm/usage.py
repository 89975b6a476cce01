"""What a job used: sacct (finished jobs, with their steps) and sstat (running steps). Pure.

* ``sacct_usage_argv`` / ``parse_usage``: one sacct call for many finished jobs -> ``Usage``
  per job id, efficiencies computed as seff and reportseff do.
* ``sstat_argv`` / ``parse_sstat``: the live usage of running jobs -> ``LiveUsage``.
* ``efficiency_warnings`` / ``looks_out_of_memory``: what to tell the user.
* ``parse_size`` / ``parse_duration``: Slurm's sizes and durations, read in this one place.

Where the numbers live (measured on the 22.05 lab; 24.11's src/sacct prints them the same
way): MaxRSS, NTasks and TRESUsageInTot are only on the STEP lines (``ID.batch``,
``ID.extern``, ``ID.0``); the allocation line has AllocCPUS, AllocTRES, ReqMem, TimelimitRaw
and TotalCPU (the sum of its steps). ``sacct -X`` hides the steps, so it is not used here.
Ask once a job has ended and its sacct row is final: on 22.05 a job's row lags squeue by up
to a second (``PENDING`` named ``allocation``), and a running job has no final figures.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .commands import check_job_ids, command_path
from .states import normalize_state

log = logging.getLogger(__name__)

# sacct --format for usage (every name exists on 22.05, 24.11 and 26.05: ``sacct
# --helpformat``, man sacct). Raw forms where they exist: ElapsedRaw is seconds,
# TimelimitRaw minutes (or UNLIMITED / Partition_Limit). No free-text field, so no "|"
# can appear inside a value.
USAGE_FIELDS: tuple[str, ...] = (
    "JobID", "State", "ExitCode", "ElapsedRaw", "TotalCPU", "AllocCPUS", "NNodes", "ReqMem",
    "AllocTRES", "TimelimitRaw", "NodeList", "NTasks", "MaxRSS", "TRESUsageInTot",
)  # fmt: skip
# sstat has no TotalCPU and no State: CPU time and current RSS come from TRESUsageInTot
# (cpu=, mem=: the sum over the step's tasks of their last sample), disk I/O from the fs/disk
# entries of TRESUsageInTot (read) and TRESUsageOutTot (written).
SSTAT_FIELDS: tuple[str, ...] = (
    "JobID", "NTasks", "Nodelist", "MaxRSS", "TRESUsageInTot", "TRESUsageOutTot",
)  # fmt: skip

# States whose TotalCPU under-counts: the steps were killed, and TotalCPU only counts what
# the step's processes reported before that ("does not include CPU time of child
# processes", man sacct); a killed step never reports its last interval.
UNDERCOUNTING_STATES: frozenset[str] = frozenset(
    {"TIMEOUT", "CANCELLED", "PREEMPTED", "NODE_FAIL", "DEADLINE"}
)

_UNITS = "KMGTPE"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]?)$", re.I)
_REQ_MEM = re.compile(r"^(\d+(?:\.\d+)?[KMGTPE]?)([nc]?)$")
_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.(\d+))?$")
_NO_VALUE = frozenset({"", "N/A", "NONE", "UNKNOWN", "INVALID", "(NULL)"})
_NO_LIMIT = frozenset({"UNLIMITED", "PARTITION_LIMIT", "INFINITE"})


# --------------------------------------------------------------------------- sizes, durations


def parse_size(text: str | None, *, unit: str = "") -> int | None:
    """A size as Slurm prints it -> bytes. ``300M`` -> 314572800, ``1.50G``, ``307200K``.

    Slurm's units are binary (K = 1024). A number without a suffix is in ``unit`` (``""`` =
    bytes, as in TRESUsageInTot; ``"K"`` for MaxRSS; ``"M"`` for ReqMem and AllocTRES mem).
    Empty, ``N/A``, ``NONE`` -> None. Raises ValueError for anything else."""
    value = (text or "").strip()
    if value.upper() in _NO_VALUE:
        return None
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"not a Slurm size: {value!r}")
    suffix = (m[2] or unit).upper()
    power = _UNITS.index(suffix) + 1 if suffix else 0
    return int(round(float(m[1]) * 1024**power))


_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\Z")


def time_limit_seconds(text: str | None) -> float | None:
    """A ``--time`` value (Slurm's syntax) in seconds: ``M``, ``M:S``, ``H:M:S``, ``D-H``,
    ``D-H:M``, ``D-H:M:S``. None for no value, ``UNLIMITED``/``INFINITE``, or a form Slurm
    would refuse (nothing to multiply)."""
    value = (text or "").strip()
    m = _TIME.match(value)
    if not m:
        return None
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if c is not None:  # H:M:S
        return int(a) * 3600 + int(b) * 60 + int(c)
    if b is not None:  # M:S
        return int(a) * 60 + int(b)
    return int(a) * 60.0  # M


def parse_duration(text: str | None) -> float | None:
    """A duration as Slurm prints it -> seconds: ``[D-]HH:MM:SS``, ``MM:SS.mmm`` (TotalCPU
    below an hour), ``00:MM:SS``. ``UNLIMITED``, ``Partition_Limit``, empty -> None (no
    number to compare with). Raises ValueError for anything else (a bare number is
    ambiguous: minutes for --time, seconds for ElapsedRaw; read those yourself)."""
    value = (text or "").strip()
    if value.upper() in _NO_VALUE or value.upper() in _NO_LIMIT:
        return None
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a Slurm duration: {value!r}")
    days, hours, minutes, seconds, frac = m.groups()
    total = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float("0." + frac) if frac else 0.0)


def parse_tres(text: str | None) -> dict[str, str]:
    """``cpu=00:01:02,mem=300M,fs/disk=2332`` -> ``{"cpu": "00:01:02", ...}`` (values raw)."""
    out: dict[str, str] = {}
    for item in (text or "").strip().split(","):
        name, eq, value = item.partition("=")
        if eq and name.strip():
            out[name.strip()] = value.strip()
    return out


def format_size(n: float | None) -> str:
    """Bytes -> ``"300.0 MiB"`` for messages (``"?"`` when unknown)."""
    if n is None:
        return "?"
    value, unit = float(n), "B"
    for u in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, u
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


# --------------------------------------------------------------------------- sacct


@dataclass(frozen=True)
class Usage:
    """What one finished job used, from its sacct allocation line and step lines.

    Efficiencies are fractions (0.42 = 42 %), None where Slurm cannot say (nothing ran, no
    time limit, no memory allocation, or the site gathers no accounting: ``gathered``).
    ``max_rss_bytes`` is the largest step's memory (seff's "Memory Utilized"), ``undercounted``
    says TotalCPU is too low because the steps were killed (TIMEOUT, CANCELLED, ...).
    ``exit_code``/``signal`` are sacct's ExitCode, which SUBTRACTS 128 from an exit status of
    128 or more (src/sacct/print.c; measured: a shell's 139 prints as ``11:0``, ``exit 137``
    as ``9:0``): prefer the job wrapper's own exit code when there is one."""

    job_id: str
    state: str
    cpu_seconds: float | None
    max_rss_bytes: int | None
    cpu_efficiency: float | None
    mem_efficiency: float | None
    time_efficiency: float | None
    core_hours: float | None
    alloc_cpus: int | None
    alloc_mem_bytes: int | None
    elapsed_seconds: int | None
    timelimit_seconds: int | None
    undercounted: bool = False
    gathered: bool = True
    exit_code: int | None = None
    signal: int | None = None
    nodes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the shape stored in the registry and shown by --json)."""
        return asdict(self)


@dataclass
class _Job:
    row: dict[str, str]
    steps: list[dict[str, str]] = field(default_factory=list)
    broken: bool = False


def sacct_usage_argv(job_ids: Iterable[str], *, bin_dir: str | None = None) -> list[str]:
    """ONE sacct call for many jobs, with their step lines (no ``-X``), ``|``-separated, no
    header, USAGE_FIELDS order. No ``--duplicates``: for a requeued job sacct then prints the
    last instance only, the one whose usage counts. Array tasks may be given as ``44_7``.
    Run it through ``commands.scrub_env`` like every scheduler command."""
    return [
        command_path("sacct", bin_dir), "--parsable2", "--noheader",
        "--format=" + ",".join(USAGE_FIELDS), "--jobs=" + ",".join(check_job_ids(job_ids)),
    ]  # fmt: skip


def _fields(line: str, names: tuple[str, ...]) -> dict[str, str]:
    parts = line.split("|")
    if len(parts) != len(names):
        raise ValueError(f"expected {len(names)} fields, got {len(parts)}")
    return dict(zip(names, (p.strip() for p in parts), strict=True))


def _problem(problems: list[str] | None, source: str, line: str, exc: Exception) -> None:
    message = f"{source}: skipped line {line!r}: {exc}"
    log.warning("%s", message)
    if problems is not None:
        problems.append(message)


def parse_usage(text: str, problems: list[str] | None = None) -> dict[str, Usage]:
    """``sacct_usage_argv()`` output -> one Usage per job id (``"123"``, ``"44_7"``).

    A line that does not parse is reported in ``problems`` and skipped; if it was a step
    line, that job's memory figures become None (its largest step may be the lost one)."""
    jobs: dict[str, _Job] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        head = line.split("|", 1)[0].strip()
        job_id, dot, _step = head.partition(".")
        try:
            row = _fields(line, USAGE_FIELDS)
            if not re.fullmatch(r"\d+(_\d+)?(\.[\w.-]+)?", head):
                raise ValueError(f"bad job id {head!r}")
            if dot:
                _step_memory(row)  # validate now: a bad size must not pass silently
        except ValueError as exc:
            _problem(problems, "sacct usage", line, exc)
            if dot and job_id in jobs:
                jobs[job_id].broken = True
            continue
        if not dot:
            jobs[job_id] = _Job(row)  # a later instance (--duplicates) replaces the earlier
        elif job_id in jobs:
            jobs[job_id].steps.append(row)
    out: dict[str, Usage] = {}
    for job_id, job in jobs.items():
        try:
            out[job_id] = _usage(job_id, job)
        except ValueError as exc:
            _problem(problems, "sacct usage", "|".join(job.row.values()), exc)
    return out


def _step_memory(step: Mapping[str, str]) -> int | None:
    """A step's memory peak as seff takes it: TRESUsageInTot mem (the sum over its tasks),
    MaxRSS x NTasks when that is missing; never below MaxRSS (one task's own peak)."""
    max_rss = parse_size(step["MaxRSS"], unit="K")
    total = parse_size(parse_tres(step["TRESUsageInTot"]).get("mem"))
    if total is None and max_rss is not None:
        total = max_rss * max(int(step["NTasks"] or 1), 1)
    if total is None:
        return None
    return max(total, max_rss or 0)


def _alloc_mem(row: Mapping[str, str], cpus: int | None) -> int | None:
    # AllocTRES mem= is what the job got, for the whole job. ReqMem is the request: a job
    # total since 21.08 (plain "4000M"); before that "100Mc" (per CPU) or "4Gn" (per node).
    got = parse_size(parse_tres(row["AllocTRES"]).get("mem"), unit="M")
    if got:
        return got
    m = _REQ_MEM.match(row["ReqMem"])
    if not m:
        return None
    size = parse_size(m[1], unit="M")
    if size is None or size == 0:
        return None
    if m[2] == "c":
        return size * cpus if cpus else None
    if m[2] == "n":
        return size * max(int(row["NNodes"] or 1), 1)
    return size


def _exit(text: str) -> tuple[int | None, int | None]:
    code, sep, sig = text.partition(":")
    if not sep or not code.isdigit() or not sig.isdigit():
        return None, None
    return int(code), int(sig)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return num / den


def _usage(job_id: str, job: _Job) -> Usage:
    row = job.row
    state = row["State"]
    base = normalize_state(state)[0]
    elapsed = int(row["ElapsedRaw"]) if row["ElapsedRaw"] else None
    cpus = int(row["AllocCPUS"]) if row["AllocCPUS"] else None
    limit_min = row["TimelimitRaw"]
    limit = int(limit_min) * 60 if limit_min.isdigit() else None
    exit_code, signal = _exit(row["ExitCode"])
    # TotalCPU comes from the tasks' rusage when they end, memory from the gatherer's
    # samples. A job shorter than one sample (`true`) has TotalCPU but no MaxRSS and only
    # "energy=0" in TRESUsageInTot (measured); under jobacct_gather/none no step reports
    # anything and TotalCPU stays 0, which is no measurement.
    total_cpu = parse_duration(row["TotalCPU"]) or 0.0
    sampled = any("cpu" in parse_tres(s["TRESUsageInTot"]) for s in job.steps)
    cpu = total_cpu if total_cpu > 0 or sampled else None
    peaks = [m for m in (_step_memory(s) for s in job.steps) if m is not None]
    peak = max(peaks) if peaks and not job.broken else None
    gathered = cpu is not None or bool(peaks)
    alloc_mem = _alloc_mem(row, cpus)
    core_seconds = elapsed * cpus if elapsed is not None and cpus is not None else None
    return Usage(
        job_id=job_id, state=state, cpu_seconds=cpu, max_rss_bytes=peak,
        cpu_efficiency=_ratio(cpu, core_seconds), mem_efficiency=_ratio(peak, alloc_mem),
        time_efficiency=_ratio(elapsed, limit),
        core_hours=core_seconds / 3600 if core_seconds is not None else None,
        alloc_cpus=cpus, alloc_mem_bytes=alloc_mem, elapsed_seconds=elapsed,
        timelimit_seconds=limit,
        undercounted=base in UNDERCOUNTING_STATES or signal in (9, 15),
        gathered=gathered, exit_code=exit_code, signal=signal, nodes=row["NodeList"] or None,
    )  # fmt: skip


# --------------------------------------------------------------------------- judgement


@dataclass(frozen=True)
class Thresholds:
    """When ``efficiency_warnings`` speaks up (fractions). ``min_elapsed_seconds`` keeps
    quiet about jobs too short for their figures to mean much (0 = always judge)."""

    min_cpu_efficiency: float = 0.5
    min_mem_efficiency: float = 0.3
    max_mem_efficiency: float = 0.9
    min_elapsed_seconds: float = 0.0


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def efficiency_warnings(usage: Usage, thresholds: Thresholds | None = None) -> list[str]:
    """Plain-words warnings for one finished job (empty when all is well or Slurm could not
    measure). Each names the figure, the threshold and what to change."""
    t = thresholds or Thresholds()
    if not usage.gathered or (usage.elapsed_seconds or 0) < t.min_elapsed_seconds:
        return []
    out: list[str] = []
    cpu_eff = usage.cpu_efficiency
    if cpu_eff is not None and cpu_eff < t.min_cpu_efficiency and usage.cpu_seconds is not None:
        busy = usage.cpu_seconds / usage.elapsed_seconds if usage.elapsed_seconds else 0.0
        text = (f"CPU efficiency {_pct(cpu_eff)} (below {_pct(t.min_cpu_efficiency)}): "
                f"on average {busy:.1f} of {usage.alloc_cpus} allocated CPUs were busy; ask "
                "for fewer CPUs or check that the program really runs in parallel")  # fmt: skip
        if usage.undercounted:
            text += (f" (TotalCPU under-counts for a {normalize_state(usage.state)[0]} job: "
                     "the killed steps' last CPU time is missing)")  # fmt: skip
        out.append(text)
    mem_eff = usage.mem_efficiency
    if mem_eff is not None and mem_eff > t.max_mem_efficiency:
        out.append(f"memory peak {format_size(usage.max_rss_bytes)} is {_pct(mem_eff)} of "
                   f"the {format_size(usage.alloc_mem_bytes)} limit (above "
                   f"{_pct(t.max_mem_efficiency)}): close to being killed for memory; ask "
                   "for more memory")  # fmt: skip
    elif mem_eff is not None and mem_eff < t.min_mem_efficiency:
        suggest = (usage.max_rss_bytes or 0) * 1.25
        out.append(f"memory peak {format_size(usage.max_rss_bytes)} is only {_pct(mem_eff)} "
                   f"of the {format_size(usage.alloc_mem_bytes)} requested (below "
                   f"{_pct(t.min_mem_efficiency)}): about {format_size(suggest)} would do "
                   "(peak + 25%)")  # fmt: skip
    return out


def looks_out_of_memory(
    usage: Usage | None, state: str | None, signal: int | None, *, near: float = 0.9
) -> bool:
    """True when the job was killed for memory: OUT_OF_MEMORY (cgroup OOM), or FAILED /
    signal 9 with the memory peak at the limit (``near`` of it or more). Without cgroups
    Slurm's OverMemoryKill (JobAcctGatherParams) kills the job and reports FAILED 0:9, not
    OUT_OF_MEMORY (measured on the lab); a plain SIGKILL far from the limit is not OOM."""
    base = normalize_state(state or (usage.state if usage else ""))[0]
    if base == "OUT_OF_MEMORY":
        return True
    if usage is None or usage.mem_efficiency is None:
        return False
    sig = signal if signal is not None else usage.signal
    # 137 = 128 + 9: the job's shell survived and reported its child's SIGKILL.
    killed = sig == 9 or usage.exit_code == 137
    return killed and base in ("FAILED", "CANCELLED", "") and usage.mem_efficiency >= near


# --------------------------------------------------------------------------- sstat


@dataclass(frozen=True)
class LiveUsage:
    """What a running job uses now, summed over its running steps (``steps``), sampled by
    the caller's clock at ``sampled_at`` (epoch seconds).

    ``rss_bytes`` is the current resident memory (the tasks' last samples), ``max_rss_bytes``
    the largest step's peak so far, ``cpu_seconds`` the CPU time used since the steps began,
    disk figures the bytes read/written. ``gathered`` is False when sstat printed the rows
    with every usage field empty: the site runs ``jobacct_gather/none`` (then every number
    here is None), or the job is younger than one JobAcctGatherFrequency interval."""

    job_id: str
    steps: tuple[str, ...]
    ntasks: int
    rss_bytes: int | None
    max_rss_bytes: int | None
    cpu_seconds: float | None
    disk_read_bytes: int | None
    disk_write_bytes: int | None
    sampled_at: float
    gathered: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``tasks top --json``)."""
        d = asdict(self)
        d["steps"] = list(self.steps)
        return d


def sstat_argv(job_ids: Iterable[str], *, bin_dir: str | None = None) -> list[str]:
    """sstat for every running step of these jobs, ``|``-separated, no header.

    ``--allsteps`` with the job ids also lists the special steps (``ID.batch``, ``ID.extern``).
    Without it sstat only looks at the first normal step (``ID.0``), so a batch script that
    never calls srun shows nothing at all. An array task must be given by its raw job id
    (squeue JobID / %A): sstat prints raw ids, and the rows are keyed by what it prints."""
    ids = check_job_ids(job_ids)
    return [
        command_path("sstat", bin_dir), "--noheader", "--parsable2", "--allsteps",
        "--format=" + ",".join(SSTAT_FIELDS), "--jobs=" + ",".join(ids),
    ]  # fmt: skip


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def parse_sstat(
    text: str, *, sampled_at: float, problems: list[str] | None = None
) -> dict[str, LiveUsage]:
    """``sstat_argv()`` output -> one LiveUsage per job id. A step printed twice is counted
    once (the last row); a bad line is reported in ``problems`` and skipped."""
    steps: dict[str, dict[str, dict[str, str]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = _fields(line, SSTAT_FIELDS)
            job_id, dot, step = row["JobID"].partition(".")
            if not re.fullmatch(r"\d+(_\d+)?", job_id) or not dot or not step:
                raise ValueError(f"bad step id {row['JobID']!r}")
            _live_numbers(row)
        except ValueError as exc:
            _problem(problems, "sstat", line, exc)
            continue
        steps.setdefault(job_id, {})[step] = row
    out: dict[str, LiveUsage] = {}
    for job_id, rows in steps.items():
        nums = [_live_numbers(r) for r in rows.values()]
        gathered = any(any(v is not None for v in n) for n in nums)
        out[job_id] = LiveUsage(
            job_id=job_id, steps=tuple(rows), sampled_at=float(sampled_at), gathered=gathered,
            ntasks=sum(int(r["NTasks"] or 0) for r in rows.values()),
            rss_bytes=_int(_sum(n[0] for n in nums)),
            max_rss_bytes=max((n[1] for n in nums if n[1] is not None), default=None),
            cpu_seconds=_sum(n[2] for n in nums), disk_read_bytes=_int(_sum(n[3] for n in nums)),
            disk_write_bytes=_int(_sum(n[4] for n in nums)),
        )  # fmt: skip
    return out


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _live_numbers(
    row: Mapping[str, str],
) -> tuple[int | None, int | None, float | None, int | None, int | None]:
    """(current rss, peak, cpu seconds, disk read, disk written) of one sstat row."""
    tin, tout = parse_tres(row["TRESUsageInTot"]), parse_tres(row["TRESUsageOutTot"])
    rss = parse_size(tin.get("mem"))
    max_rss = parse_size(row["MaxRSS"], unit="K")
    peak = max(rss or 0, max_rss or 0) if rss is not None or max_rss is not None else None
    return (rss, peak, parse_duration(tin.get("cpu")), parse_size(tin.get("fs/disk")),
            parse_size(tout.get("fs/disk")))  # fmt: skip


def live_cpu_efficiency(
    live: LiveUsage, elapsed_seconds: float | None, alloc_cpus: int | None
) -> float | None:
    """CPU efficiency since the job started: cpu_seconds / (elapsed x allocated CPUs)."""
    if live.cpu_seconds is None or not elapsed_seconds or not alloc_cpus:
        return None
    return live.cpu_seconds / (elapsed_seconds * alloc_cpus)


def accounting_gathers_nothing(live: Mapping[str, LiveUsage]) -> bool:
    """True when sstat answered for running jobs but measured nothing for any of them: the
    signature of ``JobAcctGatherType=jobacct_gather/none`` (then sacct's MaxRSS and
    TRESUsageInTot stay empty and TotalCPU 0 too). ``parse_gather_type`` on ``scontrol show
    config`` output says it for certain."""
    return bool(live) and not any(u.gathered for u in live.values())


_NOT_RUNNING = re.compile(r"No steps running for job|not found running|couldn't get steps", re.I)


def sstat_not_running(stderr: str) -> bool:
    """True when sstat's complaint only means the job has no running step (it ended, or has
    not started): ``sstat: error: No steps running for job 465`` (measured; exit status 0).
    Such a job is simply absent from ``parse_sstat``'s result."""
    return bool(_NOT_RUNNING.search(stderr))


def parse_gather_type(config_text: str) -> str | None:
    """``JobAcctGatherType = jobacct_gather/linux`` out of ``scontrol show config``."""
    m = re.search(r"^JobAcctGatherType\s*=\s*(\S+)", config_text, re.M)
    return m[1] if m else None
