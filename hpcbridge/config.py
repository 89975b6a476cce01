"""Configuration: TOML file + environment -> frozen typed objects. The only reader of config.

Resolution order for the file: explicit path (``--config``), ``$HPCBRIDGE_CONFIG``, then
``<user config dir>/hpcbridge/config.toml``. No file means one built-in cluster ``local``.
Errors name the file, the key and what is allowed.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .lazylog import get_logger
from .lifecycle import RetryPolicy
from .models import Resources
from .registry_file import db_file, default_db_file, user_dir

if TYPE_CHECKING:  # the notification rules' code is imported when a config has some
    from .events import NotifyRule

log = get_logger(__name__)

BACKENDS = ("local", "slurm")
TRANSPORTS = ("local", "ssh")


# Where the files are is decided in registry_file (no pathlib, no dataclasses there: `tasks
# list` finds the registry without this module); these are the same answers as paths.
def _user_dir(kind: str) -> Path:
    return Path(user_dir(kind))


def default_config_path() -> Path:
    return _user_dir("config") / "config.toml"


def default_db_path() -> Path:
    return Path(default_db_file())


def resolve_db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(db_file(explicit))


@dataclass(frozen=True)
class ClusterConfig:
    """One ``[clusters.NAME]`` table: where and how tasks of that cluster run."""

    name: str
    backend: str = "local"
    transport: str = "local"
    # SSH
    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False  # explicit opt-in; logged when it happens
    use_ssh_config: bool = True  # read ~/.ssh/config for Host/HostName/User/Port/IdentityFile/ProxyJump
    proxy_jump: str | None = None
    connect_timeout: float = 15.0
    command_timeout: float = 120.0
    keepalive: int = 30
    # Where tasks run on the cluster; "~" is the remote home.
    work_dir: str = "~/hpcbridge"
    # Site setup
    slurm_bin_dir: str | None = None  # when a non-login shell lacks sbatch on PATH
    login_shell: bool = False  # run scheduler commands through `bash -lc`
    setup: tuple[str, ...] = ()  # lines placed in every batch script (module load ...)
    env: Mapping[str, str] = field(default_factory=dict)
    # Defaults for every task on this cluster
    defaults: Resources = field(default_factory=Resources)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Sync behaviour
    lost_grace_seconds: float = 120.0  # absent from squeue and sacct this long -> lost
    submit_grace_seconds: float = 60.0  # unknown sbatch outcome: look for the job this long
    # Scheduler-command budget shared by CLI, cron and daemon. Slurm's RPC rate limiter (when a
    # site enables it) refills 2 per second per user: stay well below that.
    commands_per_minute: float = 60.0
    cycle_timeout: float = 300.0
    # sbatch calls run this many at a time inside the one submission script (slurmctld
    # serves RPCs on several threads; measured here 4 lanes ~2x a serial loop).
    submit_parallelism: int = 4
    # A success whose declared outputs matched no file fails (default: succeeds, with a warning).
    require_outputs: bool = False
    # When `tasks info` warns about an ended attempt's efficiency (fractions of the request).
    warn_cpu_efficiency_below: float = 0.5
    warn_memory_efficiency_below: float = 0.3
    warn_memory_peak_above: float = 0.9
    # Project of tasks submitted without one (the top-level default_project, or
    # $HPCBRIDGE_PROJECT); every cluster carries it so a task's options can be built from its
    # cluster alone.
    default_project: str | None = None
    # An estimated price per core-hour on this cluster (projects list/show turn core-hours
    # into a cost with it), in `currency` (any label, e.g. "EUR", "credits").
    price_per_core_hour: float | None = None
    currency: str = ""
    # Job arrays: tasks with the same resource request submitted together go out as arrays
    # of at most max_array_size elements (None: the cluster's MaxArraySize, read once).
    arrays: bool = True
    max_array_size: int | None = None
    # Jobs of this user the cluster accepts at once (MaxSubmitJobs of the association or
    # QOS); hpcbridge keeps tasks over it waiting, visibly, instead of letting sbatch fail.
    max_submit_jobs: int | None = None
    # A task whose sbatch the cluster refused for its submit limit (slots taken by jobs
    # submitted by other means) is tried again this long after.
    submit_limit_retry_seconds: float = 60.0
    # Events (issue 12): a running task whose newest work-dir file is older than this is
    # stalled (None: not watched unless the task sets --stall-after); what then; and the
    # share of its time limit left at which a running attempt gets `walltime_near`.
    stall_after: float | None = None
    on_stall: str = "notify"
    walltime_warn_fraction: float = 0.1


@dataclass(frozen=True)
class Config:
    """The configuration in effect: the clusters, the default one, the notification rules."""

    clusters: Mapping[str, ClusterConfig]
    default_cluster: str
    path: Path | None = None  # the file it came from, None = built-in
    default_project: str | None = None  # project of tasks submitted without one
    notify: tuple[NotifyRule, ...] = ()  # [[notify]] rules
    warnings: tuple[str, ...] = ()  # e.g. a secrets file others can read

    def cluster(self, name: str | None) -> ClusterConfig:
        key = name or self.default_cluster
        try:
            return self.clusters[key]
        except KeyError:
            where = f" in {self.path}" if self.path else " (no config file; only 'local' exists)"
            raise ConfigError(
                f"unknown cluster {key!r}{where}",
                hint=f"known clusters: {', '.join(sorted(self.clusters)) or '(none)'}",
            ) from None


BUILTIN_LOCAL = ClusterConfig(name="local")

_CLUSTER_KEYS: dict[str, type | tuple[type, ...]] = {
    "backend": str,
    "transport": str,
    "host": str,
    "port": int,
    "user": str,
    "identity_file": str,
    "known_hosts": str,
    "accept_new_host_keys": bool,
    "use_ssh_config": bool,
    "proxy_jump": str,
    "connect_timeout": (int, float),
    "command_timeout": (int, float),
    "keepalive": int,
    "work_dir": str,
    "slurm_bin_dir": str,
    "login_shell": bool,
    "setup": list,
    "env": dict,
    "lost_grace_seconds": (int, float),
    "submit_grace_seconds": (int, float),
    "submit_limit_retry_seconds": (int, float),
    "commands_per_minute": (int, float),
    "cycle_timeout": (int, float),
    "submit_parallelism": int,
    "require_outputs": bool,
    "warn_cpu_efficiency_below": (int, float),
    "warn_memory_efficiency_below": (int, float),
    "warn_memory_peak_above": (int, float),
    "price_per_core_hour": (int, float),
    "currency": str,
    "arrays": bool,
    "max_array_size": int,
    "max_submit_jobs": int,
    "retry": dict,
    "stall_after": (str, int, float),
    "on_stall": str,
    "walltime_warn_fraction": (int, float),
}
_RESOURCE_KEYS: dict[str, type | tuple[type, ...]] = {
    "partition": str,
    "account": str,
    "qos": str,
    "time": str,
    "cpus": int,
    "mem": str,
    "gres": str,
    "signal": str,
    "sbatch_options": list,
}


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config; ``path`` wins over ``$HPCBRIDGE_CONFIG`` over the default location."""
    explicit = path or os.environ.get("HPCBRIDGE_CONFIG")
    file = Path(explicit).expanduser() if explicit else default_config_path()
    if not file.exists():
        if explicit:
            raise ConfigError(
                f"config file {file} does not exist",
                hint="fix --config / HPCBRIDGE_CONFIG, or unset it to use the built-in 'local'",
            )
        return _apply_env(Config({"local": BUILTIN_LOCAL}, "local", None))
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not UTF-8 text (byte {exc.start}: {exc.reason})",
            hint="TOML files are UTF-8; re-save the file with that encoding",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return _apply_env(parse_config(data, file))


