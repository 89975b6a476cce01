"""The cluster doctor: every check between "the config parses" and "Slurm takes our jobs".

Each check is a function of one :class:`Probe` (what earlier checks learnt) returning a
:class:`CheckResult` (``ok`` / ``fail`` / ``skip``, a detail and, on failure, the fix).
:func:`run_checks` runs them in order; a check whose prerequisite did not pass is reported as
``skip`` with the reason, and one failure never stops the checks that do not depend on it.
Everything goes through the transport layer (``make_transport``), so a test can hand in a
:class:`~hpcbridge.testing.ReplayTransport`; paramiko is imported only by the SSH checks.
"""

from __future__ import annotations

import getpass
import os
import posixpath
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import ClusterConfig, Config, load_config
from .errors import HpcBridgeError
from .models import CommandResult
from .slurm import limits as sl
from .slurm.commands import command_path, scrub_env

if TYPE_CHECKING:
    from .transport import SSHTarget, Transport

OK, FAIL, SKIP = "ok", "fail", "skip"
MAX_CLOCK_OFFSET = 10.0  # seconds; Slurm's Submit/Start/End are compared with local time
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo")
FIND_COMMANDS = 'for c do command -v "$c" >/dev/null 2>&1 || printf "%s\\n" "$c"; done'
# slurmctld's RPC rate limiter defaults (SlurmctldParameters=rl_enable, man slurm.conf)
RL_DEFAULT_REFILL_RATE, RL_DEFAULT_REFILL_PERIOD, RL_DEFAULT_BUCKET = 2, 1, 30


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # OK | FAIL | SKIP
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class ClusterReport:
    cluster: str
    description: str
    checks: tuple[CheckResult, ...]
    partitions: tuple[sl.Partition, ...] = ()
    limits: sl.ClusterLimits | None = None

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster, "description": self.description, "ok": not self.failed,
            "checks": [c.to_dict() for c in self.checks],
            "partitions": [p.name for p in self.partitions],
            "limits": None if self.limits is None else {
                "max_array_size": self.limits.max_array_size,
                "max_job_count": self.limits.max_job_count,
                "max_submit_jobs": self.limits.max_submit_jobs,
            },
        }  # fmt: skip


