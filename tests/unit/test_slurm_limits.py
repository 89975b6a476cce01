"""hpcbridge.slurm.limits on real output captured from the lab by
scripts/lab/capture-limits.sh: tests/data/slurm/{22.05,24.11}/limits_*.txt (Slurm 22.05.8 on
the host, 24.11.5 in the trixie chroot lab), commands in limits_commands.log. Every test runs
on both versions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hpcbridge.slurm import limits as sl

ROOT = Path(__file__).resolve().parents[1] / "data" / "slurm"
VERSIONS = ("22.05", "24.11")
USER = "hpcblab"
Read = Callable[[str], str]


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def read(version: str) -> Read:
    """The capture ``name`` of this version."""
    return lambda name: (ROOT / version / name).read_text()


def test_every_capture_exited_0_and_the_builders_made_the_commands(read: Read) -> None:
    log = read("limits_commands.log")
    for name in ("limits_scontrol_config", "limits_assoc", "limits_qos", "limits_sinfo",
                 "limits_sbatch_version", "limits_assoc_limited", "limits_qos_limited"):  # fmt: skip
        assert read(f"{name}.rc").strip() == "0", name
    assert f"limits_assoc: {' '.join(sl.assoc_argv(USER))}" in log
    assert f"limits_qos: {' '.join(sl.qos_argv())}" in log
    assert f"limits_sinfo: {' '.join(sl.sinfo_partitions_argv())}" in log


def test_parse_scontrol_config(read: Read) -> None:
    cfg = sl.parse_scontrol_config(read("limits_scontrol_config.txt"))
    assert cfg["MaxArraySize"] == "1001"
    assert cfg["MaxJobCount"] == "10000"
    assert cfg["ClusterName"] == "lab"
    assert cfg["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert cfg["BatchStartTimeout"] == "10 sec"  # values kept as printed
    assert "Configuration data as of" not in " ".join(cfg)  # the header is no key


def test_the_older_config_capture_parses_the_same(read: Read) -> None:
    # usage_scontrol_config.txt: another capture of the 22.05 lab, hours earlier
    old = sl.parse_scontrol_config((ROOT / "22.05" / "usage_scontrol_config.txt").read_text())
    new = sl.parse_scontrol_config(read("limits_scontrol_config.txt"))
    assert old["MaxArraySize"] == new["MaxArraySize"] and len(old) > 100


def test_lab_defaults_have_no_submit_limit(read: Read) -> None:
    lim = sl.parse_limits(read("limits_scontrol_config.txt"), read("limits_assoc.txt"),
                          read("limits_qos.txt"), USER)  # fmt: skip
    assert lim == sl.ClusterLimits(max_array_size=1001, max_job_count=10000, max_submit_jobs=None)


def test_associations_of_the_lab_user(read: Read) -> None:
    rows = sl.parse_assocs(read("limits_assoc.txt"))
    assert [(a.cluster, a.account, a.user) for a in rows] == [("lab", "lab", USER)]
    assert rows[0].max_submit_jobs is None and rows[0].effective_qos() == "normal"
    assert sl.parse_assocs(read("limits_assoc_nouser.txt")) == []


def test_qos_table(read: Read) -> None:
    qos = sl.parse_qos(read("limits_qos.txt"))
    assert set(qos) == {"normal"}
    assert qos["normal"].tightest() is None
    limited = sl.parse_qos(read("limits_qos_limited.txt"))
    assert limited["hpcbcap"].max_submit_jobs_per_user == 25


def test_limited_associations_inherit_the_account_limit(read: Read) -> None:
    rows = {a.account: a for a in sl.parse_assocs(read("limits_assoc_limited.txt"))}
    assert set(rows) == {"lab", "hpcbcap", "hpcbcap2"}
    # account hpcbcap has MaxSubmitJobs=40; the user's association there sets none of its
    # own, and sacctmgr prints the inherited value (WOPLimits would hide it)
    assert rows["hpcbcap"].max_submit_jobs == 40
    assert rows["hpcbcap"].default_qos == "hpcbcap" and rows["hpcbcap"].effective_qos() == "hpcbcap"
    assert rows["hpcbcap2"].max_submit_jobs == 7
    assert rows["lab"].max_submit_jobs is None


@pytest.mark.parametrize("account, expected", [
    (None, 7),        # every association: hpcbcap2's own 7 is the tightest
    ("hpcbcap", 25),  # 40 inherited, but its default QOS allows 25 per user
    ("hpcbcap2", 7),
    ("lab", None),
])  # fmt: skip
def test_tightest_submit_limit(read: Read, account: str | None, expected: int | None) -> None:
    lim = sl.parse_limits(read("limits_scontrol_config.txt"), read("limits_assoc_limited.txt"),
                          read("limits_qos_limited.txt"), USER, account=account)  # fmt: skip
    assert lim.max_submit_jobs == expected
    assert lim.max_array_size == 1001


def test_other_users_and_clusters_do_not_count(read: Read) -> None:
    args = (read("limits_scontrol_config.txt"), read("limits_assoc_limited.txt"), read("limits_qos_limited.txt"))
    assert sl.parse_limits(*args, "someoneelse").max_submit_jobs is None
    assert sl.parse_limits(*args, USER, cluster="other").max_submit_jobs is None


def test_partitions(read: Read) -> None:
    parts = sl.parse_partitions(read("limits_sinfo.txt"))
    assert [p.name for p in parts] == ["debug", "low", "lowc", "high"]
    assert [p.default for p in parts] == [True, False, False, False]
    assert all(p.available and p.nodes == 3 and p.time_limit == "1:00:00" for p in parts)


def test_partitions_split_by_node_state_add_up(read: Read) -> None:
    # sinfo prints one line per partition and node state; the same real lines, regrouped
    lines = read("limits_sinfo.txt").splitlines()
    name, avail, limit, _count, state = lines[0].split("|")
    split = [f"{name}|{avail}|{limit}|2|{state}", f"{name}|{avail}|{limit}|1|down*", *lines[1:]]
    debug = sl.parse_partitions("\n".join(split))[0]
    assert (debug.nodes, debug.states) == (3, (state, "down*"))


def test_version(read: Read, version: str) -> None:
    assert sl.parse_version(read("limits_sbatch_version.txt")) == {"22.05": "22.05.8", "24.11": "24.11.5"}[version]
    assert sl.parse_version("slurm-wlm 24.11.5\n") == "24.11.5"
    assert sl.parse_version("bash: sbatch: command not found") is None


def test_malformed_lines_are_skipped(read: Read) -> None:
    text = read("limits_assoc_limited.txt") + "garbage\n|||\n"
    assert len(sl.parse_assocs(text)) == 3
    assert sl.parse_partitions("nonsense\n" + read("limits_sinfo.txt"))[0].name == "debug"
    assert sl.parse_limits("", "", "", USER) == sl.ClusterLimits(None, None, None)


def test_assoc_argv_refuses_odd_user_names() -> None:
    with pytest.raises(ValueError):
        sl.assoc_argv("a b")
    assert sl.assoc_argv("u", bin_dir="/opt/slurm/bin")[0] == "/opt/slurm/bin/sacctmgr"
