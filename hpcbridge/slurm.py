"""Slurm, without running anything: command builders, output parsers, batch script rendering.

Everything here is pure. Builders return argv lists (quoting happens once, at the transport);
parsers take text and return models. The state table lives in ``slurm_states``.

Decisions worth knowing (details at each function):

* sbatch reads the script from **stdin** (``sbatch --parsable`` with no file): one exec carries
  the script, nothing is left on the cluster's disk, and the script's ``#SBATCH`` lines carry
  every option (name, comment, chdir, output, resources).
* Polling uses **one squeue per cluster without -j**: ``squeue --me --states=all``.
  ``squeue -j <one unknown id>`` exits 1 ("Invalid job id specified") while a mix of known
  and unknown ids exits 0, so an id list turns a normal event (the job left squeue after
  MinJobAge) into an error for the whole query. Listing the user's jobs costs one query
  regardless of N and also shows jobs whose sbatch outcome was lost, recognised by the
  ``hpcb:<token>`` comment. ``squeue_argv(job_ids=...)`` still exists; with it, use
  ``squeue_missing_job_error()`` to read that exit 1 as "no rows".
* Parsers never fail the batch for one bad line: they log it (WARNING) and append a message to
  the optional ``problems`` list. Only sbatch output, which is about one job, raises.
* Slurm prints times in the cluster's local time, without a zone: parsers take ``tz``
  (None = this machine's zone).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, tzinfo

from .errors import ParseError, UsageError
from .lifecycle import TaskState
from .models import JobInfo, Resources, TaskSpec
from .slurm_states import COMPACT_CODES, STATE_TABLE, map_state, normalize_state

log = logging.getLogger(__name__)

__all__ = [
    "COMMENT_PREFIX",
    "SACCT_FIELDS",
    "SQUEUE_FIELDS",
    "comment_for_token",
    "job_name",
    "map_state",
    "merge_resources",
    "merge_views",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol_show_job",
    "parse_slurm_time",
    "parse_squeue",
    "render_batch_script",
    "sacct_argv",
    "sbatch_argv",
    "scancel_argv",
    "scontrol_show_job_argv",
    "squeue_argv",
    "squeue_missing_job_error",
    "token_from_comment",
]

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

_JOB_ID = re.compile(r"^\d+(_\d+)?$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODE = re.compile(r"^[A-Za-z0-9_.\-\[\],]+$")
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}(:\d{1,2})?|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$", re.I)
_MEM = re.compile(r"^\d+[KMGT]?B?$", re.I)
_SIGNAL = re.compile(r"^((B|R|RB|BR):)?[A-Za-z0-9]+(@\d+)?$")
_SLURM_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_NO_VALUE = frozenset({"", "N/A", "NONE", "UNKNOWN", "(NULL)", "INVALID"})


# --------------------------------------------------------------------------- helpers


def _check_text(what: str, value: str) -> str:
    """Reject values that could end a #SBATCH line or a shell word: newline, CR, NUL."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string, got {value!r}")
    if any(c in value for c in "\n\r\x00"):
        raise UsageError(f"{what} may not contain newline, carriage return or NUL: {value!r}")
    return value


def _check_job_ids(job_ids: Iterable[str]) -> list[str]:
    ids = [str(j) for j in job_ids]
    if not ids:
        raise UsageError("at least one job id is needed")
    for j in ids:
        if not _JOB_ID.match(j):
            raise UsageError(f"invalid Slurm job id {j!r}", hint="expected digits, or 123_4")
    return ids


def _cmd(name: str, bin_dir: str | None) -> str:
    if bin_dir is None:
        return name
    _check_text("slurm_bin_dir", bin_dir)
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


# --------------------------------------------------------------------------- builders