def parse_config(data: Mapping[str, Any], file: Path | None = None) -> Config:
    where = str(file) if file else "<config>"
    unknown = set(data) - {"default_cluster", "default_project", "clusters", "notify"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {sorted(unknown)}",
            hint="allowed: default_cluster, default_project, [clusters.NAME], [[notify]]",
        )
    project = data.get("default_project")
    if project is not None:
        _check_type(where, "default_project", project, str)
        project = check_project_name(project, f"{where}: default_project")
    raw_clusters = data.get("clusters", {})
    if not isinstance(raw_clusters, dict):
        raise ConfigError(f"{where}: 'clusters' must be a table of [clusters.NAME] tables")
    clusters: dict[str, ClusterConfig] = {"local": BUILTIN_LOCAL}
    for name, table in raw_clusters.items():
        clusters[name] = _parse_cluster(name, table, where)
    default = data.get("default_cluster", "local")
    if not isinstance(default, str) or default not in clusters:
        raise ConfigError(
            f"{where}: default_cluster = {default!r} names no cluster",
            hint=f"defined clusters: {', '.join(sorted(clusters))}",
        )
    rules, warnings = _parse_notify(data.get("notify", []), where, file)
    config = Config(clusters, default, file, notify=rules, warnings=warnings)
    return _with_project(config, project)


