"""Argv builders for the Slurm client commands, and the validators they share. Pure.

Builders return argv lists (quoting happens once, at the transport).

* Polling uses **one squeue per cluster without -j**: ``squeue --me --states=all``.
  ``squeue -j <one unknown id>`` exits 1 ("Invalid job id specified") while a mix of known
  and unknown ids exits 0, so an id list turns a normal event (the job left squeue after
  MinJobAge) into an error for the whole query. Listing the user's jobs costs one query
  regardless of N and also shows jobs whose sbatch outcome was lost, recognised by the
  ``hpcb:<token>`` comment. ``squeue_argv(job_ids=...)`` still exists; with it, use
  ``squeue_missing_job_error()`` to read that exit 1 as "no rows".
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo

from ..errors import UsageError

COMMENT_PREFIX = "hpcb:"

# squeue -O fields. "Name:|" = field, no width (so no padding and no truncation), then "|".
# RestartCnt exists only here and in scontrol (sacct 22.05 has no Restarts). exit_code is the
# raw wait status (768 = exit 3, 9 = SIGKILL). JobArrayID prints "44_7" / "44_[1-5]" for
# arrays and the plain id otherwise; JobID prints the raw id. Name and Comment are free text
# that may contain "|": they come last and the parser joins any surplus into Comment.
SQUEUE_FIELDS: tuple[str, ...] = (
    "JobArrayID",
    "JobID",
    "State",
    "Reason",
    "RestartCnt",
    "exit_code",
    "NodeList",
    "Partition",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "Name",
    "Comment",
)

# sacct --format fields (identical on 22.05 and 24.11; no Restarts, which 22.05 lacks: the
# restart count comes from the number of earlier instances in --duplicates output).
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "Reason",
    "NodeList",
    "Partition",
    "Submit",
    "Start",
    "End",
    "JobName",
    "Comment",
)

# The INPUT ENVIRONMENT VARIABLES sections of man sbatch, squeue, sacct, scancel, scontrol and
# sstat (22.05.8 and 26.05.5; 24.11 lists a subset of 26.05). Any of them in the login
# environment changes what hpcbridge submits or reads: SBATCH_PARTITION overrides the
# #SBATCH lines (measured), SQUEUE_USERS/SQUEUE_PARTITION/SQUEUE_STATES filter jobs out of the
# poll (absence!), SLURM_TIME_FORMAT/SLURM_JSON/SLURM_YAML change the printed form,
# SLURM_CLUSTERS points at another cluster, SLURM_EXIT_ERROR changes the exit status read as
# "unknown job id". Kept on purpose: SLURM_CONF (which cluster the commands talk to is the
# site's setup) and SLURM_UMASK (only the permissions of the job's log files: the user's).
SCHEDULER_ENV: tuple[str, ...] = (
    # sbatch
    "SBATCH_ACCOUNT", "SBATCH_ACCTG_FREQ", "SBATCH_ARRAY_INX", "SBATCH_BATCH",
    "SBATCH_CLUSTERS", "SBATCH_CONSTRAINT", "SBATCH_CONTAINER", "SBATCH_CONTAINER_ID",
    "SBATCH_CONTAINER_TYPE", "SBATCH_CORE_SPEC", "SBATCH_CPUS_PER_GPU", "SBATCH_DEBUG",
    "SBATCH_DELAY_BOOT", "SBATCH_DISTRIBUTION", "SBATCH_ERROR", "SBATCH_EXCLUSIVE",
    "SBATCH_EXPORT", "SBATCH_GET_USER_ENV", "SBATCH_GPU_BIND", "SBATCH_GPU_FREQ",
    "SBATCH_GPUS", "SBATCH_GPUS_PER_NODE", "SBATCH_GPUS_PER_TASK", "SBATCH_GRES",
    "SBATCH_GRES_FLAGS", "SBATCH_HINT", "SBATCH_IGNORE_PBS", "SBATCH_INPUT", "SBATCH_JOB_NAME",
    "SBATCH_MEM_BIND", "SBATCH_MEM_PER_CPU", "SBATCH_MEM_PER_GPU", "SBATCH_MEM_PER_NODE",
    "SBATCH_NETWORK", "SBATCH_NO_KILL", "SBATCH_NO_REQUEUE", "SBATCH_OPEN_MODE",
    "SBATCH_OUTPUT", "SBATCH_OVERCOMMIT", "SBATCH_PARTITION", "SBATCH_POWER", "SBATCH_PROFILE",
    "SBATCH_QOS", "SBATCH_REQ_SWITCH", "SBATCH_REQUEUE", "SBATCH_RESERVATION",
    "SBATCH_SEGMENT_SIZE", "SBATCH_SIGNAL", "SBATCH_SPREAD_JOB", "SBATCH_THREAD_SPEC",
    "SBATCH_THREADS_PER_CORE", "SBATCH_TIMELIMIT", "SBATCH_TRES_BIND", "SBATCH_TRES_PER_TASK",
    "SBATCH_USE_MIN_NODES", "SBATCH_WAIT", "SBATCH_WAIT_ALL_NODES", "SBATCH_WAIT4SWITCH",
    "SBATCH_WCKEY", "SLURM_HINT", "SLURM_EXIT_ERROR", "SLURM_STEP_KILLED_MSG_NODE_ID",
    # squeue
    "SQUEUE_ACCOUNT", "SQUEUE_ALL", "SQUEUE_ARRAY", "SQUEUE_NAMES", "SQUEUE_FEDERATION",
    "SQUEUE_FORMAT", "SQUEUE_FORMAT2", "SQUEUE_LICENSES", "SQUEUE_LOCAL", "SQUEUE_PARTITION",
    "SQUEUE_PRIORITY", "SQUEUE_QOS", "SQUEUE_SIBLING", "SQUEUE_SORT", "SQUEUE_STATES",
    "SQUEUE_USERS",
    # sacct
    "SACCT_FEDERATION", "SACCT_FORMAT", "SACCT_LOCAL",
    # scancel
    "SCANCEL_ACCOUNT", "SCANCEL_BATCH", "SCANCEL_CTLD", "SCANCEL_CRON", "SCANCEL_FULL",
    "SCANCEL_HURRY", "SCANCEL_INTERACTIVE", "SCANCEL_NAME", "SCANCEL_PARTITION", "SCANCEL_QOS",
    "SCANCEL_STATE", "SCANCEL_USER", "SCANCEL_VERBOSE", "SCANCEL_WCKEY",
    # scontrol
    "SCONTROL_ALL", "SCONTROL_FEDERATION", "SCONTROL_FUTURE", "SCONTROL_LOCAL",
    "SCONTROL_SIBLING", "SLURM_CONF_OUT", "SLURM_TOPO_LEN",
    # shared by several (sstat: only SLURM_CONF and SLURM_DEBUG_FLAGS)
    "SLURM_BITSTR_LEN", "SLURM_CLUSTERS", "SLURM_DEBUG_FLAGS", "SLURM_JSON",
    "SLURM_TIME_FORMAT", "SLURM_YAML",
)  # fmt: skip
# Whole families, for bash (``unset ${!SBATCH_@}``): also catches names a newer Slurm adds.
SCHEDULER_ENV_PREFIXES: tuple[str, ...] = ("SBATCH_", "SQUEUE_", "SACCT_", "SCANCEL_", "SCONTROL_")

_JOB_ID = re.compile(r"^\d+(_\d+)?$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_text(what: str, value: str) -> str:
    """Reject values that could end a #SBATCH line or a shell word: newline, CR, NUL."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string, got {value!r}")
    if any(c in value for c in "\n\r\x00"):
        raise UsageError(f"{what} may not contain newline, carriage return or NUL: {value!r}")
    return value


