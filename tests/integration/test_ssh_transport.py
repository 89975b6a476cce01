"""SSHTransport against the lab's real sshd (scripts/slurm-lab up).

Skipped with a reason when the lab is not up, except under CI=true, where a missing lab is a
failure (CI must not go green by skipping everything).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.config import ClusterConfig, load_config
from hpcbridge.errors import (
    AuthenticationError,
    CommandFailed,
    CommandTimeout,
    HostKeyError,
    TransportError,
)
from hpcbridge.transport import RemoteFileError, RemoteFileNotFound, SSHTransport

pytestmark = pytest.mark.integration

LAB_DIR = Path(os.environ.get("HPCBRIDGE_LAB_DIR", "/tmp/hpcbridge-lab"))

HOSTILE = [
    "", " ", "a b", "it's", '"dq"', "$(touch /tmp/hpcbridge-pwned)", "`id`", "$HOME", "a;b",
    "a|b", "*", "~", "-n", "--", "\\", "line\nbreak", "tab\there", "'\"'\"'", "!!",
    "ünïcødé ✓ 日本", "#x", "{a,b}", "\x01",
]
WEIRD_NAME = "we ird 'q' \"d\" $(touch pwned) ü ✓.txt"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"lab required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def lab() -> ClusterConfig:
    path = LAB_DIR / "hpcbridge.toml"
    if not path.is_file():
        _unavailable(f"lab not up: {path} missing (run `scripts/slurm-lab up`)")
    cluster = load_config(path).cluster("lab")
    assert cluster.host and cluster.port
    try:
        socket.create_connection((cluster.host, cluster.port), timeout=2).close()
    except OSError as exc:
        _unavailable(f"lab sshd not reachable at {cluster.host}:{cluster.port}: {exc}")
    return cluster


@pytest.fixture
def ssh(lab: ClusterConfig) -> Iterator[SSHTransport]:
    t = SSHTransport(lab)
    yield t
    t.close()


@pytest.fixture
def remote_dir(ssh: SSHTransport) -> Iterator[str]:
    path = ssh.expand(f"~/hpcbridge-transport-test-{secrets.token_hex(4)}")
    ssh.makedirs(path)
    yield path
    ssh.run(["rm", "-rf", "--", path])


def _key_file(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path = tmp_path / "wrong_id_ed25519"
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------ commands


@pytest.mark.parametrize("login_shell", [False, True])
def test_hostile_arguments_round_trip(lab: ClusterConfig, login_shell: bool) -> None:
    with SSHTransport(dataclasses.replace(lab, login_shell=login_shell)) as t:
        r = t.run(["printf", "%s\\0", *HOSTILE], check=True)
        assert r.stdout.split("\x00")[:-1] == HOSTILE
        assert not t.exists("/tmp/hpcbridge-pwned")


def test_exit_status_stderr_stdin(ssh: SSHTransport) -> None:
    r = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.exit_status, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert ssh.run(["cat"], stdin="through stdin ✓\n").stdout == "through stdin ✓\n"
    with pytest.raises(CommandFailed) as info:
        ssh.run(["ls", "/definitely/not/here"], check=True, what="listing")
    assert info.value.exit_status != 0 and "not/here" in info.value.stderr
    assert ssh.run(["no-such-command-hpcb"]).exit_status == 127


def test_200_execs_reuse_one_connection(ssh: SSHTransport, record_property: object) -> None:
    started = time.perf_counter()
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        assert ssh.run(["echo", str(i)]).stdout == f"{i}\n"
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    assert ssh.stats.connects == 1
    assert ssh.stats.round_trips == 200
    print(f"200 execs: {total * 1000:.0f} ms, median {statistics.median(times) * 1000:.2f} ms")
    assert statistics.median(times) < 0.040  # ~3-4 ms with TCP_NODELAY; 48 ms without


def test_run_script_is_one_round_trip(ssh: SSHTransport) -> None:
    script = "set -e\n" + "".join(f"echo 'line {i}' \"$((i={i}))\"\n" for i in range(50))
    before = ssh.stats.round_trips
    r = ssh.run_script(script, check=True)
    assert ssh.stats.round_trips - before == 1
    assert r.stdout.splitlines() == [f"line {i} {i}" for i in range(50)]


def test_large_output_does_not_hang(ssh: SSHTransport) -> None:
    r = ssh.run(
        ["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x; head -c 1048576 /dev/zero | tr '\\0' y >&2"],
        timeout=60,
    )
    assert r.stdout == "x" * 1048576 and r.stderr == "y" * 1048576
    # large stdin (written from a thread) while the remote writes a large stdout
    big = "z" * 3_000_000
    r = ssh.run(["cat"], stdin=big, timeout=60)
    assert r.stdout == big


def test_timeout(ssh: SSHTransport) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        ssh.run(["sleep", "20"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert "outcome is unknown" in str(info.value)
    assert ssh.run(["true"]).ok  # the connection is still usable
    assert ssh.stats.connects == 1


# ---------------------------------------------------------------------------------- reconnects


def test_dropped_connection_reconnects_transparently(ssh: SSHTransport) -> None:
    assert ssh.run(["true"]).ok
    client = ssh.paramiko_client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    transport.close()  # the connection is gone (like a server restart or network drop)
    assert ssh.run(["echo", "again"]).stdout == "again\n"
    assert ssh.stats.connects == 2 and ssh.stats.reconnects == 1
    # SFTP is re-opened on the new connection too
    assert ssh.exists("~")


def test_socket_dropped_under_paramiko_reconnects(ssh: SSHTransport) -> None:
    assert ssh.run(["true"]).ok
    client = ssh.paramiko_client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)  # paramiko only notices on its next read/write
    assert ssh.run(["echo", "again"]).stdout == "again\n"
    assert ssh.stats.connects == 2


def test_drop_mid_command_is_not_retried(ssh: SSHTransport, remote_dir: str) -> None:
    marker = f"{remote_dir}/ran"
    client = ssh.paramiko_client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    timer = threading.Timer(1.0, transport.close)
    timer.start()
    try:
        with pytest.raises(TransportError) as info:
            ssh.run(["sh", "-c", 'echo x >> "$1"; sleep 3', "sh", marker], timeout=30)
    finally:
        timer.cancel()
    assert "outcome is unknown" in str(info.value)
    time.sleep(0.2)
    assert ssh.read_text(marker) == "x\n"  # ran exactly once, never re-sent


# ----------------------------------------------------------------------------------- SFTP files


def test_file_operations_with_hostile_names(ssh: SSHTransport, remote_dir: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / WEIRD_NAME).write_text("hello ✓\n")
    (src / "sub dir" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "sub dir" / "run.sh").chmod(0o755)
    (src / "empty").mkdir()

    ssh.put(src, f"{remote_dir}/in put")
    assert ssh.list_files(f"{remote_dir}/in put") == sorted([WEIRD_NAME, "sub dir/run.sh"])
    assert ssh.exists(f"{remote_dir}/in put/empty")
    assert ssh.run([f"{remote_dir}/in put/sub dir/run.sh"]).stdout == "ran\n"  # mode kept

    ssh.put(src / WEIRD_NAME, f"{remote_dir}/new parent/{WEIRD_NAME}")  # creates parents
    assert ssh.read_text(f"{remote_dir}/new parent/{WEIRD_NAME}") == "hello ✓\n"
    ssh.get(f"{remote_dir}/in put/{WEIRD_NAME}", tmp_path / "back" / WEIRD_NAME)
    assert (tmp_path / "back" / WEIRD_NAME).read_text() == "hello ✓\n"

    log = "".join(f"line {i}\n" for i in range(1000))
    ssh.write_text(f"{remote_dir}/logs/{WEIRD_NAME}", log, mode=0o600)
    assert ssh.read_text(f"{remote_dir}/logs/{WEIRD_NAME}", tail_lines=2) == "line 998\nline 999\n"
    assert ssh.read_text(f"{remote_dir}/logs/{WEIRD_NAME}") == log
    mode = ssh.run(["stat", "-c", "%a", f"{remote_dir}/logs/{WEIRD_NAME}"]).stdout.strip()
    assert mode == "600"
    ssh.write_text(f"{remote_dir}/logs/{WEIRD_NAME}", "replaced")
    assert ssh.read_text(f"{remote_dir}/logs/{WEIRD_NAME}") == "replaced"
    assert ssh.list_files(f"{remote_dir}/logs") == [WEIRD_NAME]  # no temp files left

    assert not ssh.exists(f"{remote_dir}/pwned") and not ssh.exists("~/pwned")
    assert ssh.exists(remote_dir) and not ssh.exists(f"{remote_dir}/nope")
    home = ssh.expand("~")
    assert home.startswith("/") and ssh.expand("~/x y") == f"{home}/x y"
    assert ssh.expand("rel") == f"{home}/rel"
    ssh.makedirs(f"{remote_dir}/a/b c/d")
    ssh.makedirs(f"{remote_dir}/a/b c/d")
    assert ssh.exists(f"{remote_dir}/a/b c/d")


def test_missing_remote_files(ssh: SSHTransport, remote_dir: str, tmp_path: Path) -> None:
    missing = f"{remote_dir}/nope"
    calls = [
        lambda: ssh.read_text(missing),
        lambda: ssh.read_text(missing, tail_lines=3),
        lambda: ssh.get(missing, tmp_path / "x"),
        lambda: ssh.list_files(missing),
    ]
    for call in calls:
        with pytest.raises(RemoteFileNotFound) as info:
            call()
        assert isinstance(info.value, FileNotFoundError) and missing in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial local file from the failed get
    ssh.write_text(f"{remote_dir}/file", "x")
    with pytest.raises(RemoteFileError):
        ssh.list_files(f"{remote_dir}/file")
    with pytest.raises(RemoteFileError):
        ssh.makedirs(f"{remote_dir}/file/sub")


# ----------------------------------------------------------------------------- trust and auth


def test_unknown_host_key_is_rejected(lab: ClusterConfig, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = SSHTransport(dataclasses.replace(lab, known_hosts=str(empty)))
    with pytest.raises(HostKeyError) as info:
        t.connect()
    text = str(info.value)
    assert f"{lab.host}:{lab.port}" in text and "SHA256:" in text
    assert f"ssh-keyscan -p {lab.port} {lab.host} >> {empty}" in text
    assert not info.value.transient
    assert empty.read_text() == ""


def test_changed_host_key_is_rejected_even_with_accept_new(lab: ClusterConfig, tmp_path: Path) -> None:
    import paramiko

    fake = paramiko.Ed25519Key.from_private_key_file(str(_key_file(tmp_path)))
    known = tmp_path / "known_hosts"
    known.write_text(f"[{lab.host}]:{lab.port} ssh-ed25519 {fake.get_base64()}\n")
    for accept in (False, True):
        t = SSHTransport(dataclasses.replace(lab, known_hosts=str(known), accept_new_host_keys=accept))
        with pytest.raises(HostKeyError) as info:
            t.connect()
        assert "CHANGED" in str(info.value) and "ssh-keygen -R" in str(info.value)
    assert known.read_text().count("\n") == 1  # untouched


def test_accept_new_host_key_saves_it(lab: ClusterConfig, tmp_path: Path) -> None:
    known = tmp_path / "kh" / "known_hosts"
    with SSHTransport(dataclasses.replace(lab, known_hosts=str(known), accept_new_host_keys=True)) as t:
        assert t.run(["true"]).ok
    line = known.read_text()
    assert line.startswith(f"[{lab.host}]:{lab.port} ssh-ed25519 ")
    # the saved key is trusted afterwards, without accept_new
    with SSHTransport(dataclasses.replace(lab, known_hosts=str(known))) as t:
        assert t.run(["true"]).ok
    assert lab.known_hosts and line == Path(lab.known_hosts).read_text()


def test_wrong_key_is_authentication_error(lab: ClusterConfig, tmp_path: Path) -> None:
    key = _key_file(tmp_path)
    t = SSHTransport(dataclasses.replace(lab, identity_file=str(key)))
    with pytest.raises(AuthenticationError) as info:
        t.connect()
    text = str(info.value)
    assert f"{lab.user}@{lab.host}:{lab.port}" in text and str(key) in text
    assert not info.value.transient
    assert t.stats.connects == 0


def test_nothing_listening_is_transient(lab: ClusterConfig) -> None:
    port = _unused_port()
    t = SSHTransport(dataclasses.replace(lab, port=port), retry_backoff=0.01)
    with pytest.raises(TransportError) as info:
        t.run(["true"])
    assert type(info.value) is TransportError and info.value.transient
    assert f"{lab.host}:{port}" in str(info.value)


def test_proxy_jump_through_the_lab_itself(lab: ClusterConfig) -> None:
    jump = f"{lab.user}@{lab.host}:{lab.port}"
    with SSHTransport(dataclasses.replace(lab, proxy_jump=jump)) as t:
        assert "via" in t.description
        assert t.run(["echo", "tunnelled"]).stdout == "tunnelled\n"
        assert t.exists("~")
        assert t.stats.connects == 1