def _parse_notify(tables: Any, where: str, file: Path | None) -> tuple[tuple[NotifyRule, ...], tuple[str, ...]]:
    """The ``[[notify]]`` rules; URLs may come from the environment (``urls_env``) or a
    separate file (``urls_file``, one URL a line), which should be readable by its owner only."""
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: 'notify' must be an array of [[notify]] tables")
    if not tables:
        return (), ()
    from .events import parse_rule

    rules, warnings, names = [], [], set()
    for i, table in enumerate(tables):
        from_file: list[str] = []
        if isinstance(table, dict) and "urls_file" in table:
            raw = table["urls_file"]
            if not isinstance(raw, str):
                raise ConfigError(f"{where}: [[notify]] #{i + 1}: urls_file must be a path")
            path = Path(raw).expanduser()
            if not path.is_absolute() and file is not None:
                path = file.parent / path
            try:
                mode = path.stat().st_mode
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{where}: [[notify]] #{i + 1}: cannot read urls_file {path}: {exc.strerror}") from None
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                warnings.append(f"{path} holds notification secrets and is readable by others"
                                f" (mode {stat.filemode(mode)}); chmod 600 {path}")  # fmt: skip
            from_file = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        rule = parse_rule({k: v for k, v in table.items() if k != "urls_file"} if isinstance(table, dict) else table,
                          i, where, from_file, os.environ)  # fmt: skip
        if rule.name in names:
            raise ConfigError(f"{where}: two [[notify]] rules are named {rule.name!r}", hint="names must differ")
        names.add(rule.name)
        rules.append(rule)
    for w in warnings:
        log.warning("%s", w)
    return tuple(rules), tuple(warnings)


def check_project_name(name: str, what: str = "project") -> str:
    """A project name as given, if valid: non-empty, printable, at most 128 characters."""
    if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > 128:
        raise ConfigError(f"{what}: project name {name!r} must be 1-128 printable characters")
    return name


def _with_project(config: Config, project: str | None) -> Config:
    """``config`` with ``project`` as its default project, on every cluster too."""
    clusters = {n: replace(c, default_project=project) for n, c in config.clusters.items()}
    return replace(config, clusters=clusters, default_project=project)


def _check_type(where: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, (int, float)))
    if not ok:
        names = expected.__name__ if isinstance(expected, type) else " or ".join(
            t.__name__ for t in expected
        )
        raise ConfigError(f"{where}: {key} must be {names}, got {value!r}")