def scrub_env(argv: Sequence[str]) -> list[str]:
    """``argv`` run without the scheduler's input environment variables (``SCHEDULER_ENV``):
    ``env -u NAME ... <argv>``. ``env`` runs after any login shell, so a variable a profile
    sets is removed too. Every scheduler command hpcbridge runs goes through this (or, in a
    bash script, ``scrub_env_shell()``). The job still gets the user's environment (sbatch
    exports it), less these variables, which only parameterise Slurm's client commands."""
    out = ["env"]
    for name in SCHEDULER_ENV:
        out += ["-u", name]
    return out + list(argv)


def scrub_env_shell() -> str:
    """The bash lines that remove the scheduler's input variables from a script's
    environment: every name of ``SCHEDULER_ENV`` plus whole ``SCHEDULER_ENV_PREFIXES``
    families (``${!SBATCH_@}`` expands to every set variable named SBATCH_...)."""
    families = " ".join(f'"${{!{p}@}}"' for p in SCHEDULER_ENV_PREFIXES)
    names = " ".join(n for n in SCHEDULER_ENV if not n.startswith(SCHEDULER_ENV_PREFIXES))
    return f"unset {families} 2>/dev/null; unset {names}"


def check_job_ids(job_ids: Iterable[str]) -> list[str]:
    """Job ids as strings, each ``123`` or ``123_4``; raises UsageError otherwise or if none."""
    ids = [str(j) for j in job_ids]
    if not ids:
        raise UsageError("at least one job id is needed")
    for j in ids:
        if not _JOB_ID.match(j):
            raise UsageError(f"invalid Slurm job id {j!r}", hint="expected digits, or 123_4")
    return ids


