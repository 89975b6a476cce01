"""The state table covers every code Slurm documents, and map_state never raises."""

from __future__ import annotations

import pytest

from hpcbridge.lifecycle import TaskState as S
from hpcbridge.slurm import (
    COMPACT_CODES,
    FLAG_PRECEDENCE,
    STATE_TABLE,
    map_state,
    normalize_state,
    requeue_state,
)

# JOB STATE CODES of `man squeue` (22.05.8 here, and the 24.11 page: the same 24 codes).
MAN_SQUEUE = {
    "BF": "BOOT_FAIL", "CA": "CANCELLED", "CD": "COMPLETED", "CF": "CONFIGURING",
    "CG": "COMPLETING", "DL": "DEADLINE", "F": "FAILED", "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY", "PD": "PENDING", "PR": "PREEMPTED", "R": "RUNNING",
    "RD": "RESV_DEL_HOLD", "RF": "REQUEUE_FED", "RH": "REQUEUE_HOLD", "RQ": "REQUEUED",
    "RS": "RESIZING", "RV": "REVOKED", "SI": "SIGNALING", "SE": "SPECIAL_EXIT",
    "SO": "STAGE_OUT", "ST": "STOPPED", "S": "SUSPENDED", "TO": "TIMEOUT",
}
# `man sacct` JOB STATE CODES (a subset of the above).
MAN_SACCT = ["BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
             "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "REQUEUED", "RESIZING",
             "REVOKED", "SUSPENDED", "TIMEOUT"]
# Flags job_state_string_complete() prints (scontrol/--json/REST "BASE,FLAG" form).
FLAGS = ["LAUNCH_FAILED", "COMPLETING", "CONFIGURING", "EXPEDITING", "POWER_UP_NODE",
         "RECONFIG_FAIL", "RESIZING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
         "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT",
         "UPDATE_DB"]

EXPECTED = {
    "PENDING": S.QUEUED, "CONFIGURING": S.QUEUED, "REQUEUED": S.QUEUED,
    "REQUEUE_FED": S.QUEUED, "REQUEUE_HOLD": S.HELD, "RESV_DEL_HOLD": S.HELD,
    "POWER_UP_NODE": S.QUEUED, "SPECIAL_EXIT": S.HELD, "EXPEDITING": S.QUEUED,
    "RUNNING": S.RUNNING, "RESIZING": S.RUNNING, "SIGNALING": S.RUNNING,
    "STAGE_OUT": S.COMPLETING, "COMPLETING": S.COMPLETING,
    "SUSPENDED": S.SUSPENDED, "STOPPED": S.SUSPENDED,
    "COMPLETED": S.SUCCEEDED, "FAILED": S.FAILED, "CANCELLED": S.CANCELLED,
    "REVOKED": None, "TIMEOUT": S.TIMED_OUT, "DEADLINE": S.TIMED_OUT,
    "OUT_OF_MEMORY": S.OUT_OF_MEMORY, "PREEMPTED": S.PREEMPTED,
    "NODE_FAIL": S.NODE_FAILED, "BOOT_FAIL": S.NODE_FAILED, "LAUNCH_FAILED": S.NODE_FAILED,
    "RECONFIG_FAIL": S.NODE_FAILED, "UPDATE_DB": None,
}


def test_compact_codes_are_exactly_the_man_page():
    assert dict(COMPACT_CODES) == MAN_SQUEUE


def test_every_documented_state_is_in_the_table():
    names = set(MAN_SQUEUE.values()) | set(MAN_SACCT) | set(FLAGS)
    assert names <= set(STATE_TABLE)
    assert set(STATE_TABLE) == names  # and nothing undocumented crept in


def test_table_walk_matches_the_intended_mapping():
    assert dict(STATE_TABLE) == EXPECTED
    for name, state in STATE_TABLE.items():
        assert map_state(name) == state
        assert map_state(name.lower()) == state


@pytest.mark.parametrize("code,name", sorted(MAN_SQUEUE.items()))
def test_compact_codes_map_like_their_long_names(code, name):
    assert map_state(code) == STATE_TABLE[name]


def test_flags_in_precedence_are_all_known():
    assert set(FLAG_PRECEDENCE) <= set(STATE_TABLE)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("CANCELLED by 0", S.CANCELLED),
        ("CANCELLED by 1000", S.CANCELLED),
        ("CANCELLED+", S.CANCELLED),
        ("cancelled", S.CANCELLED),
        ("  RUNNING \n", S.RUNNING),
        ("PENDING,REQUEUED", S.QUEUED),
        ("RUNNING,COMPLETING", S.COMPLETING),
        ("PENDING,LAUNCH_FAILED", S.NODE_FAILED),
        ("RUNNING,UPDATE_DB", S.RUNNING),
        ("COMPLETED,STAGE_OUT", S.COMPLETING),
    ],
)
def test_normalisation(raw, expected):
    assert map_state(raw) == expected


def test_cancelled_by_keeps_the_uid_as_detail():
    assert normalize_state("CANCELLED by 1000") == ("CANCELLED", "by 1000")
    assert normalize_state("CD") == ("COMPLETED", None)


@pytest.mark.parametrize("raw", ["", "BOGUS", "OUT_OF_ME+", "?", "123", "RUNNING_LATER"])
def test_unknown_is_none_never_an_exception(raw):
    assert map_state(raw) is None


def test_completed_with_nonzero_exit_is_failed():
    assert map_state("COMPLETED", 0) == S.SUCCEEDED
    assert map_state("COMPLETED", None) == S.SUCCEEDED
    assert map_state("COMPLETED", 3) == S.FAILED
    assert map_state("COMPLETED", 0, 9) == S.FAILED
    assert map_state("FAILED", 0) == S.FAILED


def test_requeue_causes_map_to_interruptions_only():
    """A Slurm-side requeue cause (an earlier instance's state in sacct -D) is an interruption
    (node_failed, preempted) or nothing the cycle acts on."""
    for name, state in STATE_TABLE.items():
        expected = state if state in (S.NODE_FAILED, S.PREEMPTED) else None
        assert requeue_state(name) == expected, name
    assert requeue_state("NODE_FAIL") == S.NODE_FAILED
    assert requeue_state("PREEMPTED") == S.PREEMPTED
    assert requeue_state("REQUEUED") is None
    assert requeue_state("BOGUS") is None
