"""Parsers for what the Slurm client commands print. Pure: text in, models out.

* Parsers never fail the batch for one bad line: they log it (WARNING), append a message to
  the optional ``problems`` list and a ``BadRow`` (with the job id / token it seems to be
  about, when that much can be read) to the optional ``bad_rows`` list, so the caller can
  leave exactly those jobs as they were: a row that fails to parse is not absence. Only
  sbatch output, which is about one job, raises.
* Slurm prints times in the cluster's local time, without a zone: parsers take ``tz``
  (None = this machine's zone). hpcbridge runs its commands without SLURM_TIME_FORMAT (see
  ``commands.scrub_env``), so times are ISO; the other formats Slurm can print are read too
  (see ``parse_slurm_time``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from ..errors import ParseError
from ..lifecycle import TaskState
from ..models import JobInfo
from .commands import SACCT_FIELDS, SQUEUE_FIELDS, token_from_comment
from .hostlist import expand_hostlist
from .states import classify_job, normalize_state, requeue_state

log = logging.getLogger(__name__)

_SCHEDULER_DOWN = re.compile(
    r"unable to contact slurm controller|socket timed out|connection refused|"
    r"communication connection failure|slurm_load_jobs error|slurmdbd|"
    r"zero bytes were transmitted",
    re.I,
)
_ACCOUNTING_OFF = re.compile(r"accounting storage is disabled", re.I)
_SLURM_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}$")
# SLURM_TIME_FORMAT=%s (any strftime format is allowed there): epoch seconds.
_EPOCH = re.compile(r"^\d{9,11}$")
# SLURM_TIME_FORMAT=relative (``man squeue``): "HH:MM:SS" today, "Tomorr HH:MM", "Ystday
# HH:MM", a weekday name and "HH:MM" within the coming week, "25 Apr HH:MM" later this year,
# "6 Jun 2012" in another year. Minutes at best and relative to a "now" nobody printed.
_RELATIVE = re.compile(
    r"^(\d{1,2}:\d{2}(:\d{2})?"
    r"|(Tomorr|Ystday|Today|Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2}:\d{2}(:\d{2})?"
    r"|\d{1,2} [A-Z][a-z]{2}( \d{1,2}:\d{2}| \d{4})?)$"
)
_JOB_ID = re.compile(r"^\d+(_(\d+|\[[0-9,\-%]+\]))?$")
_NO_VALUE = frozenset({"", "N/A", "NONE", "UNKNOWN", "(NULL)", "INVALID"})


# --------------------------------------------------------------------------- parsing bits


def parse_slurm_time(text: str | None, tz: tzinfo | None = None) -> float | None:
    """A time as Slurm prints it (cluster-local) -> epoch seconds.

    ``2026-11-25T17:35:30`` (the standard format; also with a space for the ``T``) and epoch
    seconds (``SLURM_TIME_FORMAT=%s``) are read exactly. ``Unknown``, ``None``, ``N/A``,
    empty, and the imprecise ``SLURM_TIME_FORMAT=relative`` forms (``Ystday 17:40``,
    ``25 Apr 09:00``, ``17:40:06``) give None: no time rather than a wrong one. Raises
    ValueError for anything else (another strftime format hpcbridge cannot read back)."""
    value = (text or "").strip()
    if value.upper() in _NO_VALUE:
        return None
    if _SLURM_TIME.match(value):
        # fromisoformat: same result as strptime for this exact shape (checked by the regex
        # above), ~50x faster - a sync over thousands of squeue rows parses three times each.
        return datetime.fromisoformat(value).replace(tzinfo=tz).timestamp()
    if _EPOCH.match(value):
        return float(value)
    if _RELATIVE.match(value):
        return None
    raise ValueError(f"not a Slurm time: {value!r}")


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


@dataclass(frozen=True)
class BadRow:
    """A line of squeue/sacct/scontrol output that did not parse, with the job id and token it
    seems to be about when that much could be read (None otherwise). Such a job is not
    absent: its state is unknown this time."""

    source: str
    line: str
    error: str
    job_id: str | None = None
    token: str | None = None

    @property
    def message(self) -> str:
        return f"{self.source}: skipped line {self.line!r}: {self.error}"


@dataclass(frozen=True)
class Unreadable:
    """One command's bad rows, indexed: which jobs and tokens had a row hpcbridge could not
    read, and whether a line that looks like a job row named no job at all (``blind``: then
    no job's absence from that output can be trusted)."""

    by_id: Mapping[str, BadRow]
    by_token: Mapping[str, BadRow]
    blind: BadRow | None = None

    @classmethod
    def of(cls, rows: Iterable[BadRow]) -> Unreadable:
        by_id: dict[str, BadRow] = {}
        by_token: dict[str, BadRow] = {}
        blind: BadRow | None = None
        for row in rows:
            if row.job_id:
                by_id.setdefault(row.job_id, row)
            if row.token:
                by_token.setdefault(row.token, row)
            # A banner or warning is no job row; a line in the query's own shape is.
            shaped = "|" in row.line if row.source != "scontrol" else "JobId=" in row.line
            if not row.job_id and not row.token and shaped and blind is None:
                blind = row
        return cls(by_id, by_token, blind)

    def find(self, job_id: str | None, token: str | None) -> BadRow | None:
        """The bad row about this job (by id) or attempt (by token), if any."""
        return (self.by_id.get(job_id) if job_id else None) or (
            self.by_token.get(token) if token else None)


def unknown_job(job_id: str | None, bad: BadRow) -> JobInfo:
    """What a poll answers for a job whose row could not be read: ``state=None`` (the cycle
    changes nothing, and the lost-grace clock does not run) with the reason as raw state."""
    return JobInfo(job_id=job_id or bad.job_id or "", state=None, source=bad.source,
                   raw_state=f"unreadable {bad.source} row ({bad.error}): {bad.line[:200]!r}")


def _attribute(source: str, line: str) -> tuple[str | None, str | None]:
    """Best effort: the job id and token of a line that did not parse."""
    if source == "scontrol":
        m = re.search(r"(?:^|\s)JobId=(\d+)", line)
        arr = re.search(r"\sArrayJobId=(\d+)\s.*?ArrayTaskId=(\d+)", line)
        tok = re.search(r"\sComment=(\S+)", line)
        job_id = f"{arr[1]}_{arr[2]}" if arr else (m[1] if m else None)
        return job_id, token_from_comment(tok[1]) if tok else None
    parts = line.split("|")
    if len(parts) < 2:
        return None, None
    heads = [parts[0].strip()] if source == "sacct" else [p.strip() for p in parts[:2]]
    job_id = next((h.partition(".")[0] for h in heads if _JOB_ID.match(h.partition(".")[0])), None)
    return job_id, token_from_comment(parts[-1].strip())


def _report(problems: list[str] | None, bad_rows: list[BadRow] | None, source: str, line: str,
            exc: Exception) -> None:  # fmt: skip
    job_id, token = _attribute(source, line)
    bad = BadRow(source, line, str(exc), job_id, token)
    log.warning("%s", bad.message)
    if problems is not None:
        problems.append(bad.message)
    if bad_rows is not None:
        bad_rows.append(bad)


def _live_times(
    state: TaskState | None, start: float | None, end: float | None, *, pending: bool = False
) -> tuple[float | None, float | None]:
    # squeue/scontrol print the *expected* start of a pending job and the *expected* end
    # (start + time limit) of a running one: only believe them once they are facts.
    if pending or state in (TaskState.QUEUED, TaskState.HELD):
        return None, None
    if state in (TaskState.RUNNING, TaskState.SUSPENDED):
        return start, None
    return start, end


def _node_names(nodes: str | None) -> tuple[str, ...]:
    # A node list the hostlist rules cannot read is kept raw in ``nodes`` only: it must not
    # make the row (and so the job's state) unreadable.
    try:
        return tuple(expand_hostlist(nodes or ""))
    except ValueError:
        log.warning("unreadable node list %r", nodes)
        return ()


def _job(source: str, job_id: str, raw_state: str, reason: str | None, exit_code: int | None,
         signal: int | None, nodes: str | None, start: float | None, end: float | None, *,
         partition: str | None, submit_time: float | None, name: str | None,
         comment: str | None, restarts: int = 0) -> JobInfo:  # fmt: skip
    """One JobInfo from a row's fields: the state through the one table (with the pending
    reason, which tells held jobs and held launch failures), exit code and signal only once
    the job ended, expected times dropped."""
    state, alive = classify_job(raw_state, reason, exit_code, signal)
    ended = state not in _NOT_ENDED and not alive
    start_t, end_t = _live_times(state, start, end, pending=alive)
    return JobInfo(
        job_id=job_id, raw_state=raw_state.strip(), state=state, source=source, reason=reason,
        exit_code=exit_code if ended else None, signal=signal if ended else None,
        nodes=nodes, node_names=_node_names(nodes), start_time=start_t, end_time=end_t,
        job_alive=alive, partition=partition, submit_time=submit_time, name=name,
        comment=comment, restarts=restarts,
    )  # fmt: skip


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
                problems: list[str] | None, bad_rows: list[BadRow] | None) -> list[JobInfo]:  # fmt: skip
    """One JobInfo per non-empty line; a line that does not parse is reported and skipped,
    never fatal for the batch."""
    rows: list[JobInfo] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(parse_row(line))
        except (ValueError, IndexError, KeyError) as exc:
            _report(problems, bad_rows, source, line, exc)
    return rows


