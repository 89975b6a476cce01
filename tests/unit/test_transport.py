"""Unit tests for hpcbridge.transport: quoting (property-based, against real shells), local
transport behaviour, ssh_config resolution, host key policies and error mapping.

Nothing here needs the lab; tests/integration/test_ssh_transport.py covers the real sshd.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcbridge.config import ClusterConfig
from hpcbridge.errors import (
    AuthenticationError,
    CommandFailed,
    CommandTimeout,
    ConfigError,
    HostKeyError,
    HpcBridgeError,
    TransportError,
    UsageError,
)
from hpcbridge.transport import (
    LocalTransport,
    RemoteFileError,
    RemoteFileNotFound,
    SSHTransport,
    Transport,
    build_command,
    check_argv,
    expand_path,
    fingerprint,
    make_transport,
    resolve_target,
)
from hpcbridge.transport.base import (
    SCRIPT_END,
    relative_find_output,
    script_argv,
    script_input,
    tail_bytes,
)
from hpcbridge.transport.sshconfig import AcceptNewHost, RejectUnknownHost, parse_jump

# Arbitrary text arguments; NUL cannot travel in an argv (exec takes C strings).
ARG = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40)
HOSTILE = [
    "",
    " ",
    "a b",
    "it's",
    '"double"',
    "$(touch /tmp/hpcbridge-pwned)",
    "`id`",
    "$HOME",
    "${PATH}",
    "a;b",
    "a|b",
    "a&&b",
    "*",
    "~",
    "~root",
    "-n",
    "--",
    "\\",
    "line\nbreak",
    "tab\there",
    "'\"'\"'",
    "!!",
    "ünïcødé ✓ 日本",
    "\x01\x1b[31m",
    "#comment",
    "a=b",
    "{a,b}",
    "[ab]",
]

PRINTF = ["printf", "%s\\0"]


def _split_nul(stdout: bytes) -> list[str]:
    assert stdout.endswith(b"\x00")
    return [part.decode("utf-8") for part in stdout[:-1].split(b"\x00")]


def _shell_c(shell: str, command: str) -> bytes:
    """What sshd does with the command string: ``$SHELL -c <string>``."""
    done = subprocess.run([shell, "-c", command], capture_output=True, check=True, timeout=20)
    return done.stdout


def ssh_cluster(**kw: Any) -> ClusterConfig:
    base: dict[str, Any] = {
        "name": "t", "backend": "slurm", "transport": "ssh", "host": "127.0.0.1", "port": 1,
        "user": "u", "use_ssh_config": False, "connect_timeout": 2.0,
    }
    base.update(kw)
    return ClusterConfig(**base)


# ------------------------------------------------------------------------- quoting properties


@settings(max_examples=150, deadline=None)
@given(st.lists(ARG, min_size=1, max_size=6))
def test_local_run_passes_arguments_verbatim(args: list[str]) -> None:
    t = LocalTransport()
    result = t.run([*PRINTF, *args], check=True)
    assert result.stdout.split("\x00")[:-1] == args


@settings(max_examples=200, deadline=None)
@given(st.lists(ARG, min_size=1, max_size=6))
def test_ssh_command_string_round_trips_through_bash_c(args: list[str]) -> None:
    command = build_command([*PRINTF, *args])
    assert _split_nul(_shell_c("bash", command)) == args


@settings(max_examples=60, deadline=None)
@given(st.lists(ARG, min_size=1, max_size=6))
def test_ssh_command_string_round_trips_through_posix_sh(args: list[str]) -> None:
    # A login shell that is dash/sh must not interpret anything either.
    sh = shutil.which("dash") or "sh"
    command = build_command([*PRINTF, *args])
    assert _split_nul(_shell_c(sh, command)) == args


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARG, min_size=1, max_size=5))
def test_login_shell_command_string_round_trips(args: list[str]) -> None:
    # Quoted twice: once for the outer $SHELL -c, once for the inner bash -lc.
    command = build_command([*PRINTF, *args], login_shell=True)
    assert command.startswith("bash -lc ")
    assert _split_nul(_shell_c("bash", command)) == args


@settings(max_examples=30, deadline=None)
@given(st.lists(ARG, min_size=1, max_size=5))
def test_local_login_shell_passes_arguments_verbatim(args: list[str]) -> None:
    t = LocalTransport(login_shell=True)
    result = t.run([*PRINTF, *args], check=True)
    assert result.stdout.split("\x00")[:-1] == args


@pytest.mark.parametrize("login_shell", [False, True])
def test_hostile_arguments_are_not_interpreted(tmp_path: Path, login_shell: bool) -> None:
    marker = tmp_path / "pwned"
    hostile = [*HOSTILE, f"$(touch {marker})", f"; touch {marker}", f"`touch {marker}`"]
    command = build_command([*PRINTF, *hostile], login_shell=login_shell)
    assert _split_nul(_shell_c("bash", command)) == hostile
    local = LocalTransport(login_shell=login_shell, home=tmp_path)
    assert local.run([*PRINTF, *hostile]).stdout.split("\x00")[:-1] == hostile
    assert not marker.exists()


def test_build_command_exact_strings() -> None:
    assert build_command(["squeue", "-h", "-o", "%i %T"]) == "squeue -h -o '%i %T'"
    assert build_command(["echo", "it's"]) == "echo 'it'\"'\"'s'"
    assert build_command(["squeue", "-h"], login_shell=True) == "bash -lc 'squeue -h'"
    assert build_command(["echo", "a b"], login_shell=True) == "bash -lc 'echo '\"'\"'a b'\"'\"''"
    assert build_command(["cat", ""]) == "cat ''"


@pytest.mark.parametrize(
    "bad", [[], ["echo", "a\x00b"], "echo hi", b"echo", ["echo", 3], ("\x00",)]
)
def test_check_argv_rejects(bad: Any) -> None:
    with pytest.raises(UsageError):
        check_argv(bad)
    with pytest.raises(UsageError):
        LocalTransport().run(bad)


def test_ssh_run_rejects_nul_before_connecting() -> None:
    t = SSHTransport(ssh_cluster())
    with pytest.raises(UsageError):
        t.run(["echo", "a\x00"])
    assert t.stats.connects == 0 and t.stats.round_trips == 0


# --------------------------------------------------------------------------------- pure helpers


def test_expand_path() -> None:
    assert expand_path("~", "/home/u") == "/home/u"
    assert expand_path("~/a b/c", "/home/u") == "/home/u/a b/c"
    assert expand_path("rel/x", "/home/u") == "/home/u/rel/x"
    assert expand_path("/abs/x", "/home/u") == "/abs/x"
    for bad in ("~root/x", "", "a\x00b"):
        with pytest.raises(UsageError):
            expand_path(bad, "/home/u")


def test_relative_find_output() -> None:
    out = b"/w/d/b\x00/w/d/a b\x00/w/d/sub/c\x00"
    assert relative_find_output("/w/d", out) == ["a b", "b", "sub/c"]
    assert relative_find_output("/", b"/x\x00/y/z\x00") == ["x", "y/z"]
    assert relative_find_output("/w", b"") == []


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"")), st.integers(0, 8))
def test_tail_bytes_matches_tail(tmp_path_factory: pytest.TempPathFactory, data: bytes, n: int) -> None:
    file = tmp_path_factory.mktemp("tail") / "f"
    file.write_bytes(data)
    real = subprocess.run(["tail", "-n", str(n), str(file)], capture_output=True, check=True).stdout
    assert tail_bytes(data, n) == real


def test_local_read_text_tail_of_big_file(tmp_path: Path) -> None:
    lines = [f"line {i}\n" for i in range(50_000)]
    (tmp_path / "log").write_text("".join(lines))
    t = LocalTransport(home=tmp_path)
    assert t.read_text("~/log", tail_lines=3) == "".join(lines[-3:])
    assert t.read_text("log", tail_lines=0) == ""
    assert t.read_text("log") == "".join(lines)


# ------------------------------------------------------------------------------ local transport


def test_local_transport_commands(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    assert isinstance(t, Transport)
    assert t.description == "local"
    r = t.run(["pwd"])
    assert r.ok and r.stdout.strip() == str(tmp_path)  # runs in "home", like ssh
    r = t.run(["cat"], stdin="from stdin ✓")
    assert r.stdout == "from stdin ✓"
    r = t.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_status, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed) as info:
        t.run(["sh", "-c", "echo boom >&2; exit 4"], check=True, what="testing")
    assert info.value.exit_status == 4 and "boom" in str(info.value) and "testing" in str(info.value)
    r = t.run(["definitely-not-a-command-hpcb"])
    assert r.exit_status == 127
    with pytest.raises(CommandFailed):
        t.run(["definitely-not-a-command-hpcb"], check=True)
    assert t.stats.round_trips == 6


def test_local_run_script_one_round_trip(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    script = "".join(f"echo line{i}\n" for i in range(50)) + "echo 'quoted $x' \"$HOME\"\n"
    r = t.run_script(script, check=True)
    assert r.argv == script_argv(False)
    assert r.stdout.splitlines()[:50] == [f"line{i}" for i in range(50)]
    assert t.stats.round_trips == 1


def test_a_script_cut_short_in_transit_runs_not_at_all(tmp_path: Path) -> None:
    """The script runs from a file once it arrived whole: a sender killed mid-way (here: the
    end marker missing) leaves nothing half done."""
    marker = tmp_path / "ran"
    full = script_input(f"touch {shlex.quote(str(marker))}\n")
    cut = full[: -len(SCRIPT_END) - 1]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    res = subprocess.run(list(script_argv(False)), input=cut, capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 71 and "incomplete" in res.stderr and not marker.exists()
    res = subprocess.run(list(script_argv(False)), input=full, capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 0 and marker.exists()
    assert not list(tmp_path.glob("hpcb-script.*"))  # the temp files are gone


def test_local_timeout_kills_process_group(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        # the grandchild `sleep` holds stdout open: only killing the group ends it
        t.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert info.value.transient and "outcome is unknown" in str(info.value)


def test_local_large_output_does_not_hang(tmp_path: Path) -> None:
    t = LocalTransport(home=tmp_path)
    r = t.run(["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x; head -c 1048576 /dev/zero >&2"],
              stdin="y" * 2_000_000, timeout=30)
    assert len(r.stdout) == 1048576 and len(r.stderr) == 1048576


def test_local_file_operations(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    t = LocalTransport(home=home)
    weird = "we ird 'q' \"d\" $(touch x) ü.txt"
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / weird).write_text("hello")
    (src / "sub dir" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "sub dir" / "run.sh").chmod(0o755)

    t.put(src, "~/in/put")
    assert t.list_files("~/in/put") == sorted([weird, "sub dir/run.sh"])
    assert os.access(home / "in/put/sub dir/run.sh", os.X_OK)
    t.put(src / weird, f"~/single/{weird}")
    assert t.read_text(f"single/{weird}") == "hello"
    t.get(f"~/in/put/{weird}", tmp_path / "back" / weird)
    assert (tmp_path / "back" / weird).read_text() == "hello"

    t.write_text("~/w/new.txt", "a\nb\nc\n", mode=0o600)
    assert stat.S_IMODE((home / "w/new.txt").stat().st_mode) == 0o600
    assert t.read_text("~/w/new.txt", tail_lines=2) == "b\nc\n"
    t.write_text("~/w/new.txt", "replaced")
    assert t.read_text("~/w/new.txt") == "replaced"
    assert [p.name for p in (home / "w").iterdir()] == ["new.txt"]  # no temp files left

    assert t.exists("~/w/new.txt") and not t.exists("~/nope")
    t.makedirs("~/a/b/c")
    t.makedirs("~/a/b/c")
    assert (home / "a/b/c").is_dir()
    assert t.expand("~") == str(home)

    for call in (lambda: t.read_text("~/nope"), lambda: t.get("~/nope", tmp_path / "x"),
                 lambda: t.list_files("~/nope"), lambda: t.read_text("nope", tail_lines=2)):
        with pytest.raises(RemoteFileNotFound) as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
        assert isinstance(info.value, HpcBridgeError)
        assert "nope" in str(info.value)


def test_local_file_error_is_clean(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    t = LocalTransport(home=tmp_path)
    with pytest.raises(RemoteFileError) as info:
        t.makedirs("~/file/sub")  # a file in the way
    assert isinstance(info.value, OSError)
    with pytest.raises(RemoteFileError):
        t.list_files("~/file")  # not a directory


def test_make_transport() -> None:
    assert isinstance(make_transport(ClusterConfig(name="local")), LocalTransport)
    ssh = make_transport(ssh_cluster(port=2822))
    assert isinstance(ssh, SSHTransport)
    assert ssh.description == "ssh u@127.0.0.1:2822"
    assert isinstance(ssh, Transport)


# --------------------------------------------------------------------------- ssh_config resolution


SSH_CONFIG = """
Host lab
    HostName 10.1.2.3
    User alice
    Port 2200
    IdentityFile ~/.ssh/lab_key
    ProxyJump bastion

