"""Where to connect and how to trust the server: ~/.ssh/config resolution and host key policy.

Pure except for reading the ssh config file and appending to known_hosts on an explicitly
allowed first contact.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from ..config import ClusterConfig
from ..errors import ConfigError, HostKeyError

log = logging.getLogger(__name__)

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class SSHTarget:
    """One resolved SSH endpoint: the final host or one ProxyJump hop."""

    alias: str  # the name as written in the config (Host pattern target)
    hostname: str  # what we actually connect to (HostName)
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    jumps: tuple[SSHTarget, ...] = ()  # hops, first is connected to directly

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    def describe(self) -> str:
        via = f" via {','.join(h.user + '@' + h.address for h in self.jumps)}" if self.jumps else ""
        return f"ssh {self.user}@{self.address}{via}"


def known_host_name(hostname: str, port: int) -> str:
    """The key under which OpenSSH (and paramiko) file a host in known_hosts."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_ssh_config(path: str | os.PathLike[str] | None) -> paramiko.SSHConfig | None:
    file = Path(os.path.expanduser(os.fspath(path or DEFAULT_SSH_CONFIG)))
    if not file.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(file))
    except (OSError, paramiko.ConfigParseError) as exc:
        raise ConfigError(f"{file}: cannot read ssh config: {exc}") from None


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` or ``ssh://[user@]host[:port]`` (IPv6 as ``[::1]:22``)."""
    text = spec.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):]
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], spec)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, spec)
    else:
        host = text
    if not host:
        raise ConfigError(f"proxy_jump {spec!r}: no host")
    return user or None, host, port


def _port(text: str, where: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{where!r}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{where!r}: port {port} out of range")
    return port


def _lookup(cfg: paramiko.SSHConfig | None, alias: str) -> dict[str, Any]:
    if cfg is None:
        return {}
    return dict(cfg.lookup(alias))


def _existing_identities(opts: dict[str, Any]) -> tuple[str, ...]:
    """IdentityFile entries of ~/.ssh/config that exist: OpenSSH skips a missing one (a
    ``Host *`` default like ~/.ssh/id_ecdsa that was never made) and tries the next."""
    paths = (os.path.expanduser(p) for p in opts.get("identityfile") or ())
    return tuple(p for p in paths if os.path.exists(p))


def resolve_target(
    cluster: ClusterConfig,
    *,
    ssh_config_path: str | os.PathLike[str] | None = None,
) -> SSHTarget:
    """Combine the cluster config with ``~/.ssh/config`` (OpenSSH semantics: ``host`` is looked
    up as a Host alias). Values set explicitly in the cluster config win over ssh config ones."""
    if not cluster.host:
        raise ConfigError(f"cluster {cluster.name!r}: transport 'ssh' needs host")
    cfg = load_ssh_config(ssh_config_path) if cluster.use_ssh_config else None
    opts = _lookup(cfg, cluster.host)
    hostname = str(opts.get("hostname") or cluster.host)
    port = cluster.port or int(opts.get("port") or 22)
    user = cluster.user or opts.get("user") or getpass.getuser()
    if cluster.identity_file:
        identities: tuple[str, ...] = (os.path.expanduser(cluster.identity_file),)
    else:
        identities = _existing_identities(opts)
    jump_spec = cluster.proxy_jump or opts.get("proxyjump")
    proxy_command = str(opts.get("proxycommand") or "")
    if proxy_command and proxy_command.lower() != "none" and not jump_spec:
        raise ConfigError(
            f"cluster {cluster.name!r}: ~/.ssh/config gives host {cluster.host!r} a ProxyCommand "
            f"({proxy_command!r}), which hpcbridge does not run",
            hint="use ProxyJump in ~/.ssh/config or proxy_jump = 'user@bastion' in the cluster's "
                 "config (the same hop, without a shell command)",
        )
    jumps: list[SSHTarget] = []
    if jump_spec and str(jump_spec).lower() != "none":
        for hop in str(jump_spec).split(","):
            hop_user, hop_alias, hop_port = parse_jump(hop)
            hop_opts = _lookup(cfg, hop_alias)
            hop_ids = _existing_identities(hop_opts)
            jumps.append(
                SSHTarget(
                    alias=hop_alias,
                    hostname=str(hop_opts.get("hostname") or hop_alias),
                    port=hop_port or int(hop_opts.get("port") or 22),
                    user=hop_user or hop_opts.get("user") or user,
                    # Without its own IdentityFile a hop gets the cluster's key to try too.
                    identity_files=hop_ids or identities,
                )
            )
    return SSHTarget(cluster.host, hostname, int(port), str(user), identities, tuple(jumps))


# ----------------------------------------------------------------------------- host keys

_append_lock = threading.Lock()


def keyscan_hint(target: SSHTarget, known_hosts: str) -> str:
    port = f"-p {target.port} " if target.port != 22 else ""
    return (
        f"check the fingerprint with the cluster's admins, then run "
        f"`ssh-keyscan {port}{target.hostname} >> {known_hosts}` "
        f"(or set accept_new_host_keys = true for this cluster to trust it on first use)"
    )


class RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """Like paramiko's RejectPolicy, but raises our HostKeyError with the evidence and fix."""

    def __init__(self, target: SSHTarget, known_hosts: str) -> None:
        self.target = target
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        files = DEFAULT_KNOWN_HOSTS
        if os.path.expanduser(self.known_hosts) != os.path.expanduser(DEFAULT_KNOWN_HOSTS):
            files += f" nor {self.known_hosts}"
        raise HostKeyError(
            f"host key of {self.target.address} is unknown (not in {files}); "
            f"it offered {key.get_name()} {fingerprint(key)}",
            hint=keyscan_hint(self.target, self.known_hosts),
        )


class AcceptNewHost(paramiko.MissingHostKeyPolicy):
    """Trust-on-first-use (OpenSSH ``StrictHostKeyChecking=accept-new``): an UNKNOWN key is
    accepted and appended to ``known_hosts``. A known host with a different key still fails,
    because paramiko raises BadHostKeyException before ever asking the policy."""

    def __init__(self, target: SSHTarget, known_hosts: str) -> None:
        self.target = target
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = Path(os.path.expanduser(self.known_hosts))
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        # Append instead of paramiko's save_host_keys(): that rewrites the whole file and
        # loses comments, markers and hashed entries other tools put there.
        with _append_lock:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            needs_newline = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
            with open(path, "a", encoding="ascii") as fh:
                fh.write(("\n" if needs_newline else "") + line)
        log.warning(
            "accepted NEW host key for %s (%s %s) and saved it to %s (accept_new_host_keys = true)",
            hostname, key.get_name(), fingerprint(key), path,
        )


def changed_key_error(target: SSHTarget, exc: paramiko.BadHostKeyException, known_hosts: str) -> HostKeyError:
    name = known_host_name(target.hostname, target.port)
    return HostKeyError(
        f"HOST KEY OF {target.address} HAS CHANGED: known_hosts has "
        f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the server offered "
        f"{exc.key.get_name()} {fingerprint(exc.key)}. Someone may be intercepting the "
        "connection; refusing to connect",
        hint=(
            "if the cluster was legitimately re-installed (ask its admins), remove the old key "
            f"with `ssh-keygen -R '{name}' -f {known_hosts}` and add the new one with "
            f"`ssh-keyscan{' -p ' + str(target.port) if target.port != 22 else ''} "
            f"{target.hostname} >> {known_hosts}`"
        ),
    )
