"""Every Slurm job state, mapped to one lifecycle state. Pure data plus a few lookups.

* ``map_state``: a state word (compact code, long name, "BASE,FLAG" form) -> lifecycle state.
* ``classify_job``: the same plus what only the pending reason tells: held jobs (HELD) and
  launch failures that Slurm requeued held (NODE_FAILED with the job still alive).
* ``requeue_state``: an earlier instance's state (the cause of a Slurm-side requeue) -> the
  interruption it means, or None.

Sources: the JOB STATE CODES sections of ``man squeue`` / ``man sacct`` (22.05 and 24.11 list
the same 24 codes), and Slurm's ``job_state_string`` / ``job_state_string_complete``
(``src/common/slurm_protocol_defs.c``), which add the flags LAUNCH_FAILED, POWER_UP_NODE,
RECONFIG_FAIL, EXPEDITING and UPDATE_DB that squeue/sacct never print alone but scontrol,
``--json`` and the REST API show in the "BASE,FLAG,FLAG" form.

How Slurm prints a state: a job has one base state (PENDING, RUNNING, ... OUT_OF_MEMORY) and
any number of flags; squeue/sacct print ONE word, the first set flag in a fixed order
(COMPLETING, STAGE_OUT, CONFIGURING, RESIZING, REQUEUED, ...) and otherwise the base. So
"COMPLETING" hides whether the job will end COMPLETED or FAILED: it maps to COMPLETING and the
next poll tells the outcome. sacct appends " by <uid>" to CANCELLED, and fixed-width output
truncates long names with a trailing "+" (``OUT_OF_ME+``); both are normalised away.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..lifecycle import TaskState

S = TaskState

# squeue %t / StateCompact codes -> the long names squeue %T / sacct print.
COMPACT_CODES: Mapping[str, str] = MappingProxyType(
    {
        "BF": "BOOT_FAIL",
        "CA": "CANCELLED",
        "CD": "COMPLETED",
        "CF": "CONFIGURING",
        "CG": "COMPLETING",
        "DL": "DEADLINE",
        "F": "FAILED",
        "NF": "NODE_FAIL",
        "OOM": "OUT_OF_MEMORY",
        "PD": "PENDING",
        "PR": "PREEMPTED",
        "R": "RUNNING",
        "RD": "RESV_DEL_HOLD",
        "RF": "REQUEUE_FED",
        "RH": "REQUEUE_HOLD",
        "RQ": "REQUEUED",
        "RS": "RESIZING",
        "RV": "REVOKED",
        "SI": "SIGNALING",
        "SE": "SPECIAL_EXIT",
        "SO": "STAGE_OUT",
        "ST": "STOPPED",
        "S": "SUSPENDED",
        "TO": "TIMEOUT",
    }
)

# Long name -> lifecycle state. None is a deliberate "says nothing about the job" (see the
# comment on each); map_state() then returns None and the caller changes nothing.
STATE_TABLE: Mapping[str, TaskState | None] = MappingProxyType(
    {
        # --- waiting for resources -------------------------------------------------------
        "PENDING": S.QUEUED,
        # Allocated, nodes still booting / being configured: the program has not started.
        "CONFIGURING": S.QUEUED,
        # Nodes are being powered up for the job (power saving): still waiting.
        "POWER_UP_NODE": S.QUEUED,
        # A requeue in progress (the old instance is completing, the new one will pend).
        # As a job's CURRENT state this is "back in the queue"; as an EARLIER instance in
        # sacct -D it is the requeue cause (scontrol requeue).
        "REQUEUED": S.QUEUED,
        "REQUEUE_FED": S.QUEUED,  # requeued by a federation
        # --- held: waiting, but will not start until somebody releases it ----------------
        "REQUEUE_HOLD": S.HELD,  # requeued and held: waits for `scontrol release`
        "RESV_DEL_HOLD": S.HELD,  # its reservation was deleted; held until released
        "EXPEDITING": S.QUEUED,  # 25.x: an expedited requeue is in progress
        # SPECIAL_EXIT is a requeue-HOLD after a special exit value (set by EpilogSlurmctld
        # or `scontrol requeuehold State=SpecialExit`). The base state is PENDING and the job
        # runs again under the same id if anybody releases it, so a terminal FAILED here could
        # later meet a running job of a "failed" task: HELD (in flight), and a cancel or the
        # user's release decides.
        "SPECIAL_EXIT": S.HELD,
        # --- executing -------------------------------------------------------------------
        "RUNNING": S.RUNNING,
        "RESIZING": S.RUNNING,  # changing size while it runs
        "SIGNALING": S.RUNNING,  # a signal is being delivered; the job is still alive
        "SUSPENDED": S.SUSPENDED,  # CPUs released to other jobs
        "STOPPED": S.SUSPENDED,  # SIGSTOPped, CPUs kept
        # --- finishing -------------------------------------------------------------------
        # Processes ending, epilog running; the outcome is not known yet.
        "COMPLETING": S.COMPLETING,
        # Program finished; burst-buffer stage-out still running (same meaning for us).
        "STAGE_OUT": S.COMPLETING,
        # --- outcomes --------------------------------------------------------------------
        # Exit 0 on all nodes. map_state() turns it into FAILED when an exit code or signal
        # says otherwise (Slurm should never print that, but the code decides).
        "COMPLETED": S.SUCCEEDED,
        "FAILED": S.FAILED,  # non-zero exit, killed by a signal, or launch trouble
        "CANCELLED": S.CANCELLED,  # scancel by user/admin (sacct adds "by <uid>")
        "TIMEOUT": S.TIMED_OUT,
        "DEADLINE": S.TIMED_OUT,  # --deadline passed before it could finish
        "OUT_OF_MEMORY": S.OUT_OF_MEMORY,
        "PREEMPTED": S.PREEMPTED,
        "NODE_FAIL": S.NODE_FAILED,
        "BOOT_FAIL": S.NODE_FAILED,  # the node would not boot for the job
        "LAUNCH_FAILED": S.NODE_FAILED,  # the batch launch failed on the node
        "RECONFIG_FAIL": S.NODE_FAILED,  # node reconfiguration (features/reboot) failed
        # Federation (``man squeue``: "Sibling was removed from cluster due to other cluster
        # starting the job"): this row is a sibling copy that will never run HERE, because the
        # job started on another cluster of the federation under the same job id. It says
        # nothing about how the job is doing, and it is certainly not an end: CANCELLED would
        # end a task whose job is running elsewhere (its outputs never fetched, a resubmit
        # would run it twice). None = "unknown, change nothing": the task keeps its state,
        # the row's raw state tells why, and a row of the same job id from the cluster that
        # runs it (a federated view, FederationParameters=fed_display) wins over it (see
        # merge_views). hpcbridge follows a job on one cluster: configure that cluster.
        "REVOKED": None,
        # Internal bookkeeping flag ("send the job to the database again"): says nothing
        # about the job. Only ever seen next to a base state, which then decides.
        "UPDATE_DB": None,
    }
)

# In the "BASE,FLAG,..." form, which flag wins: Slurm's own job_state_string order, with the
# flags it does not print in one word (LAUNCH_FAILED, RECONFIG_FAIL, POWER_UP_NODE) after.
FLAG_PRECEDENCE: tuple[str, ...] = (
    "COMPLETING",
    "STAGE_OUT",
    "CONFIGURING",
    "EXPEDITING",
    "RESIZING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
    "REVOKED",
    "RESV_DEL_HOLD",
    "SIGNALING",
    "LAUNCH_FAILED",
    "RECONFIG_FAIL",
    "POWER_UP_NODE",
)

# Pending reasons that mean "held": the job waits but will not start until released
# (``scontrol release`` / ``scontrol uhold``). squeue prints the description with spaces
# ("job requeued in held state"), scontrol with underscores ("job_requeued_in_held_state").
HELD_REASONS: frozenset[str] = frozenset(
    {"jobhelduser", "jobheldadmin", "job requeued in held state"}
)
# A batch launch that failed on the node (prolog failure, slurmd trouble): Slurm requeues the
# job HELD with this description (Slurm's own regression test for a failing prolog checks for
# it). Nobody releases it by itself, so it is a node failure for the retry policy, with the
# job still alive at the scheduler (JobInfo.job_alive): cancel it before a new attempt.
LAUNCH_FAILED_REASONS: frozenset[str] = frozenset({"launch failed requeued held"})


def normalize_reason(reason: str | None) -> str:
    """``"(JobHeldUser)"`` -> ``"jobhelduser"``; ``"job_requeued_in_held_state"`` ->
    ``"job requeued in held state"``: one spelling for squeue's and scontrol's forms."""
    text = (reason or "").strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return " ".join(text.replace("_", " ").lower().split())


def normalize_state(raw: str) -> tuple[str, str | None]:
    """``"CANCELLED by 1000"`` -> ``("CANCELLED", "by 1000")``; ``"cd"`` -> ``("COMPLETED",
    None)``; ``"OUT_OF_ME+"`` -> ``("OUT_OF_ME", None)`` (still unknown: truncated output is
    not guessed at). ``"PENDING,REQUEUED"`` -> the word squeue would print, ``"REQUEUED"``.
    Returns the long name (or the cleaned unknown word) and any detail after it."""
    text = raw.strip()
    detail: str | None = None
    head, sep, tail = text.partition(" ")
    if sep:
        text, detail = head, tail.strip() or None
    word = text.upper().rstrip("+")
    if "," in word:
        parts = [p for p in word.split(",") if p]
        flags = set(parts[1:])
        for flag in FLAG_PRECEDENCE:
            if flag in flags:
                return flag, detail
        word = parts[0] if parts else ""
    return COMPACT_CODES.get(word, word), detail


def map_state(raw: str, exit_code: int | None = None, signal: int | None = None) -> TaskState | None:
    """The lifecycle state for a state word as squeue, sacct or scontrol printed it, or None
    when it is unknown (the caller logs it and changes nothing; never an exception).

    ``exit_code``/``signal`` (when known) correct COMPLETED: a non-zero code means FAILED.
    """
    name, _detail = normalize_state(raw)
    state = STATE_TABLE.get(name)
    if state is S.SUCCEEDED and ((exit_code or 0) != 0 or (signal or 0) != 0):
        return S.FAILED
    return state


# Lifecycle states a Slurm-side requeue cause can mean: the job was interrupted, not ended.
_INTERRUPTIONS = frozenset({S.NODE_FAILED, S.PREEMPTED})


def requeue_state(cause: str) -> TaskState | None:
    """The lifecycle state of a Slurm-side requeue cause (the state of an earlier instance of
    the same job id in ``sacct --duplicates``): PREEMPTED -> preempted, NODE_FAIL, BOOT_FAIL,
    LAUNCH_FAILED -> node_failed. None when the cause is no interruption of the job: an
    admin's ``scontrol requeue`` (REQUEUED), a held requeue, a federation requeue, or a word
    this table does not know."""
    state = map_state(cause)
    return state if state in _INTERRUPTIONS else None


def classify_job(
    raw: str, reason: str | None = None, exit_code: int | None = None, signal: int | None = None
) -> tuple[TaskState | None, bool]:
    """The lifecycle state of a job row and whether the scheduler still holds the job although
    the state says the attempt is over (``job_alive``).

    ``map_state`` plus what only the pending reason tells: a PENDING job held by its user or
    an admin (``JobHeldUser``, ``JobHeldAdmin``, ``job requeued in held state``) is HELD; a job
    Slurm requeued held after a failed launch (``launch failed requeued held``) is
    NODE_FAILED and alive, as is ``PENDING,LAUNCH_FAILED`` in the flag form."""
    state = map_state(raw, exit_code, signal)
    why = normalize_reason(reason)
    if state in (S.QUEUED, S.HELD):
        if why in LAUNCH_FAILED_REASONS:
            return S.NODE_FAILED, True
        if why in HELD_REASONS:
            return S.HELD, False
    if state is S.NODE_FAILED:
        base = raw.strip().upper().split(",", 1)[0]
        if "," in raw and COMPACT_CODES.get(base, base) == "PENDING":
            return S.NODE_FAILED, True  # requeued after the failure: still in the queue
    return state, False