def sbatch_argv(*, script_path: str | None = None, bin_dir: str | None = None) -> list[str]:
    """``sbatch --parsable`` reading the script from stdin (default) or from ``script_path``.

    ``--parsable`` prints ``<jobid>`` or ``<jobid>;<cluster>``; every other option is in the
    script's #SBATCH lines, so what was submitted is exactly the rendered text."""
    argv = [_cmd("sbatch", bin_dir), "--parsable"]
    if script_path is not None:
        _check_text("script path", script_path)
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
        _cmd("squeue", bin_dir),
        "--noheader",
        "--states=all",
        "--Format=" + ",".join(f"{f}:|" for f in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:",
    ]
    if job_ids is not None:
        argv.append("--jobs=" + ",".join(_check_job_ids(job_ids)))
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
        _cmd("sacct", bin_dir),
        "--parsable2",
        "--noheader",
        "--duplicates",
        "--format=" + ",".join(SACCT_FIELDS),
    ]
    if job_ids is not None:
        argv.append("--jobs=" + ",".join(_check_job_ids(job_ids)))
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
    argv = [_cmd("scancel", bin_dir)]
    if signal is not None:
        if not re.match(r"^[A-Za-z0-9]+$", signal):
            raise UsageError(f"invalid signal {signal!r}")
        argv.append(f"--signal={signal}")
    argv.extend(_check_job_ids(job_ids))
    return argv


def scontrol_show_job_argv(job_id: str, *, bin_dir: str | None = None) -> list[str]:
    """``scontrol -o show job <id>``: one line of Key=Value pairs (has Restarts= on every
    version). Like squeue it exits 1 ("Invalid job id specified") for a job that left the
    controller."""
    return [_cmd("scontrol", bin_dir), "-o", "show", "job", _check_job_ids([job_id])[0]]


# --------------------------------------------------------------------------- parsing bits


def parse_slurm_time(text: str | None, tz: tzinfo | None = None) -> float | None:
    """``2026-11-25T17:35:30`` (cluster-local) -> epoch seconds; ``Unknown``, ``None``,
    ``N/A``, empty -> None. Raises ValueError for anything else."""
    value = (text or "").strip()
    if value.upper() in _NO_VALUE:
        return None
    if not _SLURM_TIME.match(value):
        raise ValueError(f"not a Slurm time: {value!r}")
    # fromisoformat: same result as strptime for this exact shape (checked by the regex
    # above), ~50x faster - a sync over thousands of squeue rows parses three times each.
    return datetime.fromisoformat(value).replace(tzinfo=tz).timestamp()


def parse_exit_code(text: str | None) -> tuple[int | None, int | None]:
    """sacct/scontrol ``3:0`` -> (3, 0); ``0:9`` -> (0, 9). squeue's exit_code is the raw wait
    status instead: ``768`` -> (3, 0), ``9`` -> (0, 9). Empty/N/A -> (None, None)."""
    value = (text or "").strip()
    if value.upper() in _NO_VALUE:
        return None, None
    if ":" in value:
        code, _, sig = value.partition(":")
        return int(code), int(sig)
    status = int(value)
    return (status >> 8) & 0xFF, status & 0x7F


def _opt(text: str) -> str | None:
    value = text.strip()
    return None if value.upper() in _NO_VALUE else value


def _split(line: str, n: int) -> list[str]:
    """Split into n fields; surplus "|" belongs to the last (free text) field."""
    parts = line.split("|")
    if len(parts) < n:
        raise ValueError(f"expected {n} fields, got {len(parts)}")
    return parts[: n - 1] + ["|".join(parts[n - 1:])]


def _report(problems: list[str] | None, source: str, line: str, exc: Exception) -> None:
    msg = f"{source}: skipped line {line!r}: {exc}"
    log.warning("%s", msg)
    if problems is not None:
        problems.append(msg)


def _live_times(
    state: TaskState | None, start: float | None, end: float | None
) -> tuple[float | None, float | None]:
    # squeue/scontrol print the *expected* start of a pending job and the *expected* end
    # (start + time limit) of a running one: only believe them once they are facts.
    if state is TaskState.QUEUED:
        return None, None
    if state in (TaskState.RUNNING, TaskState.SUSPENDED):
        return start, None
    return start, end


