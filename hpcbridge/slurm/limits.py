"""The cluster's limits and layout as Slurm prints them: pure builders and parsers.

What ``hpcbridge clusters check`` reads and job arrays are sized by:

* ``scontrol show config``: ``MaxArraySize`` (array indices run 0 .. MaxArraySize-1; the
  default is 1001) and ``MaxJobCount`` (jobs slurmctld holds at once, all users; 10000).
* ``sacctmgr -nP show assoc user=U format=ASSOC_FIELDS``: the user's associations with their
  ``MaxSubmitJobs`` / ``GrpSubmitJobs`` and QOS. sacctmgr prints a user association's limits
  *with the parent account's limits filled in* where the user's own are unset (that is what
  its ``WOPLimits`` option turns off), so the rows are the effective limits. Grp limits are
  not inherited (they count the whole subtree), and a user row's GrpSubmit is its own.
* ``sacctmgr -nP show qos format=QOS_FIELDS``: each QOS's ``MaxSubmitJobsPerUser`` etc.
* ``sinfo --noheader -o SINFO_FORMAT``: partitions (``*`` after the default one's name), one
  line per partition and node state.
* ``sbatch --version``: ``slurm 22.05.8``.

An empty limit field means "no limit" (sacctmgr prints nothing, not 0 or UNLIMITED).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .commands import check_text, command_path

# sacctmgr --parsable2 rows of these fields (the order is the parser's contract).
ASSOC_FIELDS: tuple[str, ...] = (
    "Cluster", "Account", "User", "Partition", "MaxSubmitJobs", "GrpSubmitJobs", "QOS",
    "DefaultQOS",
)  # fmt: skip
QOS_FIELDS: tuple[str, ...] = (
    "Name", "MaxSubmitJobsPerUser", "MaxSubmitJobsPerAccount", "GrpSubmitJobs",
)  # fmt: skip
# partition (name*, for the default) | avail | time limit | node count | node state
SINFO_FORMAT = "%P|%a|%l|%D|%t"

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
_CONFIG_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s?(.*)$")
_VERSION = re.compile(r"\bslurm(?:-wlm)?\s+(\d+\.\d+(?:\.\d+)?(?:-\S+)?)")


@dataclass(frozen=True)
class ClusterLimits:
    """The limits that bound how many jobs hpcbridge may put on a cluster at once.

    ``max_array_size``: Slurm's MaxArraySize (an array's indices must be < this).
    ``max_job_count``: MaxJobCount (jobs slurmctld keeps, everyone's together).
    ``max_submit_jobs``: the tightest association ``MaxSubmitJobs`` / ``GrpSubmitJobs`` or
    QOS ``MaxSubmitJobsPerUser`` / ``MaxSubmitJobsPerAccount`` / ``GrpSubmitJobs`` that applies
    to the user; each array task counts as one job. ``None`` means unlimited (or unknown).
    """

    max_array_size: int | None
    max_job_count: int | None
    max_submit_jobs: int | None  # tightest of association MaxSubmitJobs / QOS MaxSubmitJobsPerUser


@dataclass(frozen=True)
class Association:
    """One row of ``sacctmgr show assoc`` (limits ``None`` = unset/unlimited)."""

    cluster: str
    account: str
    user: str
    partition: str
    max_submit_jobs: int | None
    grp_submit_jobs: int | None
    qos: tuple[str, ...]
    default_qos: str

    def effective_qos(self) -> str:
        """The QOS a job of this association gets when it names none: DefaultQOS, else the
        only QOS allowed, else ``normal`` (slurmctld's order when choosing a job's QOS)."""
        if self.default_qos:
            return self.default_qos
        if len(self.qos) == 1:
            return self.qos[0]
        return "normal"


@dataclass(frozen=True)
class QOSLimits:
    name: str
    max_submit_jobs_per_user: int | None
    max_submit_jobs_per_account: int | None
    grp_submit_jobs: int | None

    def tightest(self) -> int | None:
        return _min(self.max_submit_jobs_per_user, self.max_submit_jobs_per_account, self.grp_submit_jobs)


@dataclass(frozen=True)
class Partition:
    """A partition as ``sinfo`` lists it (its lines for each node state summed)."""

    name: str
    default: bool
    available: bool  # sinfo %a is "up"
    time_limit: str  # "1:00:00", "infinite"
    nodes: int
    states: tuple[str, ...]  # node states seen ("idle", "mix", "down*")


# ----------------------------------------------------------------------------- argv builders


def scontrol_config_argv(*, bin_dir: str | None = None) -> list[str]:
    return [command_path("scontrol", bin_dir), "show", "config"]


def assoc_argv(user: str, *, bin_dir: str | None = None) -> list[str]:
    """The user's associations (every cluster sacctmgr knows: filter with ``cluster=``)."""
    check_text("user", user)
    if not _USER.match(user):
        raise ValueError(f"invalid user name {user!r}")
    return [command_path("sacctmgr", bin_dir), "--noheader", "--parsable2", "show", "assoc",
            f"user={user}", "format=" + ",".join(ASSOC_FIELDS)]  # fmt: skip


def qos_argv(*, bin_dir: str | None = None) -> list[str]:
    return [command_path("sacctmgr", bin_dir), "--noheader", "--parsable2", "show", "qos",
            "format=" + ",".join(QOS_FIELDS)]  # fmt: skip


def sinfo_partitions_argv(*, bin_dir: str | None = None) -> list[str]:
    return [command_path("sinfo", bin_dir), "--noheader", "-o", SINFO_FORMAT]


def version_argv(*, bin_dir: str | None = None) -> list[str]:
    return [command_path("sbatch", bin_dir), "--version"]


# ----------------------------------------------------------------------------- parsers


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``Key = value`` lines of ``scontrol show config`` as a dict (the header line, blank
    lines and the per-plugin sections' lines that are not ``key = value`` are skipped).
    Values are as printed (``1001``, ``60 sec``, ``(null)``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _CONFIG_LINE.match(line.strip())
        if m and m[1] not in out:
            out[m[1]] = m[2].strip()
    return out


def _int(text: str | None) -> int | None:
    """A limit as sacctmgr/scontrol print it; empty, ``UNLIMITED``, ``N/A`` -> None."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def _min(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def parse_assocs(text: str) -> list[Association]:
    """Rows of ``assoc_argv`` output; a malformed line is skipped, never fatal."""
    out = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != len(ASSOC_FIELDS):
            continue
        cluster, account, user, partition, max_submit, grp_submit, qos, default_qos = parts
        out.append(Association(
            cluster=cluster, account=account, user=user, partition=partition,
            max_submit_jobs=_int(max_submit), grp_submit_jobs=_int(grp_submit),
            qos=tuple(q for q in qos.split(",") if q), default_qos=default_qos,
        ))  # fmt: skip
    return out


def parse_qos(text: str) -> dict[str, QOSLimits]:
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != len(QOS_FIELDS) or not parts[0]:
            continue
        name, per_user, per_account, grp = parts
        out[name] = QOSLimits(name, _int(per_user), _int(per_account), _int(grp))
    return out


def user_associations(
    assocs: Iterable[Association],
    user: str,
    *,
    cluster: str | None = None,
    account: str | None = None,
) -> list[Association]:
    return [a for a in assocs
            if a.user == user
            and (cluster is None or a.cluster == cluster)
            and (account is None or a.account == account)]  # fmt: skip


def parse_limits(
    config_text: str,
    assoc_text: str,
    qos_text: str,
    user: str,
    *,
    cluster: str | None = None,
    account: str | None = None,
) -> ClusterLimits:
    """The limits of ``user`` from the three outputs (``scontrol_config_argv``,
    ``assoc_argv``, ``qos_argv``). ``cluster`` defaults to the config's ClusterName;
    ``account`` narrows to one account (default: every association of the user, so the
    tightest one wins: conservative when a job may run under any of them).

    Which QOS applies: each association's ``effective_qos`` (the QOS a job gets when it names
    none). A user without associations (accounting off, or not enforced) gets no
    ``max_submit_jobs`` from them."""
    config = parse_scontrol_config(config_text)
    cluster = cluster or config.get("ClusterName") or None
    qos = parse_qos(qos_text)
    limits: list[int | None] = []
    for a in user_associations(parse_assocs(assoc_text), user, cluster=cluster, account=account):
        limits += [a.max_submit_jobs, a.grp_submit_jobs]
        q = qos.get(a.effective_qos())
        if q is not None:
            limits.append(q.tightest())
    return ClusterLimits(
        max_array_size=_int(config.get("MaxArraySize")),
        max_job_count=_int(config.get("MaxJobCount")),
        max_submit_jobs=_min(*limits),
    )


def parse_partitions(text: str) -> list[Partition]:
    """Partitions in the order sinfo lists them, one entry each (sinfo prints one line per
    partition and node state; the node counts add up). A malformed line is skipped."""
    seen: dict[str, Partition] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or not parts[0]:
            continue
        raw, avail, limit, count, state = parts
        name = raw.rstrip("*")
        old = seen.get(name)
        nodes = int(count) if count.isdigit() else 0
        if old is None:
            seen[name] = Partition(name, raw.endswith("*"), avail == "up", limit, nodes,
                                   (state,) if state else ())  # fmt: skip
        else:
            states = old.states + ((state,) if state and state not in old.states else ())
            seen[name] = replace(old, nodes=old.nodes + nodes, states=states)
    return list(seen.values())


def parse_version(text: str) -> str | None:
    """``slurm 22.05.8`` (or ``slurm-wlm 22.05.8``) -> ``"22.05.8"``."""
    m = _VERSION.search(text)
    return m[1] if m else None