def parse_squeue(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None,
    bad_rows: list[BadRow] | None = None,
) -> list[JobInfo]:
    """Rows of ``squeue_argv()`` output. Unknown state words give ``state=None`` (not an
    error); malformed lines are skipped and reported (``problems``, ``bad_rows``)."""
    return _parse_rows(text, lambda line: _squeue_row(line, tz), "squeue", problems, bad_rows)


def _squeue_row(line: str, tz: tzinfo | None) -> JobInfo:
    (display_id, raw_id, raw_state, reason, restarts, status, nodes, partition, submit, start,
     end, name, comment) = _split(line, len(SQUEUE_FIELDS))
    job_id = display_id.strip() or raw_id.strip()
    if not _JOB_ID.match(job_id):
        raise ValueError(f"bad job id {job_id!r}")
    exit_code, signal = parse_exit_code(status)
    return _job("squeue", job_id, raw_state, _opt(reason), exit_code, signal, _opt(nodes),
                parse_slurm_time(start, tz), parse_slurm_time(end, tz),
                partition=_opt(partition), restarts=int(restarts.strip() or 0),
                submit_time=parse_slurm_time(submit, tz), name=_opt(name),
                comment=_opt(comment))  # fmt: skip


# A job that has not ended has no exit code yet (squeue prints 0 for it).
_NOT_ENDED = frozenset(
    {TaskState.QUEUED, TaskState.HELD, TaskState.RUNNING, TaskState.SUSPENDED, None}
)


