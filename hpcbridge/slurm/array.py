"""Job arrays: many attempts that ask for the same resources, submitted with one ``sbatch``. Pure.

Each task keeps its own job script (``render_batch_script``, kept as
``<work_dir>/.hpcbridge/<attempt>/job.sh`` exactly as for a single job), its own work dir,
logs and markers. The array's script only picks the element's work dir and attempt by
``SLURM_ARRAY_TASK_ID`` from a table written into it, sends its output to the task's log
files and runs the task's job script; the job script's ``#SBATCH`` lines are comments to
bash. So an element behaves exactly like the single job it replaces, and Slurm's per-element
requeue, preemption and cancellation (``scancel 123_4``) touch one task only.

An element is known to hpcbridge as ``<array job id>_<index>``: the id ``squeue --array``,
``sacct`` and ``scancel`` take. The array has a token of its own in its ``--comment``; each
element's marker dir gets an ``array`` marker (``<array token> <index>``) *before* sbatch
runs, so an element whose sbatch reply was lost is found in ``squeue`` by (token, index).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .commands import check_text, comment_for_token
from .script import percent_escape, sbatch_quote

# The #SBATCH options that differ per task: the array sets its own; every other option
# line must be identical for tasks to share an array.
PER_TASK_FLAGS: frozenset[str] = frozenset(
    {"--job-name", "--comment", "--chdir", "--output", "--error", "--open-mode"}
)

# The largest index an array may have is MaxArraySize - 1 (limits.py reads it).
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default


def array_key(script: str) -> tuple[str, ...]:
    """The ``#SBATCH`` lines of a rendered job script that are not per task. Tasks whose
    keys are equal ask for the same resources and may share an array."""
    key = []
    for line in script.splitlines():
        if not line.startswith("#SBATCH "):
            if line.startswith("#!"):
                continue
            break  # #SBATCH lines end at the first other line (sbatch stops reading there)
        word = line[len("#SBATCH "):]
        flag = word.lstrip('"').split("=", 1)[0]
        if flag not in PER_TASK_FLAGS:
            key.append(line)
    return tuple(key)


@dataclass(frozen=True)
class ArrayMember:
    """One element: its attempt's token, work dir, attempt number and job script text."""

    token: str
    work_dir: str
    attempt: int
    script: str


@dataclass(frozen=True)
class ArrayJob:
    """One array: its own token (``--comment``), the dir of its script and own logs, the
    common ``#SBATCH`` lines (``array_key``), its elements (index = position) and an
    optional limit on how many run at once (``%K``)."""

    token: str
    dir: str
    header: tuple[str, ...]
    members: tuple[ArrayMember, ...]
    max_running: int | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise UsageError("an array needs at least one element")
        if self.max_running is not None and self.max_running < 1:
            raise UsageError(f"max_running must be a positive integer, got {self.max_running}")


def array_name(token: str) -> str:
    return f"hpcb-array-{token}"


def render_array_script(job: ArrayJob) -> str:
    """The sbatch script of one array (see the module doc)."""
    check_text("array dir", job.dir)
    if not posixpath.isabs(job.dir) or "\\" in job.dir:
        raise UsageError(f"the array dir must be absolute and without '\\': {job.dir!r}")
    spec = f"0-{len(job.members) - 1}"
    if job.max_running is not None:
        spec += f"%{int(job.max_running)}"
    opts = [
        ("--job-name", array_name(job.token)),
        ("--comment", comment_for_token(job.token)),
        ("--array", spec),
        ("--chdir", job.dir),
        # Only what the array shell itself prints before it hands over lands here.
        ("--output", percent_escape(posixpath.join(job.dir, "")) + "%a.out"),
        ("--error", percent_escape(posixpath.join(job.dir, "")) + "%a.err"),
        ("--open-mode", "append"),
    ]
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {flag}={sbatch_quote(value)}" for flag, value in opts]
    lines += list(job.header)
    dirs, attempts = [], []
    for m in job.members:
        check_text("work_dir", m.work_dir)
        if not posixpath.isabs(m.work_dir):
            raise UsageError(f"work_dir must be absolute on the cluster, got {m.work_dir!r}")
        dirs.append(shlex.quote(posixpath.normpath(m.work_dir)))
        attempts.append(str(int(m.attempt)))
    lines += [
        "# hpcbridge array: no #SBATCH lines below this point",
        "set -u",
        "# Element i runs the job script of task W[i], attempt N[i], in its work dir, with",
        "# that attempt's log files: exactly what the single job would have done.",
        "W=(" + " ".join(dirs) + ")",
        "N=(" + " ".join(attempts) + ")",
        'i=${SLURM_ARRAY_TASK_ID:?not run as an array element}',
        'w=${W[$i]}; n=${N[$i]}',
        'cd -- "$w" || exit 70',
        'exec >>"$w/.hpcbridge/attempt-$n.out" 2>>"$w/.hpcbridge/attempt-$n.err"',
        'exec bash "$w/.hpcbridge/$n/job.sh"',
    ]
    return "\n".join(lines) + "\n"


def plan_arrays(keys: Sequence[tuple[object, ...] | None], max_size: int) -> tuple[list[list[int]], list[int]]:
    """Group request positions by key into arrays of at most ``max_size`` elements.

    ``keys[i]`` is None for a request that must go alone. Returns (arrays as lists of
    positions, positions submitted as single jobs); a key shared by one request only is a
    single job too (an array of one is just a harder-to-read job)."""
    if max_size < 1:
        raise UsageError(f"MaxArraySize must be positive, got {max_size}")
    groups: dict[tuple[object, ...], list[int]] = {}
    singles: list[int] = []
    for i, key in enumerate(keys):
        if key is None:
            singles.append(i)
        else:
            groups.setdefault(key, []).append(i)
    arrays: list[list[int]] = []
    for members in groups.values():
        if len(members) == 1:
            singles.extend(members)
            continue
        for start in range(0, len(members), max_size):
            part = members[start : start + max_size]
            (arrays.append(part) if len(part) > 1 else singles.extend(part))
    return arrays, sorted(singles)