def _parse_cluster(name: str, table: Any, where: str) -> ClusterConfig:
    prefix = f"{where}: [clusters.{name}]"
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{prefix}: cluster names may use letters, digits, '-' and '_' only")
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix} must be a table")
    kwargs: dict[str, Any] = {"name": name}
    resources: dict[str, Any] = {}
    for key, value in table.items():
        if key in _RESOURCE_KEYS:
            _check_type(prefix, key, value, _RESOURCE_KEYS[key])
            resources[key] = tuple(str(v) for v in value) if key == "sbatch_options" else value
        elif key in _CLUSTER_KEYS:
            _check_type(prefix, key, value, _CLUSTER_KEYS[key])
            kwargs[key] = value
        else:
            allowed = sorted(set(_CLUSTER_KEYS) | set(_RESOURCE_KEYS))
            raise ConfigError(f"{prefix}: unknown key {key!r}", hint=f"allowed: {', '.join(allowed)}")
    if kwargs.get("backend", "local") not in BACKENDS:
        raise ConfigError(f"{prefix}: backend = {kwargs['backend']!r}", hint=f"allowed: {BACKENDS}")
    if kwargs.get("transport", "local") not in TRANSPORTS:
        raise ConfigError(
            f"{prefix}: transport = {kwargs['transport']!r}", hint=f"allowed: {TRANSPORTS}"
        )
    if kwargs.get("transport") == "ssh" and not kwargs.get("host"):
        raise ConfigError(f"{prefix}: transport = 'ssh' needs host")
    if kwargs.get("backend", "local") == "local" and kwargs.get("transport", "local") != "local":
        raise ConfigError(f"{prefix}: the local backend runs on this machine; use transport = 'local'")
    if "setup" in kwargs:
        kwargs["setup"] = tuple(str(line) for line in kwargs["setup"])
    if "env" in kwargs:
        env = kwargs["env"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ConfigError(f"{prefix}: env must map names to strings")
    if "retry" in kwargs:
        try:
            kwargs["retry"] = RetryPolicy.from_dict(kwargs["retry"])
        except ConfigError as exc:
            raise ConfigError(f"{prefix}.retry: {exc.message}", hint=exc.hint) from None
    for key in ("connect_timeout", "command_timeout", "commands_per_minute", "cycle_timeout",
                "submit_parallelism", "max_array_size", "max_submit_jobs", "submit_limit_retry_seconds"):
        if key in kwargs and kwargs[key] <= 0:
            raise ConfigError(f"{prefix}: {key} must be > 0, got {kwargs[key]}")
    if kwargs.get("price_per_core_hour", 0) < 0:
        raise ConfigError(f"{prefix}: price_per_core_hour must be >= 0, got {kwargs['price_per_core_hour']}")
    if "stall_after" in kwargs or "on_stall" in kwargs:
        from .events import ON_STALL, parse_duration
    if "stall_after" in kwargs:
        kwargs["stall_after"] = parse_duration(kwargs["stall_after"], f"{prefix}: stall_after")
    if "on_stall" in kwargs and kwargs["on_stall"] not in ON_STALL:
        raise ConfigError(f"{prefix}: on_stall = {kwargs['on_stall']!r}", hint=f"allowed: {', '.join(ON_STALL)}")
    if not 0 < kwargs.get("walltime_warn_fraction", 0.1) < 1:
        raise ConfigError(f"{prefix}: walltime_warn_fraction must be between 0 and 1")
    kwargs["defaults"] = Resources.from_dict(resources)
    return ClusterConfig(**kwargs)


def _apply_env(config: Config) -> Config:
    """``HPCBRIDGE_CLUSTER`` overrides the default cluster, ``HPCBRIDGE_PROJECT`` the
    default project."""
    override = os.environ.get("HPCBRIDGE_CLUSTER")
    if override:
        if override not in config.clusters:
            raise ConfigError(
                f"HPCBRIDGE_CLUSTER={override!r} names no cluster",
                hint=f"defined clusters: {', '.join(sorted(config.clusters))}",
            )
        config = replace(config, default_cluster=override)
    project = os.environ.get("HPCBRIDGE_PROJECT")
    if project:
        config = _with_project(config, check_project_name(project, "HPCBRIDGE_PROJECT"))
    return config