def parse_sacct(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None,
    bad_rows: list[BadRow] | None = None,
) -> dict[str, JobInfo]:
    """Fold ``sacct_argv()`` output into one JobInfo per job id.

    With ``--duplicates`` a requeued job id has one row per instance, oldest first, each
    followed by its step rows (``123.batch``, ``123.extern``, ``123.0``). The LAST instance is
    the current one; the states of the earlier ones become ``requeue_causes`` (NODE_FAIL,
    PREEMPTED, REQUEUED), mapped through the state table into ``requeue_states`` (only
    interruptions: node_failed, preempted; None for an admin's REQUEUED and the like), and
    their number ``restarts`` (sacct 22.05 has no Restarts field).
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
            _report(problems, bad_rows, "sacct", line, exc)
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
        out[job_id] = replace(current, requeue_causes=causes,
                              requeue_states=tuple(requeue_state(c) for c in causes),
                              restarts=len(causes), comment=comment)  # fmt: skip
    return out


def _sacct_row(line: str, tz: tzinfo | None) -> tuple[str, str | None, JobInfo]:
    (full_id, _raw_id, raw_state, exit_text, reason, nodes, partition, submit, start, end,
     name, comment) = _split(line, len(SACCT_FIELDS))
    full_id = full_id.strip()
    job_id, dot, step = full_id.partition(".")
    if not _JOB_ID.match(job_id) or (dot and not step):
        raise ValueError(f"bad job id {full_id!r}")
    exit_code, signal = parse_exit_code(exit_text)
    node_text = _opt(nodes)
    info = _job("sacct", job_id, raw_state, _opt(reason), exit_code, signal,
                node_text if node_text != "None assigned" else None,
                parse_slurm_time(start, tz), parse_slurm_time(end, tz),
                partition=_opt(partition), submit_time=parse_slurm_time(submit, tz),
                name=_opt(name), comment=_opt(comment))  # fmt: skip
    return job_id, (step if dot else None), info


def parse_scontrol_show_job(
    text: str, *, tz: tzinfo | None = None, problems: list[str] | None = None,
    bad_rows: list[BadRow] | None = None,
) -> list[JobInfo]:
    """``scontrol -o show job`` output (one line per job, ``Key=Value`` separated by spaces;
    values such as Reason or Comment may contain spaces, so a key is only a word followed by
    ``=`` at the start or after a space)."""
    return _parse_rows(text, lambda line: _scontrol_row(line, tz), "scontrol", problems, bad_rows)


_KV = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


# 26.05 prints SubmitLine=<the whole sbatch command line, unquoted> before Comment=: any
# "word=" in it would read as a key (a --comment=... there would hide the job's own comment).
# It always runs up to the WorkDir= key that follows it.
_SUBMIT_LINE = re.compile(r"(?<=\s)SubmitLine=.*?(?=\sWorkDir=)")


def _scontrol_row(line: str, tz: tzinfo | None) -> JobInfo:
    line = _SUBMIT_LINE.sub("", line, count=1)
    matches = list(_KV.finditer(line))
    kv: dict[str, str] = {}
    for i, m in enumerate(matches):
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        kv.setdefault(m.group(1), line[m.end():stop].strip())
    job_id = kv["JobId"]
    if kv.get("ArrayTaskId") and kv.get("ArrayJobId"):
        job_id = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
    exit_code, signal = parse_exit_code(kv.get("ExitCode"))
    return _job("scontrol", job_id, kv["JobState"], _opt(kv.get("Reason", "")), exit_code,
                signal, _opt(kv.get("NodeList", "")), parse_slurm_time(kv.get("StartTime"), tz),
                parse_slurm_time(kv.get("EndTime"), tz), partition=_opt(kv.get("Partition", "")),
                restarts=int(kv.get("Restarts", "0") or 0),
                submit_time=parse_slurm_time(kv.get("SubmitTime"), tz),
                name=_opt(kv.get("JobName", "")), comment=_opt(kv.get("Comment", "")))  # fmt: skip


def by_job_id(rows: Iterable[JobInfo]) -> dict[str, JobInfo]:
    """One row per job id, the last one printed, except that a row whose state says nothing
    (``state=None``: a REVOKED federation sibling, an unknown word) never replaces one that
    does: in a federated view the cluster that runs the job has the row that counts."""
    out: dict[str, JobInfo] = {}
    for row in rows:
        old = out.get(row.job_id)
        if old is not None and old.state is not None and row.state is None:
            continue
        out[row.job_id] = row
    return out


def merge_views(
    squeue_rows: Iterable[JobInfo], sacct_rows: Mapping[str, JobInfo]
) -> dict[str, JobInfo]:
    """The best current view per job id.

    squeue wins for every job it still lists: it is the controller's live state, while sacct
    lags (on 22.05 a running job showed PENDING named "allocation" in sacct, and the final row
    arrived up to 1 s after squeue said COMPLETED). sacct adds what squeue cannot know: the
    requeue causes (states of earlier instances). Jobs absent from squeue (past MinJobAge)
    come from sacct alone. Absence from both is NOT success: the caller decides about lost.
    Several squeue rows of one job id (a federated view) reduce as ``by_job_id`` says.
    """
    merged: dict[str, JobInfo] = dict(sacct_rows)
    for row in by_job_id(squeue_rows).values():
        acct = sacct_rows.get(row.job_id)
        if acct is not None:
            row = replace(
                row,
                requeue_causes=acct.requeue_causes,
                requeue_states=acct.requeue_states,
                restarts=max(row.restarts, acct.restarts),
                comment=row.comment or acct.comment,
            )
        merged[row.job_id] = row
    return merged


def scheduler_unreachable(stderr: str) -> bool:
    """True when a client command's stderr says slurmctld/slurmdbd did not answer (as opposed
    to a complaint about the request, such as an id that already ended)."""
    return bool(_SCHEDULER_DOWN.search(stderr))


def accounting_disabled(stderr: str) -> bool:
    """True when sacct failed because the cluster keeps no accounting (no slurmdbd)."""
    return bool(_ACCOUNTING_OFF.search(stderr))
