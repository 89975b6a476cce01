"""Every Slurm job state, mapped to one lifecycle state. Pure data plus one lookup.

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
        "REQUEUE_HOLD": S.QUEUED,  # requeued and held: waits for `scontrol release`
        "RESV_DEL_HOLD": S.QUEUED,  # its reservation was deleted; held until released
        "EXPEDITING": S.QUEUED,  # 25.x: an expedited requeue is in progress
        # SPECIAL_EXIT is a requeue-HOLD after a special exit value (set by EpilogSlurmctld
        # or `scontrol requeuehold State=SpecialExit`). The base state is PENDING and the job
        # runs again under the same id if anybody releases it, so a terminal FAILED here could
        # later meet a running job of a "failed" task. We say QUEUED (the pending reason
        # tells the user it is held) and let a cancel or the lost-grace end it.
        "SPECIAL_EXIT": S.QUEUED,
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
        # Federation: this cluster's sibling was revoked because another cluster started the
        # job. hpcbridge tracks a job on ONE cluster and that copy will never run: CANCELLED
        # (the reason carries the raw state). Open question if federations ever matter.
        "REVOKED": S.CANCELLED,
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

# Earlier-instance states (sacct -D) that explain a Slurm-side requeue of the same job id.
REQUEUE_CAUSES: frozenset[str] = frozenset(
    {"NODE_FAIL", "PREEMPTED", "REQUEUED", "BOOT_FAIL", "LAUNCH_FAILED", "REQUEUE_HOLD",
     "SPECIAL_EXIT", "REQUEUE_FED", "EXPEDITING"}
)


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