# --------------------------------------------------------------------------- parsers


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable``: ``123`` or ``123;cluster``. sbatch may print
    warnings on stdout before it, so the last non-empty line counts. Raises ParseError."""
    lines = [ln.strip() for ln in stdout.strip().splitlines() if ln.strip()]
    if lines:
        job_id = lines[-1].split(";", 1)[0].strip()
        if re.fullmatch(r"\d+", job_id):
            return job_id
    raise ParseError(
        "sbatch output (expected '<jobid>' or '<jobid>;<cluster>')",
        stdout,
        hint="the job may or may not exist; it will be looked for by its token",
    )


def _parse_rows(text: str, parse_row: Callable[[str], JobInfo], source: str,
                problems: list[str] | None) -> list[JobInfo]:  # fmt: skip
    """One JobInfo per non-empty line; a line that does not parse is reported and skipped,
    never fatal for the batch."""
    rows: list[JobInfo] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(parse_row(line))
        except (ValueError, IndexError, KeyError) as exc:
            _report(problems, source, line, exc)
    return rows


def parse_squeue(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None
) -> list[JobInfo]:
    """Rows of ``squeue_argv()`` output. Unknown state words give ``state=None`` (not an
    error); malformed lines are skipped and reported."""
    return _parse_rows(text, lambda line: _squeue_row(line, tz), "squeue", problems)


def _squeue_row(line: str, tz: tzinfo | None) -> JobInfo:
    (display_id, raw_id, raw_state, reason, restarts, status, nodes, partition, submit, start,
     end, name, comment) = _split(line, len(SQUEUE_FIELDS))
    job_id = display_id.strip() or raw_id.strip()
    if not re.fullmatch(r"\d+(_(\d+|\[[0-9,\-%]+\]))?", job_id):
        raise ValueError(f"bad job id {job_id!r}")
    exit_code, signal = parse_exit_code(status)
    state = map_state(raw_state, exit_code, signal)
    start_t, end_t = _live_times(
        state, parse_slurm_time(start, tz), parse_slurm_time(end, tz)
    )
    return JobInfo(
        job_id=job_id,
        raw_state=raw_state.strip(),
        state=state,
        source="squeue",
        reason=_opt(reason),
        exit_code=exit_code if state not in _NOT_ENDED else None,
        signal=signal if state not in _NOT_ENDED else None,
        nodes=_opt(nodes),
        partition=_opt(partition),
        restarts=int(restarts.strip() or 0),
        submit_time=parse_slurm_time(submit, tz),
        start_time=start_t,
        end_time=end_t,
        name=_opt(name),
        comment=_opt(comment),
    )


# A job that has not ended has no exit code yet (squeue prints 0 for it).
_NOT_ENDED = frozenset({TaskState.QUEUED, TaskState.RUNNING, TaskState.SUSPENDED, None})


def parse_sacct(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None
) -> dict[str, JobInfo]:
    """Fold ``sacct_argv()`` output into one JobInfo per job id.

    With ``--duplicates`` a requeued job id has one row per instance, oldest first, each
    followed by its step rows (``123.batch``, ``123.extern``, ``123.0``). The LAST instance is
    the current one; the states of the earlier ones become ``requeue_causes`` (NODE_FAIL,
    PREEMPTED, REQUEUED) and their number ``restarts`` (sacct 22.05 has no Restarts field).
    Step rows only matter for one quirk: a job row FAILED whose batch/extern step is
    OUT_OF_MEMORY (cgroup OOM kill) is reported OUT_OF_MEMORY."""
    instances: dict[str, list[JobInfo]] = {}
    oom_steps: set[tuple[str, int]] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            job_id, step, info = _sacct_row(line, tz)
        except (ValueError, IndexError) as exc:
            _report(problems, "sacct", line, exc)
            continue
        if step is None:
            instances.setdefault(job_id, []).append(info)
        elif job_id in instances and normalize_state(info.raw_state)[0] == "OUT_OF_MEMORY":
            oom_steps.add((job_id, len(instances[job_id]) - 1))
        # A step row before any job row (sacct never prints that) is ignored.
    out: dict[str, JobInfo] = {}
    for job_id, rows in instances.items():
        current = rows[-1]
        if (job_id, len(rows) - 1) in oom_steps and current.state is TaskState.FAILED:
            current = replace(current, state=TaskState.OUT_OF_MEMORY)
        causes = tuple(normalize_state(r.raw_state)[0] for r in rows[:-1])
        # Measured on 22.05: after `scontrol requeue` the new instance's row has an EMPTY
        # Comment (the earlier row keeps "hpcb:<token>"). Carry it over, or a requeued job
        # could no longer be found by its token.
        comment = current.comment or next((r.comment for r in reversed(rows) if r.comment), None)
        out[job_id] = replace(current, requeue_causes=causes, restarts=len(causes), comment=comment)
    return out


def _sacct_row(line: str, tz: tzinfo | None) -> tuple[str, str | None, JobInfo]:
    (full_id, _raw_id, raw_state, exit_text, reason, nodes, partition, submit, start, end,
     name, comment) = _split(line, len(SACCT_FIELDS))
    full_id = full_id.strip()
    job_id, dot, step = full_id.partition(".")
    if not re.fullmatch(r"\d+(_(\d+|\[[0-9,\-%]+\]))?", job_id) or (dot and not step):
        raise ValueError(f"bad job id {full_id!r}")
    exit_code, signal = parse_exit_code(exit_text)
    state = map_state(raw_state, exit_code, signal)
    start_t, end_t = _live_times(
        state, parse_slurm_time(start, tz), parse_slurm_time(end, tz)
    )
    info = JobInfo(
        job_id=job_id,
        raw_state=raw_state.strip(),
        state=state,
        source="sacct",
        reason=_opt(reason),
        exit_code=exit_code if state not in _NOT_ENDED else None,
        signal=signal if state not in _NOT_ENDED else None,
        nodes=_opt(nodes) if _opt(nodes) != "None assigned" else None,
        partition=_opt(partition),
        submit_time=parse_slurm_time(submit, tz),
        start_time=start_t,
        end_time=end_t,
        name=_opt(name),
        comment=_opt(comment),
    )
    return job_id, (step if dot else None), info


def parse_scontrol_show_job(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None
) -> list[JobInfo]:
    """``scontrol -o show job`` output (one line per job, ``Key=Value`` separated by spaces;
    values such as Reason or Comment may contain spaces, so a key is only a word followed by
    ``=`` at the start or after a space)."""
    return _parse_rows(text, lambda line: _scontrol_row(line, tz), "scontrol", problems)


_KV = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def _scontrol_row(line: str, tz: tzinfo | None) -> JobInfo:
    matches = list(_KV.finditer(line))
    kv: dict[str, str] = {}
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        kv.setdefault(m.group(1), line[m.end():stop].strip())
    job_id = kv["JobId"]
    if kv.get("ArrayTaskId") and kv.get("ArrayJobId"):
        job_id = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
    exit_code, signal = parse_exit_code(kv.get("ExitCode"))
    raw_state = kv["JobState"]
    state = map_state(raw_state, exit_code, signal)
    start_t, end_t = _live_times(
        state, parse_slurm_time(kv.get("StartTime"), tz), parse_slurm_time(kv.get("EndTime"), tz)
    )
    return JobInfo(
        job_id=job_id,
        raw_state=raw_state,
        state=state,
        source="scontrol",
        reason=_opt(kv.get("Reason", "")),
        exit_code=exit_code if state not in _NOT_ENDED else None,
        signal=signal if state not in _NOT_ENDED else None,
        nodes=_opt(kv.get("NodeList", "")),
        partition=_opt(kv.get("Partition", "")),
        restarts=int(kv.get("Restarts", "0") or 0),
        submit_time=parse_slurm_time(kv.get("SubmitTime"), tz),
        start_time=start_t,
        end_time=end_t,
        name=_opt(kv.get("JobName", "")),
        comment=_opt(kv.get("Comment", "")),
    )


def merge_views(
    squeue_rows: Iterable[JobInfo], sacct_rows: Mapping[str, JobInfo]
) -> dict[str, JobInfo]:
    """The best current view per job id.

    squeue wins for every job it still lists: it is the controller's live state, while sacct
    lags (on 22.05 a running job showed PENDING named "allocation" in sacct, and the final row
    arrived up to 1 s after squeue said COMPLETED). sacct adds what squeue cannot know: the
    requeue causes (states of earlier instances). Jobs absent from squeue (past MinJobAge)
    come from sacct alone. Absence from both is NOT success: the caller decides about lost.
    """
    merged: dict[str, JobInfo] = dict(sacct_rows)
    for row in squeue_rows:
        acct = sacct_rows.get(row.job_id)
        if acct is not None:
            row = replace(
                row,
                requeue_causes=acct.requeue_causes,
                restarts=max(row.restarts, acct.restarts),
                comment=row.comment or acct.comment,
            )
        merged[row.job_id] = row
    return merged


# --------------------------------------------------------------------------- batch script


def merge_resources(task: Resources, defaults: Resources) -> Resources:
    """Task values over cluster defaults; extra sbatch options are concatenated (defaults
    first, so a task option given later on the command line of #SBATCH lines wins)."""
    return Resources(
        time=task.time if task.time is not None else defaults.time,
        cpus=task.cpus if task.cpus is not None else defaults.cpus,
        mem=task.mem if task.mem is not None else defaults.mem,
        gres=task.gres if task.gres is not None else defaults.gres,
        partition=task.partition if task.partition is not None else defaults.partition,
        account=task.account if task.account is not None else defaults.account,
        qos=task.qos if task.qos is not None else defaults.qos,
        sbatch_options=tuple(defaults.sbatch_options) + tuple(task.sbatch_options),
        signal=task.signal if task.signal is not None else defaults.signal,
    )


def sbatch_quote(value: str) -> str:
    """Quote one #SBATCH word. sbatch splits #SBATCH lines itself, not with a shell
    (``_get_argument`` in src/sbatch/opt.c): whitespace separates words, ``'`` or ``"`` open a
    quoted run, a backslash escapes the next character (inside quotes too), and an unquoted
    ``#`` ends the line. Nothing is expanded. So a double-quoted word with ``\\`` and ``"``
    backslash-escaped comes back exactly; a newline is the only way out of the line, and is
    rejected."""
    _check_text("#SBATCH value", value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _percent_escape(path: str) -> str:
    # --output/--error are filename patterns: %j, %x, ... are replaced; %% is a literal %.
    return path.replace("%", "%%")


def render_batch_script(
    *,
    task_id: str,
    attempt: int,
    token: str,
    spec: TaskSpec,
    resources: Resources,
    work_dir: str,
    setup: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    exclude_nodes: Sequence[str] = (),
    requeue: bool = True,
) -> str:
    """The sbatch script for one attempt.

    ``resources`` is already merged (``merge_resources(spec.resources, cluster.defaults)``).
    ``work_dir`` must be absolute (sbatch does not expand ``~``) and
    ``<work_dir>/.hpcbridge/`` must exist before submission: slurmstepd opens the
    ``--output``/``--error`` files there before the script runs. ``setup`` lines are trusted
    site configuration and are copied verbatim; every other value is quoted.
    Env: cluster ``env`` first, then ``spec.env`` (task wins).
    """
    if attempt < 1:
        raise UsageError(f"attempt numbers start at 1, got {attempt}")
    _check_text("work_dir", work_dir)
    if not posixpath.isabs(work_dir):
        raise UsageError(
            f"work_dir must be absolute on the cluster, got {work_dir!r}",
            hint="resolve '~' to the remote home before rendering",
        )
    work_dir = posixpath.normpath(work_dir)
    meta = posixpath.join(work_dir, ".hpcbridge")
    marker_dir = posixpath.join(meta, str(attempt))

    opts: list[str] = [
        f"--job-name={job_name(task_id, attempt)}",
        f"--comment={comment_for_token(token)}",
        f"--chdir={work_dir}",
        f"--output={_percent_escape(posixpath.join(meta, f'attempt-{attempt}.out'))}",
        f"--error={_percent_escape(posixpath.join(meta, f'attempt-{attempt}.err'))}",
        # A Slurm-side requeue re-runs the script with the same files: keep the first run's
        # output instead of truncating it.
        "--open-mode=append",
    ]
    r = resources
    for flag, value in (("partition", r.partition), ("account", r.account), ("qos", r.qos)):
        if value is not None:
            opts.append(f"--{flag}={_check_text(flag, value)}")
    if r.time is not None:
        if not _TIME.match(r.time):
            raise UsageError(f"invalid time limit {r.time!r}", hint="e.g. 10, 01:00:00, 1-00:00:00")
        opts.append(f"--time={r.time}")
    if r.cpus is not None:
        if isinstance(r.cpus, bool) or not isinstance(r.cpus, int) or r.cpus < 1:
            raise UsageError(f"cpus must be a positive integer, got {r.cpus!r}")
        opts.append(f"--cpus-per-task={r.cpus}")
    if r.mem is not None:
        if not _MEM.match(r.mem):
            raise UsageError(f"invalid memory {r.mem!r}", hint="e.g. 500M, 2G")
        opts.append(f"--mem={r.mem}")
    if r.gres is not None:
        opts.append(f"--gres={_check_text('gres', r.gres)}")
    if r.signal is not None:
        if not _SIGNAL.match(r.signal):
            raise UsageError(f"invalid signal spec {r.signal!r}", hint="e.g. B:USR1@60")
        opts.append(f"--signal={r.signal}")
    if exclude_nodes:
        for node in exclude_nodes:
            if not _NODE.match(node):
                raise UsageError(f"invalid node name {node!r}")
        opts.append("--exclude=" + ",".join(exclude_nodes))
    opts.append("--requeue" if requeue else "--no-requeue")
    for extra in r.sbatch_options:
        _check_text("sbatch option", extra)
        if not extra.startswith("-"):
            raise UsageError(f"sbatch options must start with '-', got {extra!r}")
        opts.append(extra)

    lines = ["#!/bin/bash"]
    for o in opts:
        flag, eq, value = o.partition("=")
        if eq and re.fullmatch(r"--[a-z][a-z-]*", flag):
            lines.append(f"#SBATCH {flag}={sbatch_quote(value)}")
        else:
            lines.append(f"#SBATCH {sbatch_quote(o)}")
    lines += [
        f"# hpcbridge task {job_name(task_id, attempt)}: no #SBATCH lines below this point",
        "set -u",
        f"__hpcb_dir={shlex.quote(marker_dir)}",
        'mkdir -p "$__hpcb_dir"',
        "# Markers are written to a temp file and renamed: a reader never sees half a value.",
        "__hpcb_mark() {",
        '    printf \'%s\\n\' "$2" > "$__hpcb_dir/.$1.$$" && mv -f "$__hpcb_dir/.$1.$$" "$__hpcb_dir/$1"',
        "}",
        "# A Slurm requeue re-runs this script in the same attempt: forget the previous end.",
        'rm -f "$__hpcb_dir/exit_code"',
        '__hpcb_mark started "$(date +%s)"',
        '__hpcb_mark node "${SLURMD_NODENAME:-$(hostname)}"',
        '__hpcb_mark job_id "${SLURM_JOB_ID:-}"',
        '__hpcb_mark restarts "${SLURM_RESTART_COUNT:-0}"',
    ]
    if setup:
        lines.append("# --- cluster setup (site configuration, verbatim) ---")
        for s in setup:
            if "\x00" in s:
                raise UsageError("setup lines may not contain NUL")
            lines.append(s)
        lines.append("# --- end of cluster setup ---")
    merged_env: dict[str, str] = {**dict(env or {}), **dict(spec.env)}
    for key, value in merged_env.items():
        if not _ENV_NAME.match(key):
            raise UsageError(f"invalid environment variable name {key!r}")
        if "\x00" in value:
            raise UsageError(f"environment value of {key} contains NUL")
        lines.append(f"export {key}={shlex.quote(value)}")

    if spec.script is not None:
        body = spec.script
        if "\x00" in body:
            raise UsageError("the task script may not contain NUL bytes")
        if not body.endswith("\n"):
            body += "\n"
        delim = _heredoc_delimiter(body, token)
        lines += [
            "# The task's script, copied without any expansion (quoted here-document).",
            f"cat > \"$__hpcb_dir/script.sh\" <<'{delim}'",
            body.rstrip("\n"),
            delim,
            'command_to_run=(bash "$__hpcb_dir/script.sh")',
        ]
        run = '"${command_to_run[@]}"'
    else:
        for arg in spec.command:
            if "\x00" in arg:
                raise UsageError("command arguments may not contain NUL bytes")
        run = shlex.join(spec.command)

    lines += [
        "# Run the task in the background so this shell can take signals (--signal=B:...,",
        "# scancel --batch) and pass them on. Job control (set -m) keeps SIGINT deliverable:",
        "# without it a background child starts with SIGINT ignored.",
        "__hpcb_child=",
        "__hpcb_sig=",
        "# A signal that arrives before the child exists is kept and delivered once it does.",
        "__hpcb_pending=",
        '__hpcb_fwd() { __hpcb_sig=1; if [ -n "$__hpcb_child" ]; then kill -s "$1" "$__hpcb_child" 2>/dev/null; else __hpcb_pending=$1; fi; return 0; }',
        "trap '__hpcb_fwd TERM' TERM",
        "trap '__hpcb_fwd USR1' USR1",
        "trap '__hpcb_fwd USR2' USR2",
        "trap '__hpcb_fwd INT' INT",
        "set -m",
        f"{run} &",
        "__hpcb_child=$!",
        "set +m",
        'if [ -n "$__hpcb_pending" ]; then kill -s "$__hpcb_pending" "$__hpcb_child" 2>/dev/null; fi',
        "__hpcb_rc=",
        "# wait returns early (128+n) when a trapped signal arrives: wait again until the",
        "# child itself has ended; 127 means it was already collected.",
        "while :; do",
        "    __hpcb_sig=",
        '    wait "$__hpcb_child"; __hpcb_st=$?',
        '    if [ "$__hpcb_st" -eq 127 ] && [ -n "$__hpcb_rc" ]; then break; fi',
        "    __hpcb_rc=$__hpcb_st",
        '    [ -n "$__hpcb_sig" ] || break',
        "done",
        "# An exit status is 0..255; seen once in the lab under scancel: -1. Never pass that on.",
        'case "$__hpcb_rc" in',
        "    ''|*[!0-9]*) __hpcb_rc=255 ;;",
        "esac",
        '[ "$__hpcb_rc" -le 255 ] || __hpcb_rc=255',
        '__hpcb_mark exit_code "$__hpcb_rc"',
        'exit "$__hpcb_rc"',
    ]
    return "\n".join(lines) + "\n"


def _heredoc_delimiter(body: str, token: str) -> str:
    """A delimiter derived from the body (deterministic, so renders are reproducible) and
    checked never to occur as a line of it, so the body cannot end the here-document."""
    body_lines = set(body.splitlines())
    n = 0
    while True:
        digest = hashlib.sha256(f"{token}\0{n}\0{body}".encode()).hexdigest()[:24]
        delim = f"HPCB_EOF_{digest}"
        if delim not in body_lines:
            return delim
        n += 1


# Re-exported so callers and tests need one import.
STATES = STATE_TABLE
CODES = COMPACT_CODES
