"""Transports: how hpcbridge runs commands and moves files where the scheduler lives.

``make_transport(cluster)`` picks :class:`LocalTransport` (subprocess) or
:class:`SSHTransport` (one persistent paramiko connection) from the cluster config.
"""

from __future__ import annotations

from ..config import ClusterConfig
from .base import (
    CommandStream,
    RemoteFileError,
    RemoteFileNotFound,
    Transport,
    TransportStats,
    build_command,
    check_argv,
    expand_path,
    script_argv,
    script_input,
)
from .local import LocalTransport
from .ssh import SSHTransport
from .sshconfig import SSHTarget, fingerprint, resolve_target

__all__ = [
    "CommandStream",
    "LocalTransport",
    "RemoteFileError",
    "RemoteFileNotFound",
    "SSHTarget",
    "SSHTransport",
    "Transport",
    "TransportStats",
    "build_command",
    "check_argv",
    "expand_path",
    "fingerprint",
    "make_transport",
    "resolve_target",
    "script_argv",
    "script_input",
]


def make_transport(cluster: ClusterConfig) -> Transport:
    """The transport a cluster's config asks for (nothing connects until first use)."""
    if cluster.transport == "ssh":
        return SSHTransport(cluster)
    return LocalTransport(login_shell=cluster.login_shell, command_timeout=cluster.command_timeout)
