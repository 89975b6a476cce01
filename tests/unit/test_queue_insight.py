"""hpcbridge.slurm.queue: reason codes, the pending queue and estimated starts.

The reason lists below are Slurm's own, read from its source at the tags the lab runs
(SchedMD/slurm); the queue captures come from the 22.05 lab (scripts/lab/capture-usage.sh,
scenario ``queue``): an exclusive job (504) holds all three nodes, then pending behind it:
505 -n1, 506 -n4, 507 --nice=1000, 508 --hold, 509 afterok:504, 510 an array 0-2, 511 in
partition high, 512 -n1, and 513 pinned to node3, which was drained.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hpcbridge.errors import UsageError
from hpcbridge.slurm.queue import (
    PENDING_FIELDS,
    REASONS,
    PendingJob,
    Reason,
    explain_reason,
    parse_pending,
    parse_start,
    pending_positions,
    pending_queue_argv,
    squeue_start_argv,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
LAB = DATA / "22.05"

# job_reason_string() of slurm-22-05-8-1 (src/common/slurm_protocol_defs.c)
REASONS_2205 = """
AccountNotAllowed AssocGrpBB AssocGrpBBMinutes AssocGrpBBRunMinutes AssocGrpCPUMinutesLimit
AssocGrpCPURunMinutesLimit AssocGrpCpuLimit AssocGrpEnergy AssocGrpEnergyMinutes
AssocGrpEnergyRunMinutes AssocGrpGRES AssocGrpGRESMinutes AssocGrpGRESRunMinutes
AssocGrpJobsLimit AssocGrpLicense AssocGrpLicenseMinutes AssocGrpLicenseRunMinutes
AssocGrpMemLimit AssocGrpMemMinutes AssocGrpMemRunMinutes AssocGrpNodeLimit AssocGrpNodeMinutes
AssocGrpNodeRunMinutes AssocGrpSubmitJobsLimit AssocGrpUnknown AssocGrpUnknownMinutes
AssocGrpUnknownRunMinutes AssocGrpWallLimit AssocMaxBBMinutesPerJob AssocMaxBBPerJob
AssocMaxBBPerNode AssocMaxCpuMinutesPerJobLimit AssocMaxCpuPerJobLimit AssocMaxCpuPerNode
AssocMaxEnergyMinutesPerJob AssocMaxEnergyPerJob AssocMaxEnergyPerNode AssocMaxGRESMinutesPerJob
AssocMaxGRESPerJob AssocMaxGRESPerNode AssocMaxJobsLimit AssocMaxLicenseMinutesPerJob
AssocMaxLicensePerJob AssocMaxMemMinutesPerJob AssocMaxMemPerJob AssocMaxMemPerNode
AssocMaxNodeMinutesPerJob AssocMaxNodePerJobLimit AssocMaxSubmitJobLimit
AssocMaxUnknownMinutesPerJob AssocMaxUnknownPerJob AssocMaxUnknownPerNode
AssocMaxWallDurationPerJobLimit AssociationJobLimit AssociationResourceLimit
AssociationTimeLimit BadConstraints BeginTime BlockFreeAction BlockMaxError BurstBufferOperation
BurstBufferResources BurstBufferStageIn Cleaning DeadLine Dependency DependencyNeverSatisfied
FrontEndDown InactiveLimit InvalidAccount InvalidQOS JobArrayTaskLimit JobHeldAdmin JobHeldUser
JobHoldMaxRequeue JobLaunchFailure Licenses MaxBBPerAccount MaxCpuPerAccount MaxEnergyPerAccount
MaxGRESPerAccount MaxJobsPerAccount MaxLicensePerAccount MaxMemoryPerAccount MaxNodePerAccount
MaxSubmitJobsPerAccount MaxUnknownPerAccount NodeDown NonZeroExitCode None PartitionDown
PartitionInactive PartitionNodeLimit PartitionTimeLimit PowerNotAvail PowerReserved Priority
Prolog QOSGrpBB QOSGrpBBMinutes QOSGrpBBRunMinutes QOSGrpCPUMinutesLimit
QOSGrpCPURunMinutesLimit QOSGrpCpuLimit QOSGrpEnergy QOSGrpEnergyMinutes QOSGrpEnergyRunMinutes
QOSGrpGRES QOSGrpGRESMinutes QOSGrpGRESRunMinutes QOSGrpJobsLimit QOSGrpLicense
QOSGrpLicenseMinutes QOSGrpLicenseRunMinutes QOSGrpMemLimit QOSGrpMemoryMinutes
QOSGrpMemoryRunMinutes QOSGrpNodeLimit QOSGrpNodeMinutes QOSGrpNodeRunMinutes
QOSGrpSubmitJobsLimit QOSGrpUnknown QOSGrpUnknownMinutes QOSGrpUnknownRunMinutes QOSGrpWallLimit
QOSJobLimit QOSMaxBBPerJob QOSMaxBBPerNode QOSMaxBBPerUser QOSMaxCpuMinutesPerJobLimit
QOSMaxCpuPerJobLimit QOSMaxCpuPerNode QOSMaxCpuPerUserLimit QOSMaxEnergyMinutesPerJob
QOSMaxEnergyPerJob QOSMaxEnergyPerNode QOSMaxEnergyPerUser QOSMaxGRESMinutesPerJob
QOSMaxGRESPerJob QOSMaxGRESPerNode QOSMaxGRESPerUser QOSMaxJobsPerUserLimit
QOSMaxLicenseMinutesPerJob QOSMaxLicensePerJob QOSMaxLicensePerUser QOSMaxMemoryMinutesPerJob
QOSMaxMemoryPerJob QOSMaxMemoryPerNode QOSMaxMemoryPerUser QOSMaxNodeMinutesPerJob
QOSMaxNodePerJobLimit QOSMaxNodePerUserLimit QOSMaxSubmitJobPerUserLimit
QOSMaxUnknownMinutesPerJob QOSMaxUnknownPerJob QOSMaxUnknownPerNode QOSMaxUnknownPerUser
QOSMaxWallDurationPerJobLimit QOSMinBB QOSMinCpuNotSatisfied QOSMinEnergy QOSMinGRES
QOSMinLicense QOSMinMemory QOSMinNode QOSMinUnknown QOSNotAllowed QOSResourceLimit QOSTimeLimit
QOSUsageThreshold ReqNodeNotAvail Reservation Resources SchedDefer SystemFailure TimeLimit
""".split()
# job_state_reason_string() of slurm-24-11-5-1 (src/common/job_state_reason.c)
REASONS_2411 = """
AccountNotAllowed AccountingPolicy AssocGrpBB AssocGrpBBMinutes AssocGrpBBRunMinutes
AssocGrpBilling AssocGrpBillingMinutes AssocGrpBillingRunMinutes AssocGrpCPUMinutesLimit
AssocGrpCPURunMinutesLimit AssocGrpCpuLimit AssocGrpEnergy AssocGrpEnergyMinutes
AssocGrpEnergyRunMinutes AssocGrpGRES AssocGrpGRESMinutes AssocGrpGRESRunMinutes
AssocGrpJobsLimit AssocGrpLicense AssocGrpLicenseMinutes AssocGrpLicenseRunMinutes
AssocGrpMemLimit AssocGrpMemMinutes AssocGrpMemRunMinutes AssocGrpNodeLimit AssocGrpNodeMinutes
AssocGrpNodeRunMinutes AssocGrpSubmitJobsLimit AssocGrpUnknown AssocGrpUnknownMinutes
AssocGrpUnknownRunMinutes AssocGrpWallLimit AssocMaxBBMinutesPerJob AssocMaxBBPerJob
AssocMaxBBPerNode AssocMaxBillingMinutesPerJob AssocMaxBillingPerJob AssocMaxBillingPerNode
AssocMaxCpuMinutesPerJobLimit AssocMaxCpuPerJobLimit AssocMaxCpuPerNode
AssocMaxEnergyMinutesPerJob AssocMaxEnergyPerJob AssocMaxEnergyPerNode AssocMaxGRESMinutesPerJob
AssocMaxGRESPerJob AssocMaxGRESPerNode AssocMaxJobsLimit AssocMaxLicenseMinutesPerJob
AssocMaxLicensePerJob AssocMaxMemMinutesPerJob AssocMaxMemPerJob AssocMaxMemPerNode
AssocMaxNodeMinutesPerJob AssocMaxNodePerJobLimit AssocMaxSubmitJobLimit
AssocMaxUnknownMinutesPerJob AssocMaxUnknownPerJob AssocMaxUnknownPerNode
AssocMaxWallDurationPerJobLimit AssociationJobLimit AssociationResourceLimit
AssociationTimeLimit BadConstraints BeginTime BurstBufferOperation BurstBufferResources
BurstBufferStageIn Cleaning Constraints DeadLine Dependency DependencyNeverSatisfied FedJobLock
FrontEndDown InactiveLimit InvalidAccount InvalidQOS JobArrayTaskLimit JobHeldAdmin JobHeldUser
JobHoldMaxRequeue JobLaunchFailure Licenses MaxBBPerAccount MaxBBRunMinsPerAccount
MaxBBRunMinsPerUser MaxBillingPerAccount MaxBillingRunMinsPerAccount MaxBillingRunMinsPerUser
MaxCpuPerAccount MaxCpuRunMinsPerAccount MaxCpuRunMinsPerUser MaxEnergyPerAccount
MaxEnergyRunMinsPerAccount MaxEnergyRunMinsPerUser MaxGRESPerAccount MaxGRESRunMinsPerAccount
MaxGRESRunMinsPerUser MaxJobsPerAccount MaxLicensePerAccount MaxLicenseRunMinsPerAccount
MaxLicenseRunMinsPerUser MaxMemPerLimit MaxMemoryPerAccount MaxMemoryRunMinsPerAccount
MaxMemoryRunMinsPerUser MaxNodePerAccount MaxNodeRunMinsPerAccount MaxNodeRunMinsPerUser
MaxPoweredUpNodes MaxSubmitJobsPerAccount MaxUnknownPerAccount MaxUnknownRunMinsPerAccount
MaxUnknownRunMinsPerUser MpiPortsBusy NodeDown NonZeroExitCode None OutOfMemory PartitionConfig
PartitionDown PartitionInactive PartitionNodeLimit PartitionTimeLimit Priority Prolog QOSGrpBB
QOSGrpBBMinutes QOSGrpBBRunMinutes QOSGrpBilling QOSGrpBillingMinutes QOSGrpBillingRunMinutes
QOSGrpCPUMinutesLimit QOSGrpCPURunMinutesLimit QOSGrpCpuLimit QOSGrpEnergy QOSGrpEnergyMinutes
QOSGrpEnergyRunMinutes QOSGrpGRES QOSGrpGRESMinutes QOSGrpGRESRunMinutes QOSGrpJobsLimit
QOSGrpLicense QOSGrpLicenseMinutes QOSGrpLicenseRunMinutes QOSGrpMemLimit QOSGrpMemoryMinutes
QOSGrpMemoryRunMinutes QOSGrpNodeLimit QOSGrpNodeMinutes QOSGrpNodeRunMinutes
QOSGrpSubmitJobsLimit QOSGrpUnknown QOSGrpUnknownMinutes QOSGrpUnknownRunMinutes QOSGrpWallLimit
QOSJobLimit QOSMaxBBPerJob QOSMaxBBPerNode QOSMaxBBPerUser QOSMaxBillingMinutesPerJob
QOSMaxBillingPerJob QOSMaxBillingPerNode QOSMaxBillingPerUser QOSMaxCpuMinutesPerJobLimit
QOSMaxCpuPerJobLimit QOSMaxCpuPerNode QOSMaxCpuPerUserLimit QOSMaxEnergyMinutesPerJob
QOSMaxEnergyPerJob QOSMaxEnergyPerNode QOSMaxEnergyPerUser QOSMaxGRESMinutesPerJob
QOSMaxGRESPerJob QOSMaxGRESPerNode QOSMaxGRESPerUser QOSMaxJobsPerUserLimit
QOSMaxLicenseMinutesPerJob QOSMaxLicensePerJob QOSMaxLicensePerUser QOSMaxMemoryMinutesPerJob
QOSMaxMemoryPerJob QOSMaxMemoryPerNode QOSMaxMemoryPerUser QOSMaxNodeMinutesPerJob
QOSMaxNodePerJobLimit QOSMaxNodePerUserLimit QOSMaxSubmitJobPerUserLimit
QOSMaxUnknownMinutesPerJob QOSMaxUnknownPerJob QOSMaxUnknownPerNode QOSMaxUnknownPerUser
QOSMaxWallDurationPerJobLimit QOSMinBB QOSMinBilling QOSMinCpuNotSatisfied QOSMinEnergy
QOSMinGRES QOSMinLicense QOSMinMemory QOSMinNode QOSMinUnknown QOSNotAllowed QOSResourceLimit
QOSTimeLimit QOSUsageThreshold RaisedSignal ReqNodeNotAvail Reservation ReservationDeleted
ReservationInvalid Resources SchedDefer SystemFailure TimeLimit
""".split()
# 26.05 (slurm-26-05-3-1) adds one code and drops FrontEndDown
REASONS_2605_NEW = ["NvidiaImexChannels"]
# man squeue, JOB REASON CODES (22.05 and 24.11 list the same 38 entries; four are families)
MAN_SQUEUE = """
AssocGrp*Limit AssociationJobLimit AssocMax*Limit AssociationResourceLimit AssociationTimeLimit
BadConstraints BeginTime Cleaning Dependency DependencyNeverSatisfied FrontEndDown InactiveLimit
InvalidAccount InvalidQOS JobHeldAdmin JobHeldUser JobLaunchFailure Licenses NodeDown
NonZeroExitCode PartitionDown PartitionInactive PartitionNodeLimit PartitionTimeLimit Priority
Prolog QOSGrp*Limit QOSJobLimit QOSMax*Limit QOSResourceLimit QOSTimeLimit QOSUsageThreshold
ReqNodeNotAvail Reservation Resources SystemFailure TimeLimit WaitingForScheduling
""".split()


def read(name: str) -> str:
    return (LAB / name).read_text()


def logged(name: str) -> str:
    for line in read("usage_commands.log").splitlines():
        file, _, cmd = line.partition("\t")
        if file == name:
            return cmd
    raise KeyError(name)


def at(hh: int, mm: int, ss: int) -> float:
    return datetime(2026, 12, 1, hh, mm, ss, tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------- reasons


@pytest.mark.parametrize("code", sorted(set(REASONS_2205) | set(REASONS_2411)
                                        | set(REASONS_2605_NEW)))  # fmt: skip
def test_every_reason_slurm_prints_is_explained(code: str) -> None:
    r = REASONS[code]
    assert r.code == code and r.known and r.detail is None
    assert r.explanation.endswith(".") and r.action.endswith(".")
    assert "  " not in r.explanation + r.action
    assert explain_reason(code) is r


@pytest.mark.parametrize("code", MAN_SQUEUE)
def test_every_code_of_man_squeue_is_explained(code: str) -> None:
    if "*" in code:  # a family: Slurm prints its members, every one of which is known
        members = [c for c in REASONS if c.startswith(code.split("*")[0])]
        assert len(members) >= 20, code
    else:
        assert REASONS[code].known


@pytest.mark.parametrize("code,words,blocking", [
    ("Priority", "higher priority", False),
    ("Resources", "in use by other jobs", False),
    ("Dependency", "depends on", False),
    ("DependencyNeverSatisfied", "can never satisfy", True),
    ("QOSMaxJobsPerUserLimit", "the most running jobs that the job's QOS allows per user",
     False),
    ("AssocGrpCPUMinutesLimit", "used up its group budget of CPU-minutes", True),
    ("AssocGrpCpuLimit", "together use all the CPUs its group limit allows", False),
    ("AssocMaxWallDurationPerJobLimit", "more wall-clock time than", True),
    ("QOSMaxMemoryPerNode", "more memory than the job's QOS allows per node", True),
    ("QOSMinGRES", "less than the minimum of GRES", True),
    ("MaxCpuRunMinsPerUser", "CPU-minutes of running jobs", False),
    ("ReqNodeNotAvail", "not available", False),
    ("BeginTime", "earliest start time", False),
    ("JobHeldUser", "held by its user", True),
    ("JobHeldAdmin", "administrator", True),
    ("launch failed requeued held", "could not launch", True),
    ("PartitionTimeLimit", "MaxTime", True),
])  # fmt: skip
def test_reason_words(code: str, words: str, blocking: bool) -> None:
    r = REASONS[code]
    assert words in r.explanation and r.blocking is blocking


def _column(path: Path, index: int) -> set[str]:
    return {ln.split("|")[index] for ln in path.read_text().splitlines() if ln.count("|") > index}


@pytest.mark.parametrize("version", ["22.05", "24.11", "26.05"])
def test_every_reason_in_the_captures_is_known(version: str) -> None:
    # squeue -O '...,State:|,Reason:|,...' (COMMANDS.md): the reason is the 7th column
    seen: set[str] = set()
    for path in (DATA / version).glob("squeue_*.txt"):
        if not path.name.startswith("squeue_o_"):
            seen |= _column(path, 6)
    assert {"Priority", "Resources", "Dependency", "BeginTime", "JobHeldUser"} <= seen
    unknown = [r for r in seen if not explain_reason(r).known]
    assert unknown == []


def test_what_squeue_prints_instead_of_a_code() -> None:
    rows = {r.job_id: r for r in parse_pending(read("queue_pending.txt"))}
    pinned = explain_reason(rows["513"].reason)
    assert (pinned.code, pinned.detail) == ("ReqNodeNotAvail", "UnavailableNodes:node3")
    # WAIT_RESOURCES with a state_desc: the nodes are drained or kept for a higher partition
    drained = explain_reason(rows["505"].reason)
    assert drained.code == "Resources" and drained.detail is not None
    assert drained.detail.startswith("Nodes required for job are DOWN, DRAINED")
    signal = explain_reason("RaisedSignal:9(Killed)")  # 24.11, kill -9 (squeue_failed_signal)
    assert (signal.code, signal.detail) == ("RaisedSignal", "9(Killed)")
    assert explain_reason("(Resources)") is REASONS["Resources"]  # squeue %R
    assert explain_reason("job_requeued_in_held_state").code == "job requeued in held state"
    assert explain_reason("ReqNodeNotAvail, Reserved for maintenance").detail == (
        "Reserved for maintenance")
    limit = explain_reason("Job is at or exceeds QOS normal's group max TRES(cpu) minutes of 60")
    assert limit.code == "AccountingPolicy" and (limit.detail or "").startswith("Job is at")
    assert explain_reason("Reservation maint was deleted").code == "ReservationDeleted"
    assert explain_reason("") is REASONS["None"] and explain_reason(None) is REASONS["None"]


def test_an_unknown_code_is_called_unknown() -> None:
    r = explain_reason("QOSGrpFrobnicationsLimit")
    assert not r.known and r.code == "QOSGrpFrobnicationsLimit"
    assert "does not know" in r.explanation and "man squeue" in r.action
    assert r.to_dict()["known"] is False


def test_reason_to_dict() -> None:
    d = explain_reason("ReqNodeNotAvail, UnavailableNodes:node3").to_dict()
    assert d == {"code": "ReqNodeNotAvail", "explanation": REASONS["ReqNodeNotAvail"].explanation,
                 "action": REASONS["ReqNodeNotAvail"].action, "blocking": False, "known": True,
                 "detail": "UnavailableNodes:node3"}  # fmt: skip


# --------------------------------------------------------------------------- the queue


def test_argv_builders_are_the_captured_commands() -> None:
    ids = ["505", "506", "507", "508", "509", "510_0", "510_1", "510_2", "511", "512", "513"]
    assert " ".join(squeue_start_argv(ids)) == logged("queue_start.txt")
    assert " ".join(pending_queue_argv()) == logged("queue_pending.txt")
    assert pending_queue_argv(bin_dir="/opt/slurm/bin")[0] == "/opt/slurm/bin/squeue"
    assert pending_queue_argv(partitions=["high", "debug", "high"])[-1] == (
        "--partition=debug,high")
    for bad in ([], ["a;b"], [""]):
        with pytest.raises(UsageError):
            pending_queue_argv(partitions=bad)
    assert len(PENDING_FIELDS) == 7
    with pytest.raises(UsageError):
        squeue_start_argv(["1 2"])


def test_parse_pending() -> None:
    rows = parse_pending(read("queue_pending.txt"), tz=UTC)
    assert len(rows) == 11 and {r.partition for r in rows} == {"debug", "high"}
    first = rows[0]
    assert first == PendingJob("505", "505", "debug", 4294901257, at(11, 26, 51), "node2",
                               first.reason)  # fmt: skip
    by_id = {r.job_id: r for r in rows}
    assert by_id["510_1"].raw_id == "510"  # --array: one row per task
    assert by_id["508"].priority == 0 and by_id["508"].estimated_start is None  # held
    assert by_id["509"].sched_nodes is None and by_id["509"].reason == "Dependency"


def test_estimated_starts_agree_between_start_and_the_pending_queue() -> None:
    starts = parse_start(read("queue_start.txt"), UTC)
    assert starts["505"] == starts["511"] == at(11, 26, 51)
    assert starts["506"] == at(11, 28, 0) and starts["507"] == at(11, 34, 0)
    assert starts["508"] is None and starts["509"] is None and starts["513"] is None  # N/A
    rows = parse_pending(read("queue_pending.txt"), tz=UTC)
    pending = {r.job_id: r.estimated_start for r in rows}
    assert pending == starts


def test_positions_in_each_partition_line() -> None:
    rows = parse_pending(read("queue_pending.txt"))
    ours = [r.job_id for r in rows]
    pos = pending_positions(rows, ours)
    # debug: held 508 and dependent 509 stand in no line; the rest by priority, 507 (nice) last
    assert pos == {"505": (1, 8), "506": (2, 8), "510_0": (3, 8), "510_1": (4, 8),
                   "510_2": (5, 8), "512": (6, 8), "513": (7, 8), "507": (8, 8),
                   "511": (1, 1)}  # fmt: skip
    # other users' jobs count in the line, but only ours get a position
    assert pending_positions(rows, ["507", "999"]) == {"507": (8, 8)}


def test_a_job_pending_in_two_partitions_gets_its_best_place() -> None:
    rows = parse_pending(read("queue_pending.txt"))
    both = PendingJob("600", "600", "debug,high", 4294901300, None, None, "Priority")
    pos = pending_positions([*rows, both], ["600", "511"])
    assert pos == {"600": (1, 9), "511": (2, 2)}


def test_equal_priorities_go_by_job_id() -> None:
    rows = [PendingJob(j, j, "p", 7, None, None, "Priority") for j in ("12", "9", "100")]
    assert pending_positions(rows, ["9", "12", "100"]) == {"9": (1, 3), "12": (2, 3),
                                                            "100": (3, 3)}  # fmt: skip


def test_bad_pending_lines_are_reported() -> None:
    problems: list[str] = []
    good = read("queue_pending.txt").splitlines()[0]
    rows = parse_pending(f"junk\n505|505|debug|high|N/A|(null)|Priority\n{good}\n",
                         problems=problems)  # fmt: skip
    assert [r.job_id for r in rows] == ["505"] and len(problems) == 2


def test_the_old_dash_capital_o_form_parses_too() -> None:
    # squeue -O 'name:|' puts a "|" after every field, the last one included
    rows = parse_pending("505|505|debug|4294901257|N/A|(null)|Priority|\n")
    assert rows[0].reason == "Priority"


def test_reason_is_frozen() -> None:
    with pytest.raises(AttributeError):
        REASONS["Priority"].code = "x"  # type: ignore[misc]
    assert isinstance(REASONS["Priority"], Reason)