class CheckFailed(Exception):
    """Raised inside a check: the check fails with this detail and fix."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


@dataclass
class Probe:
    """What the checks share: the cluster, how to reach it, and what was learnt so far."""

    cluster: ClusterConfig
    config_path: str | None = None
    ssh_config_path: str | None = None
    make_transport: Callable[[ClusterConfig], Transport] | None = None
    target: SSHTarget | None = None
    transport: Transport | None = None
    user: str = ""
    slurm_config: dict[str, str] = field(default_factory=dict)
    partitions: list[sl.Partition] = field(default_factory=list)
    limits: sl.ClusterLimits | None = None

    @property
    def ssh(self) -> bool:
        return self.cluster.transport == "ssh"

    @property
    def slurm(self) -> bool:
        return self.cluster.backend == "slurm"

    def bin(self, name: str) -> str:
        return command_path(name, self.cluster.slurm_bin_dir)

    def run(self, argv: Sequence[str], what: str) -> CommandResult:
        assert self.transport is not None
        return self.transport.run(scrub_env(argv), what=what, timeout=self.cluster.command_timeout)

    def dial_hop(self) -> SSHTarget:
        """The endpoint this machine connects to itself: the first jump host, if any."""
        assert self.target is not None
        return self.target.jumps[0] if self.target.jumps else self.target


# ----------------------------------------------------------------------------- the checks


def check_config(p: Probe) -> CheckResult:
    c = p.cluster
    where = f" ({p.config_path})" if p.config_path else ""
    detail = f"cluster {c.name}: backend {c.backend}, transport {c.transport}{where}"
    if p.ssh:
        from .transport import resolve_target

        p.target = resolve_target(c, ssh_config_path=p.ssh_config_path)
        p.user = p.target.user
        detail += f"; {p.target.describe()}"
    else:
        p.user = getpass.getuser()
    return CheckResult("config", OK, detail)


def check_resolve(p: Probe) -> CheckResult:
    hop = p.dial_hop()
    try:
        infos = socket.getaddrinfo(hop.hostname, hop.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CheckFailed(
            f"cannot resolve {hop.hostname!r} ({exc.strerror})",
            "check host (and HostName in ~/.ssh/config), DNS and your network/VPN",
        ) from None
    addrs = sorted({str(i[4][0]) for i in infos})
    return CheckResult("resolve", OK, f"{hop.hostname} -> {', '.join(addrs)}")


def check_tcp(p: Probe) -> CheckResult:
    hop = p.dial_hop()
    t0 = time.monotonic()
    try:
        socket.create_connection((hop.hostname, hop.port), timeout=p.cluster.connect_timeout).close()
    except ConnectionRefusedError:
        raise CheckFailed(f"connection to {hop.address} refused: nothing listens there",
                          "is sshd running on that port? check host and port (Port in ~/.ssh/config)") from None
    except TimeoutError:
        raise CheckFailed(f"connecting to {hop.address} timed out after {p.cluster.connect_timeout:g} s",
                          "check network/VPN/firewall and that host and port are right") from None
    except OSError as exc:
        raise CheckFailed(f"cannot connect to {hop.address}: {exc.strerror or exc}",
                          "check network/VPN/firewall and that host and port are right") from None
    return CheckResult("tcp", OK, f"{hop.address} accepts connections ({(time.monotonic() - t0) * 1000:.0f} ms)")


def check_host_key(p: Probe) -> CheckResult:
    from .transport import sshconfig

    hop = p.dial_hop()
    known_hosts = p.cluster.known_hosts or sshconfig.DEFAULT_KNOWN_HOSTS
    offered = server_host_key(hop.hostname, hop.port, p.cluster.connect_timeout)
    name = sshconfig.known_host_name(hop.hostname, hop.port)
    fp = f"{offered.get_name()} {sshconfig.fingerprint(offered)}"
    known = known_keys(name, known_hosts)
    if offered.get_name() in known:
        if known[offered.get_name()] == offered:
            return CheckResult("host key", OK, f"{name}: {fp} is in known_hosts")
        exp = known[offered.get_name()]
        raise CheckFailed(
            f"HOST KEY OF {hop.address} HAS CHANGED: known_hosts has {sshconfig.fingerprint(exp)}, "
            f"the server offered {fp}; hpcbridge refuses to connect",
            f"if the cluster was legitimately re-installed (ask its admins): "
            f"`ssh-keygen -R '{name}' -f {known_hosts}`, then add the new key",
        )
    if p.cluster.accept_new_host_keys:
        return CheckResult("host key", OK, f"{name}: {fp} is not known yet; it will be trusted and "
                                           "saved on first connection (accept_new_host_keys = true)")  # fmt: skip
    files = ", ".join(dict.fromkeys(os.path.expanduser(f) for f in (sshconfig.DEFAULT_KNOWN_HOSTS, known_hosts)))
    raise CheckFailed(f"{name} is not in known_hosts ({files}); the server offered {fp}",
                      sshconfig.keyscan_hint(hop, known_hosts))


def check_auth(p: Probe) -> CheckResult:
    p.transport = _transport(p)
    connect = getattr(p.transport, "connect", None)
    t0 = time.monotonic()
    if callable(connect):
        connect()
    res = p.transport.run(["true"], what="login test")
    if res.exit_status != 0:
        raise CheckFailed(f"logged in, but `true` exited {res.exit_status}: {res.stderr.strip()[:200]}",
                          "the account's shell or profile is broken")  # fmt: skip
    return CheckResult("auth", OK, f"{p.transport.description}: logged in as {p.user} "
                                   f"({(time.monotonic() - t0) * 1000:.0f} ms)")  # fmt: skip


def check_local(p: Probe) -> CheckResult:
    p.transport = _transport(p)
    return CheckResult("auth", OK, f"local transport: commands run here as {p.user}")


def check_slurm(p: Probe) -> CheckResult:
    assert p.transport is not None
    # One round trip for all of them; sh prints the ones it cannot find.
    res = p.transport.run(["sh", "-c", FIND_COMMANDS, "sh", *(p.bin(n) for n in SLURM_COMMANDS)],
                          what="finding Slurm")  # fmt: skip
    if res.exit_status != 0:
        raise CheckFailed(f"sh exited {res.exit_status}: {res.stderr.strip()[:200]}", "is sh on the cluster?")
    missing = [posixpath.basename(line) for line in res.stdout.split()]
    if missing:
        raise CheckFailed(
            f"not found on PATH: {', '.join(missing)}",
            "set slurm_bin_dir = '/path/to/slurm/bin' for this cluster, or login_shell = true "
            "when a login profile (module load slurm) puts them on PATH",
        )
    res = p.run(sl.version_argv(bin_dir=p.cluster.slurm_bin_dir), "sbatch --version")
    version = sl.parse_version(res.stdout) or res.stdout.strip()[:80]
    return CheckResult("slurm", OK, f"{', '.join(SLURM_COMMANDS)} found; slurm {version}")


def check_accounting(p: Probe) -> CheckResult:
    res = p.run([p.bin("sacct"), "--noheader", "-X", "--starttime=now-1minutes", "--format=JobID"],
                "sacct probe")  # fmt: skip
    if res.exit_status != 0:
        raise CheckFailed(
            f"sacct exited {res.exit_status}: {res.stderr.strip()[:200]}",
            "without accounting, jobs that left squeue cannot be told apart: hpcbridge then relies "
            "on its job markers and marks the rest lost after lost_grace_seconds; ask the admins "
            "whether slurmdbd is meant to run",
        )
    return CheckResult("accounting", OK, "sacct answers")


def check_partitions(p: Probe) -> CheckResult:
    res = p.run(sl.sinfo_partitions_argv(bin_dir=p.cluster.slurm_bin_dir), "sinfo")
    if res.exit_status != 0:
        raise CheckFailed(f"sinfo exited {res.exit_status}: {res.stderr.strip()[:200]}",
                          "is slurmctld reachable from the login node? (`scontrol ping`)")  # fmt: skip
    p.partitions = sl.parse_partitions(res.stdout)
    if not p.partitions:
        raise CheckFailed("sinfo lists no partition visible to this user", "ask the admins which partition to use")
    names = ", ".join(f"{q.name}{'*' if q.default else ''}{'' if q.available else ' (down)'}" for q in p.partitions)
    wanted = p.cluster.defaults.partition
    if wanted:
        found = {q.name: q for q in p.partitions}
        if wanted not in found:
            raise CheckFailed(f"partition {wanted!r} (the config's) is not among {names}",
                              f"set partition = one of: {', '.join(found)}")  # fmt: skip
        if not found[wanted].available:
            raise CheckFailed(f"partition {wanted!r} is {found[wanted].states or 'down'}",
                              "pick another partition or wait for the admins")  # fmt: skip
    return CheckResult("partitions", OK, names + (f"; tasks go to {wanted}" if wanted else ""))


def check_limits(p: Probe) -> CheckResult:
    res = p.run(sl.scontrol_config_argv(bin_dir=p.cluster.slurm_bin_dir), "scontrol show config")
    if res.exit_status != 0:
        raise CheckFailed(f"scontrol show config exited {res.exit_status}: {res.stderr.strip()[:200]}",
                          "is slurmctld reachable? (`scontrol ping`)")  # fmt: skip
    p.slurm_config = sl.parse_scontrol_config(res.stdout)
    p.limits = sl.parse_limits(res.stdout, "", "", p.user)
    lim = p.limits
    return CheckResult("limits", OK, f"MaxArraySize {lim.max_array_size or 'unknown'} (array indices "
                       f"0..{(lim.max_array_size or 1) - 1}), MaxJobCount {lim.max_job_count or 'unknown'}")  # fmt: skip


def check_associations(p: Probe) -> CheckResult:
    storage = p.slurm_config.get("AccountingStorageType", "")
    enforce = p.slurm_config.get("AccountingStorageEnforce", "none")
    if "slurmdbd" not in storage:
        return CheckResult("associations", OK, f"no accounting database ({storage or 'none'}): no "
                                               "association limits apply")  # fmt: skip
    assoc = p.run(sl.assoc_argv(p.user, bin_dir=p.cluster.slurm_bin_dir), "sacctmgr show assoc")
    qos = p.run(sl.qos_argv(bin_dir=p.cluster.slurm_bin_dir), "sacctmgr show qos")
    bad = assoc if assoc.exit_status != 0 else qos if qos.exit_status != 0 else None
    if bad is not None:
        raise CheckFailed(f"sacctmgr exited {bad.exit_status}: {bad.stderr.strip()[:200]}",
                          "MaxSubmitJobs is unknown (hpcbridge assumes none); is sacctmgr on PATH?")  # fmt: skip
    cluster = p.slurm_config.get("ClusterName") or None
    rows = sl.user_associations(sl.parse_assocs(assoc.stdout), p.user, cluster=cluster)
    config_text = "\n".join(f"{k} = {v}" for k, v in p.slurm_config.items())
    p.limits = sl.parse_limits(config_text, assoc.stdout, qos.stdout, p.user)
    if not rows:
        if "associations" in enforce or "limits" in enforce or "qos" in enforce:
            raise CheckFailed(f"user {p.user} has no association on cluster {cluster} and "
                              f"AccountingStorageEnforce = {enforce}: every job would be rejected",
                              "ask the admins to add you to an account (sacctmgr add user ...)")  # fmt: skip
        return CheckResult("associations", OK, f"user {p.user} has no association (not enforced)")
    accts = ", ".join(f"{a.account}{'/' + a.partition if a.partition else ''} (qos {a.effective_qos()})"
                      for a in rows)  # fmt: skip
    cap = p.limits.max_submit_jobs
    return CheckResult("associations", OK, f"{accts}; MaxSubmitJobs {cap if cap is not None else 'unlimited'}")


def check_work_dir(p: Probe) -> CheckResult:
    assert p.transport is not None
    base = p.transport.expand(p.cluster.work_dir)
    probe = f"{base.rstrip('/')}/.hpcbridge-doctor-{secrets.token_hex(4)}"
    try:
        p.transport.makedirs(base)
        p.transport.write_text(probe, "hpcbridge doctor\n")
        back = p.transport.read_text(probe)
    except (HpcBridgeError, OSError) as exc:
        raise CheckFailed(f"{base} is not writable: {exc}",
                          "set work_dir = a directory you may write on the cluster (scratch or home)") from None
    finally:
        p.transport.run(["rm", "-f", "--", probe], what="work dir probe cleanup")
    if back != "hpcbridge doctor\n":
        raise CheckFailed(f"{base}: a file written there read back differently", "check the file system")
    return CheckResult("work dir", OK, f"{base} is writable")


def check_clock(p: Probe) -> CheckResult:
    assert p.transport is not None
    t0 = time.time()
    res = p.transport.run(["date", "+%s.%N"], what="clock")
    t1 = time.time()
    try:
        remote = float(res.stdout.strip())
    except ValueError:
        raise CheckFailed(f"`date +%s.%N` printed {res.stdout.strip()[:80]!r}", "is this a GNU/Linux host?") from None
    offset = remote - (t0 + t1) / 2
    detail = f"cluster clock {offset:+.2f} s from this machine's (round trip {(t1 - t0) * 1000:.0f} ms)"
    if abs(offset) > MAX_CLOCK_OFFSET:
        raise CheckFailed(detail, "synchronise the clocks (NTP): Slurm's times are compared with this "
                                  "machine's (lost/submit grace periods, elapsed times)")  # fmt: skip
    return CheckResult("clock", OK, detail)


def check_budget(p: Probe) -> CheckResult:
    rate = p.cluster.commands_per_minute
    params = p.slurm_config.get("SlurmctldParameters", "")
    opts = dict(o.partition("=")[::2] for o in params.split(",") if o and o != "(null)")
    used = p.transport.stats.round_trips if p.transport is not None else 0
    detail = (f"{rate:g} scheduler commands/minute (burst {max(10.0, rate / 6):g}); "
              f"these checks ran {used} command(s)")  # fmt: skip
    if not p.slurm_config:
        return CheckResult("budget", OK, detail + "; slurmctld's rate limit unknown (no scontrol show config)")
    if "rl_enable" not in opts:
        return CheckResult("budget", OK, detail + "; slurmctld rate limiting is off")
    refill = float(opts.get("rl_refill_rate") or RL_DEFAULT_REFILL_RATE)
    period = float(opts.get("rl_refill_period") or RL_DEFAULT_REFILL_PERIOD)
    site = refill * 60.0 / period
    detail += f"; slurmctld allows {site:g}/minute per user (bucket {opts.get('rl_bucket_size') or RL_DEFAULT_BUCKET})"
    if rate > site:
        raise CheckFailed(detail, f"set commands_per_minute = {site / 2:g} or lower for this cluster")
    return CheckResult("budget", OK, detail)


# (name, check, the checks it needs, when it applies)
Check = tuple[str, Callable[[Probe], CheckResult], tuple[str, ...], Callable[[Probe], bool]]
CHECKS: tuple[Check, ...] = (
    ("resolve", check_resolve, ("config",), lambda p: p.ssh),
    ("tcp", check_tcp, ("resolve",), lambda p: p.ssh),
    ("host key", check_host_key, ("tcp",), lambda p: p.ssh),
    ("auth", check_auth, ("host key",), lambda p: p.ssh),
    ("auth", check_local, ("config",), lambda p: not p.ssh),
    ("slurm", check_slurm, ("auth",), lambda p: p.slurm),
    ("accounting", check_accounting, ("slurm",), lambda p: p.slurm),
    ("partitions", check_partitions, ("slurm",), lambda p: p.slurm),
    ("limits", check_limits, ("slurm",), lambda p: p.slurm),
    ("associations", check_associations, ("limits",), lambda p: p.slurm),
    ("work dir", check_work_dir, ("auth",), lambda p: p.slurm),
    ("clock", check_clock, ("auth",), lambda p: p.ssh),
    ("budget", check_budget, ("config",), lambda p: p.slurm),
)


def _transport(p: Probe) -> Transport:
    if p.make_transport is not None:
        return p.make_transport(p.cluster)
    if p.ssh:
        from .transport import SSHTransport

        return SSHTransport(p.cluster, ssh_config_path=p.ssh_config_path)
    from .transport import make_transport

    return make_transport(p.cluster)


def server_host_key(hostname: str, port: int, timeout: float) -> Any:
    """The host key the SSH server at hostname:port offers (a handshake, no authentication)."""
    import paramiko

    sock = socket.create_connection((hostname, port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise CheckFailed(f"SSH handshake with {hostname}:{port} failed: {exc}",
                          "is it an SSH server on that port?") from None  # fmt: skip
    finally:
        t.close()


def known_keys(name: str, known_hosts: str) -> dict[str, Any]:
    """Key type -> key recorded for ``name`` in ~/.ssh/known_hosts and ``known_hosts``."""
    import paramiko

    from .transport import sshconfig

    keys = paramiko.HostKeys()
    for f in dict.fromkeys((sshconfig.DEFAULT_KNOWN_HOSTS, known_hosts)):
        path = os.path.expanduser(f)
        if os.path.isfile(path):
            keys.load(path)
    entry = keys.lookup(name)
    return dict(entry) if entry else {}


def _skip_reason(needs: tuple[str, ...], results: dict[str, CheckResult], roots: dict[str, str]) -> str | None:
    for need in needs:
        r = results.get(need)
        if r is None or r.status != OK:
            root = roots.get(need, need)
            return f"needs {need}" + (", which failed" if root == need else f"; not reached: {root} failed")
    return None


def check_cluster(
    cluster: ClusterConfig,
    *,
    config_path: str | None = None,
    ssh_config_path: str | None = None,
    make_transport: Callable[[ClusterConfig], Transport] | None = None,
) -> ClusterReport:
    """Every check for one cluster, in order; never raises for what it finds."""
    p = Probe(cluster, config_path, ssh_config_path, make_transport)
    results: dict[str, CheckResult] = {}
    roots: dict[str, str] = {}  # skipped check -> the failed check it waited for
    order: list[CheckResult] = []
    try:
        for name, fn, needs, applies in (("config", check_config, (), lambda p: True), *CHECKS):
            if not applies(p):
                continue
            why = _skip_reason(needs, results, roots)
            if why is not None:
                result = CheckResult(name, SKIP, why)
                need = next(n for n in needs if results.get(n) is None or not results[n].ok)
                roots[name] = roots.get(need, need)
            else:
                result = _run_one(name, fn, p)
            results[name] = result
            order.append(result)
    finally:
        if p.transport is not None:
            try:
                p.transport.close()
            except Exception:  # noqa: BLE001 - closing must not hide the report
                pass
    desc = p.target.describe() if p.target is not None else cluster.transport
    return ClusterReport(cluster.name, desc, tuple(order), tuple(p.partitions), p.limits)


def _run_one(name: str, fn: Callable[[Probe], CheckResult], p: Probe) -> CheckResult:
    try:
        return fn(p)
    except CheckFailed as exc:
        return CheckResult(name, FAIL, exc.detail, exc.fix)
    except HpcBridgeError as exc:
        return CheckResult(name, FAIL, exc.message, exc.hint or "")
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return CheckResult(name, FAIL, f"{type(exc).__name__}: {exc}", "")


def config_failure(exc: HpcBridgeError, name: str = "?") -> ClusterReport:
    """The report when the config itself does not load (no cluster to check)."""
    return ClusterReport(name, "", (CheckResult("config", FAIL, exc.message, exc.hint or ""),))


def check_config_file(
    config_path: str | None,
    names: Sequence[str] = (),
    *,
    ssh_config_path: str | None = None,
) -> list[ClusterReport]:
    """Load the config and check ``names`` (default: every configured cluster but the
    built-in ``local``, or ``local`` when it is the only one)."""
    try:
        config: Config = load_config(config_path)
        clusters = [config.cluster(n) for n in names] if names else [
            c for n, c in sorted(config.clusters.items()) if n != "local" or len(config.clusters) == 1
        ]
    except HpcBridgeError as exc:
        return [config_failure(exc, ",".join(names) or "?")]
    path = str(config.path) if config.path else None
    return [check_cluster(c, config_path=path, ssh_config_path=ssh_config_path) for c in clusters]
