"""`hpcbridge clusters check` / `clusters add` against the real lab (sshd, slurmctld, slurmdbd),
through the real CLI in a subprocess, with HOME pointing at a temporary directory (so
~/.ssh/config and ~/.ssh/known_hosts are the test's own)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpcbridge.config import ClusterConfig, load_config

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hpcb(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    env.update(HOME=str(home), HPCBRIDGE_DB=str(home / "registry.db"))
    return subprocess.run([sys.executable, "-m", "hpcbridge", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=120)  # fmt: skip


def entry(name: str, lab: ClusterConfig, **over: Any) -> str:
    values: dict[str, Any] = {
        "backend": "slurm", "transport": "ssh", "host": lab.host, "port": lab.port, "user": lab.user,
        "identity_file": lab.identity_file, "known_hosts": lab.known_hosts, "work_dir": lab.work_dir,
        "partition": "debug",
    }  # fmt: skip
    values.update(over)
    lines = [f"[clusters.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def checks(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def _new_key(tmp_path: Path) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key file, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "other_id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return path, public.decode()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".ssh").mkdir(mode=0o700)
    return tmp_path


def test_every_check_passes_on_the_lab(lab_config: Path, home: Path) -> None:
    res = hpcb(home, "--config", str(lab_config), "clusters", "check", "lab", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    (report,) = json.loads(res.stdout)
    got = checks(report)
    assert list(got) == ["config", "resolve", "tcp", "host key", "auth", "slurm", "accounting",
                         "partitions", "limits", "associations", "work dir", "clock", "budget"]  # fmt: skip
    assert {c["status"] for c in got.values()} == {"ok"}, got
    assert "22.05" in got["slurm"]["detail"] or "slurm 2" in got["slurm"]["detail"]
    assert report["partitions"][:1] == ["debug"] and "high" in report["partitions"]
    assert report["limits"]["max_array_size"] == 1001
    assert "lab (qos normal)" in got["associations"]["detail"]
    # the text form says the same, one line per check
    text = hpcb(home, "--config", str(lab_config), "clusters", "check", "lab")
    assert text.returncode == 0 and text.stdout.count("\n  ok ") == 13, text.stdout


def test_broken_clusters_fail_with_the_fix_and_the_others_still_pass(
    lab_config: Path, lab_cluster: ClusterConfig, home: Path
) -> None:
    empty_known = home / "empty_known_hosts"
    empty_known.write_text("")
    cfg = home / "broken.toml"
    cfg.write_text(
        'default_cluster = "lab"\n\n'
        + entry("lab", lab_cluster) + "\n"
        + entry("nohost", lab_cluster, host="no-such-host.invalid") + "\n"
        + entry("refused", lab_cluster, port=_free_port()) + "\n"
        + entry("newkey", lab_cluster, known_hosts=str(empty_known))
    )
    res = hpcb(home, "--config", str(cfg), "clusters", "check", "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    reports = {r["cluster"]: checks(r) for r in json.loads(res.stdout)}
    assert {c["status"] for c in reports["lab"].values()} == {"ok"}

    nohost = reports["nohost"]
    assert nohost["resolve"]["status"] == "fail" and "no-such-host.invalid" in nohost["resolve"]["detail"]
    assert "DNS" in nohost["resolve"]["fix"]
    assert nohost["tcp"]["status"] == "skip" and "resolve" in nohost["tcp"]["detail"]
    assert nohost["budget"]["status"] == "ok"  # independent of the network

    refused = reports["refused"]
    assert refused["resolve"]["status"] == "ok"
    assert refused["tcp"]["status"] == "fail" and "refused" in refused["tcp"]["detail"]
    assert "sshd" in refused["tcp"]["fix"]
    assert refused["auth"]["status"] == "skip" and "tcp failed" in refused["auth"]["detail"]

    newkey = reports["newkey"]
    assert newkey["tcp"]["status"] == "ok"
    assert newkey["host key"]["status"] == "fail"
    assert "not in known_hosts" in newkey["host key"]["detail"] and "SHA256:" in newkey["host key"]["detail"]
    fix = newkey["host key"]["fix"]
    assert "ssh-keyscan" in fix and f"-p {lab_cluster.port}" in fix
    assert all(newkey[n]["status"] == "skip" for n in ("auth", "slurm", "limits", "work dir", "clock"))

    # The fix works: run the command it gives, and the same cluster passes.
    command = fix.split("`")[1]
    subprocess.run(["bash", "-c", command], check=True, capture_output=True, timeout=30)
    again = hpcb(home, "--config", str(cfg), "clusters", "check", "newkey", "--json")
    assert again.returncode == 0, again.stdout
    assert {c["status"] for c in checks(json.loads(again.stdout)[0]).values()} == {"ok"}


def test_changed_key_wrong_login_key_and_trust_on_first_use(
    lab_config: Path, lab_cluster: ClusterConfig, home: Path
) -> None:
    other_key, other_public = _new_key(home)
    changed = home / "changed_known_hosts"
    changed.write_text(f"[{lab_cluster.host}]:{lab_cluster.port} {other_public}\n")
    tofu = home / "tofu_known_hosts"
    cfg = home / "c.toml"
    cfg.write_text(entry("changed", lab_cluster, known_hosts=str(changed)) + "\n"
                   + entry("badlogin", lab_cluster, identity_file=str(other_key)) + "\n"
                   + entry("tofu", lab_cluster, known_hosts=str(tofu), accept_new_host_keys=True))  # fmt: skip
    res = hpcb(home, "--config", str(cfg), "clusters", "check", "--json")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    reports = {r["cluster"]: checks(r) for r in json.loads(res.stdout)}
    key = reports["changed"]["host key"]
    assert key["status"] == "fail" and "HAS CHANGED" in key["detail"] and "ssh-keygen -R" in key["fix"]
    assert reports["changed"]["auth"]["status"] == "skip"
    login = reports["badlogin"]
    assert login["host key"]["status"] == "ok" and login["auth"]["status"] == "fail"
    assert str(other_key) in login["auth"]["detail"] + login["auth"]["fix"]
    assert login["slurm"]["status"] == "skip" and login["slurm"]["detail"] == "needs auth, which failed"
    # accept_new_host_keys: the unknown key passes (said so), the login saves it
    assert "will be trusted" in reports["tofu"]["host key"]["detail"]
    assert {c["status"] for c in reports["tofu"].values()} == {"ok"}
    assert f"[{lab_cluster.host}]:{lab_cluster.port} ssh-ed25519 " in tofu.read_text()


def test_wrong_partition_and_unwritable_work_dir_fail_alone(
    lab_config: Path, lab_cluster: ClusterConfig, home: Path
) -> None:
    cfg = home / "c.toml"
    cfg.write_text(entry("odd", lab_cluster, partition="nosuchpart", work_dir="/proc/hpcbridge"))
    res = hpcb(home, "--config", str(cfg), "clusters", "check", "odd", "--json")
    assert res.returncode == 1
    got = checks(json.loads(res.stdout)[0])
    failed = {n for n, c in got.items() if c["status"] == "fail"}
    assert failed == {"partitions", "work dir"}, got
    assert "debug" in got["partitions"]["fix"]
    assert got["limits"]["status"] == got["clock"]["status"] == "ok"


def _ssh_config(home: Path, lab: ClusterConfig) -> None:
    (home / ".ssh" / "config").write_text(
        "Host labalias\n"
        f"    HostName {lab.host}\n    Port {lab.port}\n    User {lab.user}\n"
        f"    IdentityFile {lab.identity_file}\n    UserKnownHostsFile {lab.known_hosts}\n"
    )


def test_clusters_add_writes_an_entry_that_passes_the_check(
    lab_config: Path, lab_cluster: ClusterConfig, home: Path
) -> None:
    _ssh_config(home, lab_cluster)
    cfg = home / "config.toml"
    original = ('# my settings, kept as they are\ndefault_cluster = "old"\n\n'
                '[clusters.old]  # a comment\nbackend = "local"\n')  # fmt: skip
    cfg.write_text(original)
    res = hpcb(home, "--config", str(cfg), "clusters", "add", "mylab", "--host", "labalias", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    text = cfg.read_text()
    assert text.startswith(original)
    new = load_config(cfg).cluster("mylab")
    assert (new.host, new.transport, new.defaults.partition) == ("labalias", "ssh", "debug")
    assert load_config(cfg).default_cluster == "old"
    check = hpcb(home, "--config", str(cfg), "clusters", "check", "mylab", "--json")
    assert check.returncode == 0, check.stdout
    assert "ssh hpcblab@127.0.0.1" in json.loads(check.stdout)[0]["description"]
    listed = hpcb(home, "--config", str(cfg), "clusters", "list")
    assert listed.returncode == 0 and "mylab" in listed.stdout and "labalias" in listed.stdout
    # a second add under the same name is refused, and the file stays as it is
    again = hpcb(home, "--config", str(cfg), "clusters", "add", "mylab", "--host", "labalias", "--yes")
    assert again.returncode == 1 and "already exists" in again.stderr and cfg.read_text() == text


def test_clusters_add_asks_for_the_partition_and_creates_the_file(
    lab_config: Path, lab_cluster: ClusterConfig, home: Path
) -> None:
    _ssh_config(home, lab_cluster)
    cfg = home / "sub" / "new.toml"
    res = hpcb(home, "--config", str(cfg), "clusters", "add", "c2", "--host", "labalias", stdin="lowc\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "partition for this cluster's tasks" in res.stdout and "debug, low, lowc, high" in res.stdout
    loaded = load_config(cfg)
    assert loaded.default_cluster == "c2" and loaded.cluster("c2").defaults.partition == "lowc"
    bad = hpcb(home, "--config", str(home / "x.toml"), "clusters", "add", "c3", "--host", "labalias",
               "--partition", "nosuch")  # fmt: skip
    assert bad.returncode == 1 and "nosuch" in bad.stderr and not (home / "x.toml").exists()


def test_clusters_add_refuses_an_unreachable_host(home: Path) -> None:
    (home / ".ssh" / "config").write_text(f"Host dead\n    HostName 127.0.0.1\n    Port {_free_port()}\n")
    cfg = home / "c.toml"
    res = hpcb(home, "--config", str(cfg), "clusters", "add", "dead", "--host", "dead", "--yes")
    assert res.returncode == 1 and "not added" in res.stderr, res.stderr
    assert "refused" in res.stdout and not cfg.exists()