def command_path(name: str, bin_dir: str | None) -> str:
    """The Slurm command ``name``, from ``slurm_bin_dir`` when one is configured (absolute)."""
    if bin_dir is None:
        return name
    check_text("slurm_bin_dir", bin_dir)
    if not posixpath.isabs(bin_dir):
        raise UsageError(f"slurm_bin_dir must be an absolute path, got {bin_dir!r}")
    return posixpath.join(bin_dir, name)


def _format_time(epoch: float, tz: tzinfo | None) -> str:
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%dT%H:%M:%S")


def job_name(task_id: str, attempt: int) -> str:
    """The Slurm job name of an attempt: ``hpcb-<taskid>-<attempt>``, reduced to characters
    that are harmless everywhere a job name is shown or matched (``--name`` filters)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"hpcb-{task_id}-{int(attempt)}")[:128]


def comment_for_token(token: str) -> str:
    if not _TOKEN.match(token):
        raise UsageError(f"invalid submission token {token!r}")
    return COMMENT_PREFIX + token


def token_from_comment(comment: str | None) -> str | None:
    """``"hpcb:ab12"`` -> ``"ab12"``; anything else (other people's jobs) -> None."""
    if not comment or not comment.startswith(COMMENT_PREFIX):
        return None
    token = comment[len(COMMENT_PREFIX):].strip()
    return token if _TOKEN.match(token) else None


def sbatch_argv(*, script_path: str | None = None, bin_dir: str | None = None) -> list[str]:
    """``sbatch --parsable`` reading the script from stdin (default) or from ``script_path``.

    ``--parsable`` prints ``<jobid>`` or ``<jobid>;<cluster>``; every other option is in the
    script's #SBATCH lines, so what was submitted is exactly the rendered text."""
    argv = [command_path("sbatch", bin_dir), "--parsable"]
    if script_path is not None:
        check_text("script path", script_path)
        argv.append(script_path)
    return argv


def squeue_argv(
    job_ids: Iterable[str] | None = None,
    *,
    user: str | None = None,
    names: Iterable[str] | None = None,
    bin_dir: str | None = None,
) -> list[str]:
    """squeue, finished jobs included (``--states=all``: they stay for MinJobAge, 300 s by
    default), one ``|``-separated line per job in SQUEUE_FIELDS order, no header.

    Default scope is ``--me`` (preferred; see the module doc). ``user`` asks for another
    user's jobs; ``job_ids`` restricts to ids (then a single unknown id makes squeue exit 1:
    see ``squeue_missing_job_error``); ``names`` filters by job name (find by token)."""
    argv = [
        command_path("squeue", bin_dir),
        "--noheader",
        "--states=all",
        # One row per array element, pending ones included; without it pending elements
        # are folded into one row named 123_[4-9%2], which names no element.
        "--array",
        "--Format=" + ",".join(f"{f}:|" for f in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:",
    ]
    if job_ids is not None:
        argv.append("--jobs=" + ",".join(check_job_ids(job_ids)))
    if user is not None:
        if not _USER.match(user):
            raise UsageError(f"invalid user name {user!r}")
        argv.append(f"--user={user}")
    elif job_ids is None:
        argv.append("--me")
    if names is not None:
        argv.append("--name=" + ",".join(_check_names(names)))
    return argv


def _check_names(names: Iterable[str]) -> list[str]:
    out = [str(n) for n in names]
    if not out:
        raise UsageError("at least one job name is needed")
    for n in out:
        if not re.match(r"^[A-Za-z0-9_.-]+$", n):
            raise UsageError(f"invalid job name filter {n!r}", hint="use job_name() names")
    return out


def squeue_missing_job_error(exit_status: int, stderr: str) -> bool:
    """True when squeue failed only because a requested job id is unknown to the controller
    (it left squeue, or never existed). Treat that as "no rows", not as a failure."""
    return exit_status == 1 and "invalid job id specified" in stderr.lower()


def sacct_argv(
    job_ids: Iterable[str] | None = None,
    *,
    since: float | None = None,
    names: Iterable[str] | None = None,
    user: str | None = None,
    tz: tzinfo | None = None,
    bin_dir: str | None = None,
) -> list[str]:
    """sacct over ids and/or a start time, every instance of requeued jobs (``--duplicates``)
    and their steps, ``|``-separated (``--parsable2``: no trailing ``|``), no header.

    Without ids sacct only looks from midnight unless ``--starttime`` is given, so ``since``
    (epoch seconds, rendered in the cluster's zone ``tz``) is required then. With ids and no
    ``since`` sacct searches all history."""
    argv = [
        command_path("sacct", bin_dir),
        "--parsable2",
        "--noheader",
        "--duplicates",
        "--format=" + ",".join(SACCT_FIELDS),
    ]
    if job_ids is not None:
        argv.append("--jobs=" + ",".join(check_job_ids(job_ids)))
    if names is not None:
        argv.append("--name=" + ",".join(_check_names(names)))
    if since is not None:
        argv.append("--starttime=" + _format_time(float(since), tz))
    elif job_ids is None:
        raise UsageError("sacct without job ids needs `since` (else it only looks from midnight)")
    if user is not None:
        if not _USER.match(user):
            raise UsageError(f"invalid user name {user!r}")
        argv.append(f"--user={user}")
    return argv


def scancel_argv(
    job_ids: Iterable[str], *, signal: str | None = None, bin_dir: str | None = None
) -> list[str]:
    """scancel for these jobs. Unknown or finished ids make scancel print an error and exit
    non-zero for those ids only; the caller confirms through the next poll."""
    argv = [command_path("scancel", bin_dir)]
    if signal is not None:
        if not re.match(r"^[A-Za-z0-9]+$", signal):
            raise UsageError(f"invalid signal {signal!r}")
        argv.append(f"--signal={signal}")
    argv.extend(check_job_ids(job_ids))
    return argv


def scontrol_show_job_argv(job_id: str, *, bin_dir: str | None = None) -> list[str]:
    """``scontrol -o show job <id>``: one line of Key=Value pairs (has Restarts= on every
    version). Like squeue it exits 1 ("Invalid job id specified") for a job that left the
    controller."""
    return [command_path("scontrol", bin_dir), "-o", "show", "job", check_job_ids([job_id])[0]]
