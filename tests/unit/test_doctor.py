"""The cluster doctor's checks and their dependencies, over ReplayTransport answering with the
real lab captures (tests/data/slurm/22.05/limits_*). The network checks (resolve, TCP, host
key, login) run against the real lab sshd in tests/integration/test_doctor.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hpcbridge import doctor
from hpcbridge.config import ClusterConfig
from hpcbridge.errors import TransportError
from hpcbridge.models import Resources
from hpcbridge.testing import ReplayTransport

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"
CONFIG = (DATA / "limits_scontrol_config.txt").read_text()


def replay(config_text: str = CONFIG, *, missing: str | None = None,
           before: Callable[[ReplayTransport], object] | None = None) -> ReplayTransport:
    """The lab's answers; ``before`` adds rules that win over them (first match wins)."""
    t = ReplayTransport(DATA, home="/home/hpcblab")
    if before is not None:
        before(t)
    t.on(["sh", "-c"], stdout=f"{missing}\n" if missing else "")
    t.on("sbatch --version", file="limits_sbatch_version.txt")
    t.on("sacct --noheader -X", file="limits_sacct_probe.txt")
    t.on("sinfo --noheader", file="limits_sinfo.txt")
    t.on("scontrol show config", stdout=config_text)
    t.on("sacctmgr --noheader --parsable2 show assoc", file="limits_assoc_limited.txt")
    t.on("sacctmgr --noheader --parsable2 show qos", file="limits_qos_limited.txt")
    t.on("rm -f --")
    return t


@pytest.fixture(autouse=True)
def lab_user(monkeypatch: pytest.MonkeyPatch) -> None:
    # A local-transport cluster checks as the user running hpcbridge: be the lab's user.
    monkeypatch.setattr("getpass.getuser", lambda: "hpcblab")


def run(t: ReplayTransport, **over: object) -> doctor.ClusterReport:
    cluster = ClusterConfig(name="here", backend="slurm", transport="local", **over)  # type: ignore[arg-type]
    return doctor.check_cluster(cluster, make_transport=lambda c: t)


def statuses(report: doctor.ClusterReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_everything_passes_on_the_captures() -> None:
    t = replay()
    report = run(t, defaults=Resources(partition="debug"))
    assert statuses(report) == dict.fromkeys(
        ["config", "auth", "slurm", "accounting", "partitions", "limits", "associations", "work dir",
         "budget"], "ok")  # fmt: skip
    got = {c.name: c for c in report.checks}
    assert "slurm 22.05.8" in got["slurm"].detail
    assert got["partitions"].detail.startswith("debug*, low, lowc, high")
    assert "MaxArraySize 1001" in got["limits"].detail
    assert "MaxSubmitJobs 7" in got["associations"].detail and "hpcbcap (qos hpcbcap)" in got["associations"].detail
    assert report.limits == doctor.sl.ClusterLimits(1001, 10000, 7)
    assert [p.name for p in report.partitions] == ["debug", "low", "lowc", "high"]
    (probe,) = t.files  # the work dir probe, written, then removed with rm (not replayed)
    assert probe.startswith("/home/hpcblab/hpcbridge/.hpcbridge-doctor-")
    assert [c.command[-1] for c in t.calls_to("rm")] == [probe]
    assert t.closed
    assert report.to_dict()["ok"] is True


def test_a_missing_command_skips_what_needs_slurm_but_not_the_rest() -> None:
    report = run(replay(missing="sacct"))
    st = statuses(report)
    assert st["slurm"] == "fail" and st["work dir"] == "ok" and st["budget"] == "ok"
    for name in ("accounting", "partitions", "limits"):
        assert st[name] == "skip"
    skipped = {c.name: c.detail for c in report.checks}
    assert skipped["accounting"] == "needs slurm, which failed"
    assert skipped["associations"] == "needs limits; not reached: slurm failed"
    slurm = next(c for c in report.checks if c.name == "slurm")
    assert "sacct" in slurm.detail and "slurm_bin_dir" in slurm.fix


def test_one_failing_command_fails_only_its_check() -> None:
    report = run(replay(before=lambda t: t.on("sinfo", raises=TransportError("connection lost during sinfo"))))
    st = statuses(report)
    assert st["partitions"] == "fail" and st["limits"] == st["associations"] == st["accounting"] == "ok"
    part = next(c for c in report.checks if c.name == "partitions")
    assert "connection lost" in part.detail


def test_configured_partition_must_exist() -> None:
    report = run(replay(), defaults=Resources(partition="gpu"))
    part = next(c for c in report.checks if c.name == "partitions")
    assert part.status == "fail" and "gpu" in part.detail and "debug, low, lowc, high" in part.fix


def test_budget_above_the_site_rate_limit_fails() -> None:
    text = CONFIG.replace("SlurmctldParameters     = (null)",
                          "SlurmctldParameters     = rl_enable,rl_refill_rate=1,rl_bucket_size=20")  # fmt: skip
    assert text != CONFIG
    report = run(replay(text), commands_per_minute=600.0)
    budget = next(c for c in report.checks if c.name == "budget")
    assert budget.status == "fail" and "60/minute" in budget.detail and "commands_per_minute = 30" in budget.fix
    ok = next(c for c in run(replay(text), commands_per_minute=20.0).checks if c.name == "budget")
    assert ok.status == "ok"


def test_enforced_accounting_without_an_association_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "stranger")
    assert "AccountingStorageEnforce = associations,limits,qos" in CONFIG  # the lab enforces
    bad = next(c for c in run(replay()).checks if c.name == "associations")
    assert bad.status == "fail" and "stranger" in bad.detail and "sacctmgr add user" in bad.fix
    text = CONFIG.replace("AccountingStorageEnforce = associations,limits,qos", "AccountingStorageEnforce = none")
    lax = next(c for c in run(replay(text)).checks if c.name == "associations")
    assert lax.status == "ok" and "not enforced" in lax.detail


def test_unwritable_work_dir() -> None:
    t = replay().fail("write_text", PermissionError(13, "Permission denied"))
    wd = next(c for c in run(t).checks if c.name == "work dir")
    assert wd.status == "fail" and "work_dir" in wd.fix


def test_local_backend_has_nothing_to_check_but_config() -> None:
    report = doctor.check_cluster(ClusterConfig(name="local"))
    assert statuses(report) == {"config": "ok", "auth": "ok"}


def test_a_broken_config_is_one_failed_check(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[clusters.x]\nbackend = 'pbs'\n")
    (report,) = doctor.check_config_file(str(bad))
    assert [(c.name, c.status) for c in report.checks] == [("config", "fail")]
    assert "pbs" in report.checks[0].detail
    bad.write_text("[clusters.x]\nbackend = 'slurm'\n")
    (missing,) = doctor.check_config_file(str(bad), ["nope"])
    assert missing.cluster == "nope" and "unknown cluster" in missing.checks[0].detail