Host bastion
    HostName bastion.example.org
    User bob
    Port 2222
    IdentityFile {keys}/bastion

Host direct
    HostName direct.example.org
    ProxyJump none

Host *
    User fallback
"""


@pytest.fixture
def ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The identity files exist (a missing one is skipped, as OpenSSH does; tested below).
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "lab_key").write_text("key")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "bastion").write_text("key")
    path = tmp_path / "ssh_config"
    path.write_text(SSH_CONFIG.replace("{keys}", str(tmp_path / "keys")))
    return path


def test_resolve_from_ssh_config(ssh_config: Path) -> None:
    cluster = ClusterConfig(name="lab", backend="slurm", transport="ssh", host="lab")
    target = resolve_target(cluster, ssh_config_path=ssh_config)
    assert (target.hostname, target.port, target.user) == ("10.1.2.3", 2200, "alice")
    assert target.identity_files == (os.path.expanduser("~/.ssh/lab_key"),)
    (hop,) = target.jumps
    assert (hop.hostname, hop.port, hop.user, hop.identity_files) == (
        "bastion.example.org", 2222, "bob", (str(ssh_config.parent / "keys" / "bastion"),))
    assert target.describe() == "ssh alice@10.1.2.3:2200 via bob@bastion.example.org:2222"


def test_explicit_cluster_values_win(ssh_config: Path) -> None:
    cluster = ClusterConfig(
        name="lab", backend="slurm", transport="ssh", host="lab", port=22, user="carol",
        identity_file="/keys/mine", proxy_jump="dave@jump.example.org:2022",
    )
    target = resolve_target(cluster, ssh_config_path=ssh_config)
    assert (target.hostname, target.port, target.user) == ("10.1.2.3", 22, "carol")
    assert target.identity_files == ("/keys/mine",)
    (hop,) = target.jumps
    # unknown to ssh config: "Host *" supplies the user only when the spec has none
    assert (hop.hostname, hop.port, hop.user) == ("jump.example.org", 2022, "dave")
    assert hop.identity_files == ("/keys/mine",)


def test_ssh_config_ignored_when_disabled(ssh_config: Path) -> None:
    cluster = ClusterConfig(name="lab", backend="slurm", transport="ssh", host="lab",
                            use_ssh_config=False, user="x")
    target = resolve_target(cluster, ssh_config_path=ssh_config)
    assert (target.hostname, target.port, target.user, target.jumps) == ("lab", 22, "x", ())


def test_proxy_jump_none_and_missing_file(ssh_config: Path, tmp_path: Path) -> None:
    direct = ClusterConfig(name="d", backend="slurm", transport="ssh", host="direct")
    target = resolve_target(direct, ssh_config_path=ssh_config)
    assert target.hostname == "direct.example.org" and target.jumps == ()
    assert target.user == "fallback"
    t = resolve_target(direct, ssh_config_path=tmp_path / "missing")
    assert t.hostname == "direct" and t.port == 22


def test_parse_jump() -> None:
    assert parse_jump("host") == (None, "host", None)
    assert parse_jump("u@host:2200") == ("u", "host", 2200)
    assert parse_jump("ssh://u@host:2200") == ("u", "host", 2200)
    assert parse_jump("[::1]:22") == (None, "::1", 22)
    assert parse_jump("u@[fe80::1]") == ("u", "fe80::1", None)
    with pytest.raises(ConfigError):
        parse_jump("host:notaport")


def test_chained_proxy_jump(tmp_path: Path) -> None:
    cluster = ClusterConfig(name="c", backend="slurm", transport="ssh", host="target",
                            use_ssh_config=False, user="me", proxy_jump="a@one,two:2022")
    target = resolve_target(cluster, ssh_config_path=tmp_path / "none")
    assert [(h.user, h.hostname, h.port) for h in target.jumps] == [
        ("a", "one", 22), ("me", "two", 2022)]


# ---------------------------------------------------------------------------- host key policies


def test_reject_unknown_host_names_fingerprint_and_fix() -> None:
    target = resolve_target(ssh_cluster(port=2822))
    key = paramiko.Ed25519Key.from_private_key_file(_new_key_file())
    policy = RejectUnknownHost(target, "/x/known_hosts")
    with pytest.raises(HostKeyError) as info:
        policy.missing_host_key(paramiko.SSHClient(), "[127.0.0.1]:2822", key)
    text = str(info.value)
    assert "127.0.0.1:2822" in text and fingerprint(key) in text
    assert "ssh-keyscan -p 2822 127.0.0.1 >> /x/known_hosts" in text
    assert "accept_new_host_keys" in text
    assert not info.value.transient


def test_accept_new_host_appends_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    known = tmp_path / "sub" / "known_hosts"
    target = resolve_target(ssh_cluster(port=2822))
    key = paramiko.Ed25519Key.from_private_key_file(_new_key_file())
    client = paramiko.SSHClient()
    with caplog.at_level("WARNING"):
        AcceptNewHost(target, str(known)).missing_host_key(client, "[127.0.0.1]:2822", key)
    assert known.read_text() == f"[127.0.0.1]:2822 ssh-ed25519 {key.get_base64()}\n"
    assert "accepted NEW host key" in caplog.text and fingerprint(key) in caplog.text
    loaded = paramiko.HostKeys(str(known))
    assert loaded.lookup("[127.0.0.1]:2822") is not None


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen not installed")
    path = _new_key_file()
    key = paramiko.Ed25519Key.from_private_key_file(path)
    pub = tmp_path / "k.pub"
    pub.write_text(f"ssh-ed25519 {key.get_base64()}\n")
    out = subprocess.run([keygen, "-lf", str(pub)], capture_output=True, text=True, check=True)
    assert fingerprint(key) in out.stdout


_KEY_CACHE: dict[str, str] = {}


def _new_key_file() -> str:
    """A fresh ed25519 private key file in OpenSSH format (paramiko itself cannot generate
    ed25519 keys; its dependency ``cryptography`` can)."""
    if "k" not in _KEY_CACHE:
        import tempfile

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        path = os.path.join(tempfile.mkdtemp(), "id")
        with open(path, "wb") as fh:
            fh.write(pem)
        _KEY_CACHE["k"] = path
    return _KEY_CACHE["k"]


# ------------------------------------------------------------------------------- error mapping


def test_connect_error_mapping() -> None:
    t = SSHTransport(ssh_cluster(port=2822, identity_file="/k/id"))
    hop = t.target
    key = paramiko.Ed25519Key.from_private_key_file(_new_key_file())
    other = paramiko.RSAKey.generate(1024)

    auth = t._map_connect_error(hop, paramiko.AuthenticationException("Authentication failed."))
    assert isinstance(auth, AuthenticationError) and not auth.transient
    assert "u@127.0.0.1:2822" in str(auth) and "/k/id" in str(auth)

    none = t._map_connect_error(hop, paramiko.SSHException("No authentication methods available"))
    assert isinstance(none, AuthenticationError)

    enc = t._map_connect_error(hop, paramiko.PasswordRequiredException("private key file is encrypted"))
    assert isinstance(enc, AuthenticationError) and "ssh-agent" in str(enc)

    changed = t._map_connect_error(hop, paramiko.BadHostKeyException("127.0.0.1", other, key))
    assert isinstance(changed, HostKeyError) and not changed.transient
    assert "CHANGED" in str(changed) and fingerprint(key) in str(changed)
    assert fingerprint(other) in str(changed) and "ssh-keygen -R '[127.0.0.1]:2822'" in str(changed)

    for exc in (paramiko.SSHException("Error reading SSH protocol banner"), EOFError(),
                ConnectionResetError(104, "Connection reset by peer"), TimeoutError()):
        mapped = t._map_connect_error(hop, exc)
        assert type(mapped) is TransportError and mapped.transient, exc
        assert "127.0.0.1:2822" in str(mapped)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_transient_transport_error() -> None:
    port = _unused_port()
    t = SSHTransport(ssh_cluster(port=port), retry_backoff=0.01)
    with pytest.raises(TransportError) as info:
        t.run(["true"])
    assert type(info.value) is TransportError and info.value.transient
    assert f"127.0.0.1:{port}" in str(info.value) and "refused" in str(info.value)
    assert "sshd" in str(info.value)  # the hint
    assert t.stats.connects == 0 and t.stats.round_trips == 0


def test_unresolvable_host_is_transport_error() -> None:
    t = SSHTransport(ssh_cluster(host="no-such-host.invalid", port=22), connect_attempts=1)
    with pytest.raises(TransportError) as info:
        t.connect()
    assert "no-such-host.invalid" in str(info.value)


def test_not_an_ssh_server_is_transport_error() -> None:
    # Something that accepts TCP and closes immediately (a crashed/overloaded sshd looks so).
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    import threading

    def serve() -> None:
        for _ in range(3):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 400 nope\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = srv.getsockname()[1]
    t = SSHTransport(ssh_cluster(port=port), retry_backoff=0.01)
    try:
        with pytest.raises(TransportError) as info:
            t.connect()
        assert info.value.transient and f"127.0.0.1:{port}" in str(info.value)
    finally:
        srv.close()


def test_missing_identity_file_is_authentication_error(tmp_path: Path) -> None:
    # Checked before dialing: no network needed, and not retried (not transient).
    t = SSHTransport(ssh_cluster(port=_unused_port(), identity_file=str(tmp_path / "nokey")))
    with pytest.raises(AuthenticationError) as info:
        t.connect()
    assert "nokey" in str(info.value) and not info.value.transient


# --------------------------------------------------------------- never re-run a started command


class _FakeChannel:
    def __init__(self, fail_exec: bool) -> None:
        self.fail_exec = fail_exec
        self.execs: list[str] = []
        self.closed = False

    def get_transport(self) -> None:
        return None

    def exec_command(self, command: str) -> None:
        self.execs.append(command)
        if self.fail_exec:
            raise EOFError()

    def close(self) -> None:
        self.closed = True


class _FakeParamikoTransport:
    def __init__(self, channels: list[Any]) -> None:
        self.channels = channels
        self.opens = 0

    def open_session(self, timeout: float | None = None) -> Any:
        self.opens += 1
        item = self.channels.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def is_active(self) -> bool:
        return True


def test_failure_after_exec_is_outcome_unknown_and_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    chan = _FakeChannel(fail_exec=True)
    fake = _FakeParamikoTransport([chan, _FakeChannel(fail_exec=False)])
    t = SSHTransport(ssh_cluster(port=2822), retry_backoff=0.0)
    monkeypatch.setattr(t, "_ensure", lambda: fake)
    with pytest.raises(TransportError) as info:
        t.run(["sbatch", "job.sh"])
    assert "outcome is unknown" in str(info.value)
    assert chan.execs == ["sbatch job.sh"] and chan.closed
    assert fake.opens == 1  # no second attempt
    assert t.stats.round_trips == 1


def test_failure_before_exec_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    chan = _FakeChannel(fail_exec=True)
    fake = _FakeParamikoTransport([EOFError(), paramiko.SSHException("SSH session not active"), chan])
    t = SSHTransport(ssh_cluster(port=2822), retry_backoff=0.0)
    monkeypatch.setattr(t, "_ensure", lambda: fake)
    with pytest.raises(TransportError):
        t.run(["sbatch", "job.sh"])
    assert fake.opens == 3 and chan.execs == ["sbatch job.sh"]  # sent exactly once


def test_channel_open_failures_exhaust_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeParamikoTransport([EOFError(), EOFError(), EOFError()])
    t = SSHTransport(ssh_cluster(port=2822), retry_backoff=0.0)
    monkeypatch.setattr(t, "_ensure", lambda: fake)
    with pytest.raises(TransportError) as info:
        t.run(["true"])
    assert "cannot open a session channel" in str(info.value) and info.value.transient
    assert t.stats.round_trips == 0


def test_a_missing_identity_file_in_ssh_config_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSSH tries the IdentityFiles that exist (a `Host *` default may name keys never made)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "real").write_text("key")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host c\n    IdentityFile {tmp_path}/absent\n    IdentityFile {tmp_path}/real\n")
    cluster = ClusterConfig(name="c", backend="slurm", transport="ssh", host="c")
    assert resolve_target(cluster, ssh_config_path=cfg).identity_files == (str(tmp_path / "real"),)


def test_proxy_command_is_refused_with_the_alternative(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host c\n    ProxyCommand ssh -W %h:%p bastion\n")
    cluster = ClusterConfig(name="c", backend="slurm", transport="ssh", host="c")
    with pytest.raises(ConfigError, match="ProxyCommand") as info:
        resolve_target(cluster, ssh_config_path=cfg)
    assert "proxy_jump" in (info.value.hint or "")
    # With a ProxyJump for the same host the ProxyCommand is not needed: no error.
    with_jump = ClusterConfig(name="c", backend="slurm", transport="ssh", host="c", proxy_jump="b")
    assert resolve_target(with_jump, ssh_config_path=cfg).jumps[0].alias == "b"


def test_a_caller_that_waited_for_a_failed_connect_gets_that_failure_without_dialing_again() -> None:
    # A runtime reads a cluster's limits in a thread while the submission goes on: when the
    # host is down, the second user of the connection must not spend the attempts again.
    import threading

    t = SSHTransport(ssh_cluster(port=_unused_port()), connect_attempts=2, retry_backoff=0.01)
    conn = t._conn
    dials: list[str] = []
    release, b_waits = threading.Event(), threading.Event()

    def dial() -> Any:
        dials.append(threading.current_thread().name)
        release.wait(10)
        raise TransportError("connection refused")

    class SpiedLock:
        def __init__(self, lock: Any) -> None:
            self.lock = lock

        def __enter__(self) -> Any:
            if threading.current_thread().name == "B":
                b_waits.set()
            return self.lock.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            return self.lock.__exit__(*exc)

    conn._connect_once = dial  # type: ignore[method-assign]
    conn.lock = SpiedLock(conn.lock)  # type: ignore[assignment]
    raised: dict[str, BaseException] = {}

    def use(name: str) -> None:
        try:
            t.connect()
        except TransportError as exc:
            raised[name] = exc

    a = threading.Thread(target=use, args=("A",), name="A")
    a.start()
    deadline = time.monotonic() + 10
    while not dials and time.monotonic() < deadline:
        time.sleep(0.005)
    b = threading.Thread(target=use, args=("B",), name="B")
    b.start()
    assert b_waits.wait(10)
    release.set()
    a.join(10)
    b.join(10)
    assert dials == ["A", "A"]  # A's two attempts; B dialled nothing
    assert raised["A"] is raised["B"]
    t.close()
