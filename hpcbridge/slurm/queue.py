"""Why a pending job waits, where it stands, and when Slurm expects to start it. Pure.

* ``REASONS`` / ``explain_reason``: every reason code Slurm 22.05, 24.11 and 26.05 print
  (``job_state_reason_string`` in src/common/slurm_protocol_defs.c (22.05) and
  src/common/job_state_reason.c (24.11+), plus the man squeue JOB REASON CODES list), in
  plain words with what the user can do.
* ``pending_queue_argv`` / ``parse_pending`` / ``pending_positions``: ONE squeue over every
  pending job of the cluster gives each of our jobs its place in its partition's line and
  Slurm's estimated start (``StartTime`` of a pending job is the backfill estimate).
* ``squeue_start_argv`` / ``parse_start``: the same rows for given job ids (``squeue --start``).

squeue prints a job's ``state_desc`` instead of its reason code when there is one
(``_print_job_reason`` in src/squeue/print.c): ``ReqNodeNotAvail, UnavailableNodes:node3``,
``job requeued in held state``, ``RaisedSignal:9(Killed)``. ``explain_reason`` reads those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from types import MappingProxyType

from ..errors import UsageError
from .commands import check_job_ids, command_path
from .parse import parse_slurm_time
from .states import normalize_reason


@dataclass(frozen=True)
class Reason:
    """One pending (or end) reason in plain words. ``blocking``: the job will not start until
    someone changes something (the user or an administrator), as opposed to waiting its turn.
    ``known`` is False for a code this table does not have (then nothing is invented).
    ``detail`` is what Slurm printed after the code (``UnavailableNodes:node3``)."""

    code: str
    explanation: str
    action: str
    blocking: bool = False
    known: bool = True
    detail: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "explanation": self.explanation, "action": self.action,
                "blocking": self.blocking, "known": self.known, "detail": self.detail}  # fmt: skip


_WAIT = "Nothing to do: it starts when its turn comes."
_ADMIN = "Ask the cluster's administrators."
_FIX = ("Change the request (or ask the administrators to change the limit): as it is, it "
        "will not start.")

# code: (explanation, action, blocking)
_PLAIN: dict[str, tuple[str, str, bool]] = {
    "None": ("No reason set yet: the scheduler has not looked at the job since it was submitted.",
        "Wait a scheduling cycle.", False),
    "WaitingForScheduling": ("No reason set yet: the scheduler has not decided about the job.",
        "Wait a scheduling cycle.", False),
    "Prolog": ("The job's PrologSlurmctld program is still running.",
        "Wait; if it lasts, " + _ADMIN.lower(), False),
    "Priority": ("Jobs with a higher priority are waiting for the same partition (or reservation).",
        _WAIT + " A shorter --time can let backfill start it earlier.", False),
    "Dependency": ("The job waits for the jobs it depends on (--dependency) to finish.",
        "Wait for those jobs.", False),
    "DependencyNeverSatisfied": (
        "The job depends on a job that ended in a way that can never satisfy the dependency (e.g. "
        ""         "afterok on a job that failed).",
        "Cancel it and resubmit, or remove the dependency (scontrol update job=ID "
        "dependency=).", True),
    "Resources": ("The resources the job asks for are in use by other jobs.",
        _WAIT + " It is next in line; the estimated start says when.", False),
    "PartitionNodeLimit": ("The job asks for more (or fewer) nodes than the partition allows.",
        "Ask for a node count within the partition's limits, or use another partition.", True),
    "PartitionTimeLimit": ("The job's time limit is longer than the partition's MaxTime.",
        "Lower --time to the partition's limit (sinfo -o '%P %l'), or use another "
        "partition.", True),
    "PartitionDown": ("The partition is down.",
        "Wait until it is up again, or use another partition.", True),
    "PartitionInactive": ("The partition is inactive: it starts no jobs.",
        "Wait until it is up again, or use another partition.", True),
    "PartitionConfig": ("The request does not fit the partition's configuration.",
        "Check the partition's limits (scontrol show partition), or use another partition.", True),
    "JobHeldAdmin": ("An administrator holds the job.",
        "Ask the administrators to release it.", True),
    "JobHeldUser": ("The job is held by its user (sbatch --hold, scontrol hold).",
        "Release it: scontrol release ID.", True),
    "job requeued in held state": ("The job was requeued and held (scontrol requeuehold).",
        "Release it: scontrol release ID.", True),
    "launch failed requeued held": (
        "Slurm could not launch the job on its node (a prolog or node failure) and requeued "
        "it held.",
        "hpcbridge counts this as a node failure; otherwise release it once the node is "
        "fixed.", True),
    "launch failure limit exceeded requeued held": (
        "Slurm failed to launch the job too many times and requeued it held.",
        "Find out why launching fails on its nodes, then release it.", True),
    "job requeued in special exit state": (
        "The job was requeued in the SPECIAL_EXIT state (scontrol requeuehold State=SpecialExit).",
        "Release it (scontrol release ID) or cancel it.", True),
    "JobHoldMaxRequeue": ("The job was requeued too often (MaxBatchRequeue) and is held.",
        "Find out why it keeps failing to launch, then release it.", True),
    "BeginTime": (
        "The job's earliest start time has not been reached (--begin, or the short wait of a "
        "job Slurm requeued).",
        "Wait: it becomes eligible at that time.", False),
    "Licenses": ("The licenses the job asks for (--licenses) are in use.",
        "Wait for licenses to free up.", False),
    "AssociationJobLimit": (
        "The job's association (account and user) runs its maximum number of jobs.",
        "Wait for your other jobs to finish.", False),
    "AssociationResourceLimit": (
        "The job's association (account and user) has reached a resource limit.",
        "Wait for your other jobs to finish.", False),
    "AssociationTimeLimit": ("The job's association (account and user) has reached its time limit.",
        _ADMIN, True),
    "AccountingPolicy": (
        "A limit of the site's accounting policy holds the job (no more specific reason matched).",
        "Wait for your other jobs to finish, or " + _ADMIN.lower(), False),
    "Reservation": ("The job waits for its advanced reservation to become available.",
        "Wait for the reservation to start.", False),
    "ReservationDeleted": ("The reservation the job was meant to use was deleted.",
        "Resubmit without --reservation, or with another one.", True),
    "ReservationInvalid": ("The job's reservation is not valid for it.",
        "Resubmit without --reservation, or with another one.", True),
    "ReqNodeNotAvail": (
        "A node the job needs is not available now (down, drained, reserved for maintenance or "
        "for"         " other jobs).",
        "Wait for the node to return, or stop asking for it (--nodelist, --constraint).", False),
    "NodeDown": ("A node the job needs is down.", "Wait, or ask for other nodes.", False),
    "FrontEndDown": ("No front-end node is available to run the job.", _ADMIN, True),
    "SchedDefer": (
        "Immediate scheduling is deferred on this cluster (SchedulerParameters=defer), so "
        "the immediate request could not be served.",
        "Submit without --immediate.", False),
    "BadConstraints": ("No node can satisfy the job's constraints (features, GRES, node list).",
        "Fix the request: node features are shown by sinfo -o '%N %f'.", True),
    "Constraints": ("The job's constraints cannot be satisfied at the moment.",
        "Wait, or relax the constraints.", False),
    "MaxMemPerLimit": (
        "The memory per CPU or per node the job asks for exceeds MaxMemPerCPU/MaxMemPerNode.",
        "Ask for less memory per CPU (or more CPUs), or use another partition.", True),
    "SystemFailure": ("Slurm, a file system or the network failed.", _ADMIN, True),
    "JobLaunchFailure": (
        "The job could not be launched (file system, program or node trouble); a job killed by "
        "a signal shows it too on Slurm 22.05.",
        "Read the job's output; resubmit once the cause is fixed.", True),
    "NonZeroExitCode": ("The job ended with a non-zero exit code.",
        "Read the job's error output.", True),
    "RaisedSignal": ("The job ended because a signal killed it.",
        "Read the job's error output; signal 9 often means memory.", True),
    "OutOfMemory": ("The job used more memory than it was allocated and was killed.",
        "Ask for more memory (--mem).", True),
    "TimeLimit": ("The job ran into its time limit.",
        "Ask for more time (--time), or checkpoint.", True),
    "DeadLine": ("The job's deadline (--deadline) passed or cannot be met.",
        "Resubmit with a later deadline or a shorter --time.", True),
    "InactiveLimit": (
        "The job reached the system's InactiveLimit (its srun/salloc stopped responding).",
        "Resubmit.", True),
    "InvalidAccount": ("The job's account is not valid.",
        "Use a valid --account (sacctmgr show assoc user=$USER).", True),
    "InvalidQOS": ("The job's QOS is not valid.",
        "Use a QOS your association allows (sacctmgr show assoc user=$USER format=qos).", True),
    "QOSNotAllowed": ("The job's QOS may not be used in this partition.",
        "Use another QOS or partition.", True),
    "AccountNotAllowed": ("The job's account may not use this partition.",
        "Use another account or partition.", True),
    "QOSUsageThreshold": ("The QOS's usage is above its UsageThreshold.",
        "Wait for the usage to decay, or use another QOS.", False),
    "QOSJobLimit": ("The job's QOS runs its maximum number of jobs.",
        "Wait for other jobs of the QOS to finish.", False),
    "QOSResourceLimit": ("The job's QOS has reached a resource limit.",
        "Wait for other jobs of the QOS to finish.", False),
    "QOSTimeLimit": ("The job's QOS has reached its time limit.", _ADMIN, True),
    "Cleaning": ("The job was requeued and is still cleaning up after its previous run.",
        "Wait.", False),
    "JobArrayTaskLimit": (
        "The job array already runs as many tasks as its limit allows (--array=...%N).",
        "Wait for its other tasks.", False),
    "BurstBufferResources": ("The burst buffer resources the job needs are in use.",
        "Wait.", False),
    "BurstBufferStageIn": ("The job's files are being staged in to the burst buffer.",
        "Wait.", False),
    "BurstBufferOperation": ("A burst buffer operation for the job failed.", _ADMIN, True),
    "PowerNotAvail": ("Not enough power is available to start the job (power management).",
        "Wait.", False),
    "PowerReserved": ("The power the job needs is reserved.", "Wait.", False),
    "MaxPoweredUpNodes": (
        "Starting the job would power up more nodes than the site allows at once.",
        "Wait.", False),
    "MpiPortsBusy": ("All reserved MPI ports (MpiParams=ports) are in use.", "Wait.", False),
    "FedJobLock": ("The federation's clusters are still agreeing on where the job runs.",
        "Wait.", False),
    "NvidiaImexChannels": ("The NVIDIA IMEX channels the job needs are used by other jobs.",
        "Wait.", False),
    "BlockMaxError": ("An IBM BlueGene block error (obsolete).", _ADMIN, True),
    "BlockFreeAction": ("An IBM BlueGene block is being freed (obsolete).", "Wait.", False),
}

# The limit codes (AssocGrp*, AssocMax*, QOSGrp*, QOSMax*, QOSMin*, Max*PerAccount/User) of
# 22.05, 24.11 and 26.05, spelled exactly as Slurm prints them (Cpu and CPU both occur).
_LIMIT_CODES = """
AssocGrpBB AssocGrpBBMinutes AssocGrpBBRunMinutes AssocGrpBilling AssocGrpBillingMinutes
AssocGrpBillingRunMinutes AssocGrpCPUMinutesLimit AssocGrpCPURunMinutesLimit AssocGrpCpuLimit
AssocGrpEnergy AssocGrpEnergyMinutes AssocGrpEnergyRunMinutes AssocGrpGRES AssocGrpGRESMinutes
AssocGrpGRESRunMinutes AssocGrpJobsLimit AssocGrpLicense AssocGrpLicenseMinutes
AssocGrpLicenseRunMinutes AssocGrpMemLimit AssocGrpMemMinutes AssocGrpMemRunMinutes
AssocGrpNodeLimit AssocGrpNodeMinutes AssocGrpNodeRunMinutes AssocGrpSubmitJobsLimit
AssocGrpUnknown AssocGrpUnknownMinutes AssocGrpUnknownRunMinutes AssocGrpWallLimit
AssocMaxBBMinutesPerJob AssocMaxBBPerJob AssocMaxBBPerNode AssocMaxBillingMinutesPerJob
AssocMaxBillingPerJob AssocMaxBillingPerNode AssocMaxCpuMinutesPerJobLimit
AssocMaxCpuPerJobLimit AssocMaxCpuPerNode AssocMaxEnergyMinutesPerJob AssocMaxEnergyPerJob
AssocMaxEnergyPerNode AssocMaxGRESMinutesPerJob AssocMaxGRESPerJob AssocMaxGRESPerNode
AssocMaxJobsLimit AssocMaxLicenseMinutesPerJob AssocMaxLicensePerJob AssocMaxMemMinutesPerJob
AssocMaxMemPerJob AssocMaxMemPerNode AssocMaxNodeMinutesPerJob AssocMaxNodePerJobLimit
AssocMaxSubmitJobLimit AssocMaxUnknownMinutesPerJob AssocMaxUnknownPerJob AssocMaxUnknownPerNode
AssocMaxWallDurationPerJobLimit MaxBBPerAccount MaxBBRunMinsPerAccount MaxBBRunMinsPerUser
MaxBillingPerAccount MaxBillingRunMinsPerAccount MaxBillingRunMinsPerUser MaxCpuPerAccount
MaxCpuRunMinsPerAccount MaxCpuRunMinsPerUser MaxEnergyPerAccount MaxEnergyRunMinsPerAccount
MaxEnergyRunMinsPerUser MaxGRESPerAccount MaxGRESRunMinsPerAccount MaxGRESRunMinsPerUser
MaxJobsPerAccount MaxLicensePerAccount MaxLicenseRunMinsPerAccount MaxLicenseRunMinsPerUser
MaxMemoryPerAccount MaxMemoryRunMinsPerAccount MaxMemoryRunMinsPerUser MaxNodePerAccount
MaxNodeRunMinsPerAccount MaxNodeRunMinsPerUser MaxSubmitJobsPerAccount MaxUnknownPerAccount
MaxUnknownRunMinsPerAccount MaxUnknownRunMinsPerUser QOSGrpBB QOSGrpBBMinutes QOSGrpBBRunMinutes
QOSGrpBilling QOSGrpBillingMinutes QOSGrpBillingRunMinutes QOSGrpCPUMinutesLimit
QOSGrpCPURunMinutesLimit QOSGrpCpuLimit QOSGrpEnergy QOSGrpEnergyMinutes QOSGrpEnergyRunMinutes
QOSGrpGRES QOSGrpGRESMinutes QOSGrpGRESRunMinutes QOSGrpJobsLimit QOSGrpLicense
QOSGrpLicenseMinutes QOSGrpLicenseRunMinutes QOSGrpMemLimit QOSGrpMemoryMinutes
QOSGrpMemoryRunMinutes QOSGrpNodeLimit QOSGrpNodeMinutes QOSGrpNodeRunMinutes
QOSGrpSubmitJobsLimit QOSGrpUnknown QOSGrpUnknownMinutes QOSGrpUnknownRunMinutes QOSGrpWallLimit
QOSMaxBBPerJob QOSMaxBBPerNode QOSMaxBBPerUser QOSMaxBillingMinutesPerJob QOSMaxBillingPerJob
QOSMaxBillingPerNode QOSMaxBillingPerUser QOSMaxCpuMinutesPerJobLimit QOSMaxCpuPerJobLimit
QOSMaxCpuPerNode QOSMaxCpuPerUserLimit QOSMaxEnergyMinutesPerJob QOSMaxEnergyPerJob
QOSMaxEnergyPerNode QOSMaxEnergyPerUser QOSMaxGRESMinutesPerJob QOSMaxGRESPerJob
QOSMaxGRESPerNode QOSMaxGRESPerUser QOSMaxJobsPerUserLimit QOSMaxLicenseMinutesPerJob
QOSMaxLicensePerJob QOSMaxLicensePerUser QOSMaxMemoryMinutesPerJob QOSMaxMemoryPerJob
QOSMaxMemoryPerNode QOSMaxMemoryPerUser QOSMaxNodeMinutesPerJob QOSMaxNodePerJobLimit
QOSMaxNodePerUserLimit QOSMaxSubmitJobPerUserLimit QOSMaxUnknownMinutesPerJob
QOSMaxUnknownPerJob QOSMaxUnknownPerNode QOSMaxUnknownPerUser QOSMaxWallDurationPerJobLimit
QOSMinBB QOSMinBilling QOSMinCpuNotSatisfied QOSMinEnergy QOSMinGRES QOSMinLicense QOSMinMemory
QOSMinNode QOSMinUnknown
""".split()

# Slurm builds these names from parts: who sets the limit, group (all jobs together) / max /
# min, the resource, whether it counts resource-minutes, and its scope.
_LIMIT = re.compile(
    r"^(?P<who>Assoc|QOS|)(?P<kind>Grp|Max|Min)"
    r"(?P<res>Cpu|CPU|Memory|Mem|Node|Energy|GRES|License|BB|Billing|Unknown|SubmitJobs?|Jobs|"
    r"WallDuration|Wall)(?P<mins>RunMinutes|RunMins|Minutes)?(?P<scope>PerJob|PerNode|PerUser|"
    r"PerAccount)?(?:Limit|NotSatisfied)?$"
)
# resource word (plural, as counted), and its stem in "X-minutes"
_RESOURCE = {
    "Cpu": ("CPUs", "CPU"), "CPU": ("CPUs", "CPU"), "Memory": ("memory", "memory"),
    "Mem": ("memory", "memory"), "Node": ("nodes", "node"), "Energy": ("energy", "energy"),
    "GRES": ("GRES (GPUs, ...)", "GRES"), "License": ("licenses", "license"),
    "BB": ("burst buffer space", "burst-buffer"), "Billing": ("billing units", "billing"),
    "Unknown": ("trackable resources (TRES)", "TRES"), "Wall": ("wall-clock time", ""),
    "WallDuration": ("wall-clock time", ""), "Jobs": ("running jobs", ""),
    "SubmitJob": ("submitted jobs", ""), "SubmitJobs": ("submitted jobs", ""),
}  # fmt: skip
_WHO = {"Assoc": "the job's association (account and user)", "QOS": "the job's QOS",
        "": "the job's QOS"}  # fmt: skip
_PER = {"PerUser": ("Your running jobs", "per user"),
        "PerAccount": ("The running jobs of your account", "per account")}  # fmt: skip


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _limit_reason(code: str) -> tuple[str, str, bool]:
    """(explanation, action, blocking) of a limit code, from the parts of its name."""
    m = _LIMIT.match(code)
    if not m:
        raise ValueError(f"not a limit code: {code}")
    who, mins, scope = _WHO[m["who"]], m["mins"], m["scope"] or ""
    what, stem = _RESOURCE[m["res"]]
    wait_mine = "Wait for your other jobs to finish."
    if mins == "Minutes":
        what = f"{stem}-minutes (resources x time limit)"
    elif mins:
        what = f"{stem}-minutes of running jobs (resources x remaining time)"
    if m["res"] in ("Jobs", "SubmitJob", "SubmitJobs") and scope in _PER:
        mine = {"PerUser": "You have", "PerAccount": "Your account has"}[scope]
        return f"{mine} the most {what} that {who} allows {_PER[scope][1]}.", wait_mine, False
    if m["res"] in ("Jobs", "SubmitJob", "SubmitJobs"):
        return f"{_cap(who)} already has its maximum number of {what}.", wait_mine, False
    if m["kind"] == "Min":
        return (f"The job asks for less than the minimum of {what} that {who} requires.",
                "Ask for more, or use another QOS.", True)  # fmt: skip
    if m["kind"] == "Grp" and mins == "Minutes":
        return (f"{_cap(who)} has used up its group budget of {what}.",
                "Wait for the usage to decay or the budget to be reset; " + _ADMIN.lower(),
                True)  # fmt: skip
    if m["kind"] == "Grp":
        return (f"The running jobs of {who} together use all the {what} its group limit allows.",
                "Wait for other jobs of the group to finish.", False)  # fmt: skip
    if scope in ("PerJob", "PerNode") or m["res"] == "WallDuration":
        per = "per node" if scope == "PerNode" else "for one job"
        return f"The job asks for more {what} than {who} allows {per}.", _FIX, True
    holder, per = _PER.get(scope, ("Your running jobs", "per user"))
    return f"{holder} already use all the {what} that {who} allows {per}.", wait_mine, False


def _build() -> Mapping[str, Reason]:
    table = {code: Reason(code, *entry) for code, entry in _PLAIN.items()}
    for code in _LIMIT_CODES:
        table[code] = Reason(code, *_limit_reason(code))
    return MappingProxyType(table)


REASONS: Mapping[str, Reason] = _build()
_BY_NORMAL = {normalize_reason(code): r for code, r in REASONS.items()}
# state_desc texts squeue prints instead of the code (src/slurmctld, 22.05 and 24.11)
_DESC = (
    (re.compile(r"^Nodes required for job are DOWN, DRAINED", re.I), "Resources"),
    (re.compile(r"^Job is at or exceeds (association|QOS)\b", re.I), "AccountingPolicy"),
    (re.compile(r"^uid \d+ not in group permitted to use this partition", re.I),
     "AccountNotAllowed"),
    (re.compile(r"^Reservation \S+ was deleted", re.I), "ReservationDeleted"),
    (re.compile(r"^Reservation \S+ is invalid|^Reservation \S+, which this job was running "
                r"under, has ended", re.I), "ReservationInvalid"),
)  # fmt: skip


def explain_reason(text: str | None) -> Reason:
    """The Reason for what squeue/scontrol printed: a code (``Priority``), the same in
    parentheses (``%R``: ``(Resources)``), scontrol's underscore form
    (``job_requeued_in_held_state``), or code plus detail (``ReqNodeNotAvail,
    UnavailableNodes:node[1-2]``, ``RaisedSignal:9(Killed)``). An unknown code gives a
    Reason with ``known=False`` that says so and points to man squeue."""
    raw = (text or "").strip()
    if raw.startswith("(") and raw.endswith(")"):
        raw = raw[1:-1].strip()
    if not raw:
        return REASONS["None"]
    hit = _BY_NORMAL.get(normalize_reason(raw))
    if hit is not None:
        return hit
    # "ReqNodeNotAvail, UnavailableNodes:node3", "RaisedSignal:9(Killed)": code, then detail
    m = re.match(r"^([A-Za-z_ ]+?)\s*(?:,|:)\s*(.*)$", raw)
    hit = _BY_NORMAL.get(normalize_reason(m[1])) if m else None
    if m and hit is not None:
        return Reason(hit.code, hit.explanation, hit.action, hit.blocking, True, m[2] or None)
    for pattern, code in _DESC:
        if pattern.search(raw):
            r = REASONS[code]
            return Reason(r.code, r.explanation, r.action, r.blocking, True, raw)
    return Reason(raw, f"Slurm gave the reason {raw!r}, which hpcbridge does not know.",
                  "See JOB REASON CODES in man squeue, or ask the administrators.",
                  blocking=False, known=False)  # fmt: skip


# --------------------------------------------------------------------------- the queue

# squeue -o fields: JobArrayID (%i, "44_7" with --array), JobID (%A, raw), Partition,
# PriorityLong (%Q), StartTime (%S: the backfill estimate for a pending job, N/A before one),
# SchedNodes (%Y, "(null)" before one), Reason (%r, last: it may hold ", " and ":", no "|").
# A -o format and not -O: with --start, squeue replaces a missing -o format with its own
# default and ignores -O (src/squeue/opts.c; measured on 22.05: the -O columns vanished).
PENDING_FIELDS: tuple[str, ...] = (
    "JobArrayID", "JobID", "Partition", "PriorityLong", "StartTime", "SchedNodes", "Reason",
)  # fmt: skip
_PENDING_FORMAT = "%i|%A|%P|%Q|%S|%Y|%r"


@dataclass(frozen=True)
class PendingJob:
    """One pending job (one array task) of ``pending_queue_argv``/``squeue_start_argv``."""

    job_id: str  # as hpcbridge knows jobs: 123, or 44_7 for an array task
    raw_id: str
    partition: str
    priority: int
    estimated_start: float | None  # epoch seconds; None while Slurm has no estimate
    sched_nodes: str | None
    reason: str | None


def pending_queue_argv(
    *, partitions: Iterable[str] | None = None, bin_dir: str | None = None
) -> list[str]:
    """Every pending job of the cluster (all users), one line per array task (``--array``),
    for ``pending_positions``. One call per cluster and cycle covers all queued tasks, and
    its StartTime column carries the estimated starts too (the same value --start shows).
    ``partitions`` (those of our queued tasks) keeps the output small on a big cluster."""
    argv = [command_path("squeue", bin_dir), "--noheader", "--array", "--states=PENDING",
            "--format=" + _PENDING_FORMAT]  # fmt: skip
    if partitions is not None:
        names = sorted({p for p in partitions if p})
        if not names or not all(re.fullmatch(r"[A-Za-z0-9_.-]+", p) for p in names):
            raise UsageError(f"invalid partition names {names!r}")
        argv.append("--partition=" + ",".join(names))
    return argv


def squeue_start_argv(job_ids: Iterable[str], *, bin_dir: str | None = None) -> list[str]:
    """``squeue --start`` for these jobs (pending only, earliest start first). Like any
    squeue with --jobs it exits 1 if the only id given has left the queue
    (``commands.squeue_missing_job_error``)."""
    ids = ",".join(check_job_ids(job_ids))
    return [command_path("squeue", bin_dir), "--start", "--noheader", "--array",
            "--format=" + _PENDING_FORMAT, "--jobs=" + ids]  # fmt: skip


def parse_pending(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None
) -> list[PendingJob]:
    """Rows of ``pending_queue_argv()`` / ``squeue_start_argv()`` output; a bad line is
    reported in ``problems`` and skipped."""
    out: list[PendingJob] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        try:
            if len(parts) < len(PENDING_FIELDS):
                raise ValueError(f"expected {len(PENDING_FIELDS)} fields, got {len(parts)}")
            job_id, raw_id, partition, prio, start, nodes = parts[:6]
            reason = "|".join(parts[6:]).strip().removesuffix("|")  # -O form: a "|" after each
            if not re.fullmatch(r"\d+(_(\d+|\[[0-9,%-]+\]))?", job_id):
                raise ValueError(f"bad job id {job_id!r}")
            sched = None if nodes.lower() in ("", "(null)", "n/a") else nodes
            out.append(PendingJob(job_id, raw_id, partition, int(prio), parse_slurm_time(start, tz),
                                  sched, reason or None))  # fmt: skip
        except ValueError as exc:
            if problems is not None:
                problems.append(f"squeue pending: skipped line {line!r}: {exc}")
    return out


def parse_start(
    text: str, tz: tzinfo | None = None, problems: list[str] | None = None
) -> dict[str, float | None]:
    """Estimated start per job id (epoch seconds; None for ``N/A``: no estimate yet)."""
    return {j.job_id: j.estimated_start for j in parse_pending(text, tz=tz, problems=problems)}


# A job with one of these does not compete for resources yet: it stands in no line.
_NOT_IN_LINE = frozenset(normalize_reason(c) for c in (
    "Dependency", "DependencyNeverSatisfied", "BeginTime", "JobHeldUser", "JobHeldAdmin",
    "job requeued in held state", "launch failed requeued held", "JobHoldMaxRequeue",
))  # fmt: skip


def _in_line(job: PendingJob) -> bool:
    return normalize_reason(job.reason or "") not in _NOT_IN_LINE


def pending_positions(
    rows: Iterable[PendingJob], our_job_ids: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """(position, of_total) of each of our pending jobs in its partition's line: 1 = next.

    The line holds the jobs that compete for resources, ordered as Slurm's scheduler orders
    them: higher priority first, then the lower job id. Jobs held or waiting for a
    dependency or a begin time are not in it (ours then get no position). A job pending in
    several partitions ("p1,p2") stands in each line and gets its best place."""
    ours = set(our_job_ids)
    lines: dict[str, list[PendingJob]] = {}
    for job in rows:
        if _in_line(job):
            for part in job.partition.split(","):
                lines.setdefault(part, []).append(job)
    out: dict[str, tuple[int, int]] = {}
    for jobs in lines.values():
        jobs.sort(key=lambda j: (-j.priority, int(j.raw_id) if j.raw_id.isdigit() else 0))
        for i, job in enumerate(jobs, 1):
            if job.job_id in ours and (job.job_id not in out or i < out[job.job_id][0]):
                out[job.job_id] = (i, len(jobs))
    return out
