"""The sbatch script of one attempt: #SBATCH header plus the job wrapper. Pure.

sbatch reads the script as a file (or stdin) and its ``#SBATCH`` lines carry every option
(name, comment, chdir, output, resources), so what was submitted is exactly the rendered text.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence

from ..errors import UsageError
from ..models import Resources, TaskSpec
from .commands import check_text, comment_for_token, job_name
from .hostlist import compress_hostlist
from .sbatch_options import check_sbatch_options, merge_excludes

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TIME = re.compile(r"^(\d+|\d+:\d{1,2}(:\d{1,2})?|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$", re.I)
_MEM = re.compile(r"^\d+[KMGT]?B?$", re.I)
_SIGNAL = re.compile(r"^((B|R|RB|BR):)?([A-Za-z0-9]+)(@\d+)?$")


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
    check_text("#SBATCH value", value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def percent_escape(path: str) -> str:
    """A path for --output/--error, which are filename patterns: %j, %x, ... are replaced,
    %% is a literal %. (A backslash switches the patterns off and is itself dropped, so
    render_batch_script refuses work dirs with one.)"""
    return path.replace("%", "%%")


def check_signal(spec: str) -> str:
    """A ``--signal`` spec (``[B:|R:]SIG[@seconds]``) the wrapper can honour, or UsageError."""
    m = _SIGNAL.match(spec)
    if not m:
        raise UsageError(f"invalid signal spec {spec!r}", hint="e.g. B:USR1@60")
    flags, sig = (m[2] or ""), m[3].upper().removeprefix("SIG")
    if "B" in flags and sig in ("TERM", "15"):
        # TERM is what Slurm sends every process of the job on cancel, time limit and
        # preemption; the wrapper never passes a TERM on (the task would get two), so a TERM
        # for the batch shell alone would never reach the task.
        raise UsageError(f"signal spec {spec!r}: a TERM for the batch shell never reaches "
                         "the task", hint="use another signal, e.g. B:USR1@60, and "
                         "checkpoint on it")  # fmt: skip
    return spec


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
    check_text("work_dir", work_dir)
    if not posixpath.isabs(work_dir):
        raise UsageError(
            f"work_dir must be absolute on the cluster, got {work_dir!r}",
            hint="resolve '~' to the remote home before rendering",
        )
    if "\\" in work_dir:
        # slurmstepd reads a backslash in an --output/--error path as "no patterns here" and
        # drops it (22.05 keeps one of a doubled pair, 24.11 drops them all): the logs would
        # land somewhere hpcbridge does not read.
        raise UsageError(f"work_dir may not contain a backslash: {work_dir!r}",
                         hint="choose a work_dir without '\\'")  # fmt: skip
    work_dir = posixpath.normpath(work_dir)
    meta = posixpath.join(work_dir, ".hpcbridge")
    marker_dir = posixpath.join(meta, str(attempt))

    opts: list[tuple[str, str]] = [
        ("--job-name", job_name(task_id, attempt)),
        ("--comment", comment_for_token(token)),
        ("--chdir", work_dir),
        ("--output", percent_escape(posixpath.join(meta, f"attempt-{attempt}.out"))),
        ("--error", percent_escape(posixpath.join(meta, f"attempt-{attempt}.err"))),
        # A Slurm-side requeue re-runs the script with the same files: keep the first run's
        # output instead of truncating it.
        ("--open-mode", "append"),
    ]
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {flag}={sbatch_quote(value)}" for flag, value in opts]
    # The resource request is the same for every task of a sweep: validated and quoted once.
    try:
        lines += _request_lines(resources, tuple(exclude_nodes), requeue)
    except TypeError:  # a field that cannot be hashed (a list where a tuple belongs)
        lines += _request_lines.__wrapped__(resources, tuple(exclude_nodes), requeue)
    lines += [
        f"# hpcbridge task {job_name(task_id, attempt)}: no #SBATCH lines below this point",
        "set -u",
        "# This shell only keeps the markers and passes signals on. The task's environment and",
        "# the site setup are applied in the task's own process below, so nothing they set",
        "# (PATH, a variable named like these) can move or break the markers.",
        f"readonly __hpcb_dir={shlex.quote(marker_dir)}",
        'mkdir -p "$__hpcb_dir"',
        "# Markers are written to a temp file and renamed: a reader never sees half a value.",
        "__hpcb_mark() {",
        '    printf \'%s\\n\' "$2" > "$__hpcb_dir/.$1.$$" && mv -f "$__hpcb_dir/.$1.$$" "$__hpcb_dir/$1"',
        "}",
        "# A Slurm requeue re-runs this script in the same attempt: forget the previous end.",
        'rm -f "$__hpcb_dir/exit_code"',
        '__hpcb_mark started "$(date +%s)"',
        '__hpcb_mark node "${SLURMD_NODENAME:-$(hostname)}"',
        "# An array element is named <array job id>_<index> (what squeue -r, sacct and scancel",
        "# take); its SLURM_JOB_ID is an internal id of its own.",
        'if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then',
        '    __hpcb_mark job_id "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        "else",
        '    __hpcb_mark job_id "${SLURM_JOB_ID:-}"',
        "fi",
        '__hpcb_mark restarts "${SLURM_RESTART_COUNT:-0}"',
    ]
    # What runs in the task's process before the task: site setup (verbatim, unindented: it
    # may hold here-documents), then the environment (cluster env first, the task's wins).
    child: list[str] = []
    if setup:
        child.append("# --- cluster setup (site configuration, verbatim) ---")
        for s in setup:
            if "\x00" in s:
                raise UsageError("setup lines may not contain NUL")
            child.append(s)
        child.append("# --- end of cluster setup ---")
    merged_env: dict[str, str] = {**dict(env or {}), **dict(spec.env)}
    for key, value in merged_env.items():
        if not _ENV_NAME.match(key):
            raise UsageError(f"invalid environment variable name {key!r}")
        if "\x00" in value:
            raise UsageError(f"environment value of {key} contains NUL")
        child.append(f"    export {key}={shlex.quote(value)}")

    if spec.script is not None:
        body = spec.script
        if "\x00" in body:
            raise UsageError("the task script may not contain NUL bytes")
        if not body.endswith("\n"):
            body += "\n"
        delim = heredoc_delimiter(body, token)
        lines += [
            "# The task's script, copied without any expansion (quoted here-document).",
            f"cat > \"$__hpcb_dir/script.sh\" <<'{delim}'",
            body.rstrip("\n"),
            delim,
        ]
        run = 'bash "$__hpcb_dir/script.sh"'
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
        "# TERM is never passed on: on scancel, the time limit and preemption Slurm sends it to",
        "# every process of the job, the task included (a second one would interrupt its",
        "# checkpoint). This shell only keeps waiting for the task, then records its end.",
        "__hpcb_term=",
        "trap '__hpcb_sig=1; __hpcb_term=1' TERM",
        "trap '__hpcb_fwd USR1' USR1",
        "trap '__hpcb_fwd USR2' USR2",
        "trap '__hpcb_fwd INT' INT",
        "# Terminated before the task started: it never got Slurm's TERM, so do not start it.",
        'if [ -n "$__hpcb_term" ]; then __hpcb_mark exit_code 143; exit 143; fi',
        "set -m",
        "(",
        "    # Until the task replaces this subshell, a passed-on signal must not end it.",
        "    trap : USR1 USR2 INT",
        *child,
        "    trap - USR1 USR2 INT",
        f"    exec {run}",
        ") &",
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


@functools.lru_cache(maxsize=64)
def _request_lines(r: Resources, exclude_nodes: tuple[str, ...], requeue: bool) -> tuple[str, ...]:
    """The ``#SBATCH`` lines of a resource request (validated: UsageError)."""
    opts: list[str] = []
    extra_opts, extra_excludes = check_sbatch_options(r.sbatch_options)
    for flag, value in (("partition", r.partition), ("account", r.account), ("qos", r.qos)):
        if value is not None:
            opts.append(f"--{flag}={check_text(flag, value)}")
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
        opts.append(f"--gres={check_text('gres', r.gres)}")
    if r.signal is not None:
        opts.append(f"--signal={check_signal(r.signal)}")
    try:
        excluded = merge_excludes(exclude_nodes, extra_excludes)
    except ValueError as exc:
        raise UsageError(f"invalid node exclusion list {list(exclude_nodes)!r}: {exc}",
                         hint="node names or Slurm hostlists, e.g. node[1-3]") from exc  # fmt: skip
    if excluded:
        opts.append("--exclude=" + compress_hostlist(excluded))
    opts.append("--requeue" if requeue else "--no-requeue")
    opts.extend(extra_opts)
    lines = []
    for o in opts:
        flag, eq, value = o.partition("=")
        if eq and re.fullmatch(r"--[a-z][a-z-]*", flag):
            lines.append(f"#SBATCH {flag}={sbatch_quote(value)}")
        else:
            lines.append(f"#SBATCH {sbatch_quote(o)}")
    return tuple(lines)


def heredoc_delimiter(body: str, token: str) -> str:
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
