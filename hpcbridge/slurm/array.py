"""Job arrays: many attempts that ask for the same resources, submitted with one ``sbatch``. Pure.

Each task keeps its own job script (``render_batch_script``, exactly as for a single job),
its own work dir, logs and markers. The array's script only picks the element's work dir
and attempt by ``SLURM_ARRAY_TASK_ID`` from a table written into it, cuts the element's job
script out of the array's *bundle* (every element's script in one file, ``<array dir>/jobs``,
at byte offsets the table holds), keeps it as ``<work_dir>/.hpcbridge/<attempt>/job.sh``,
sends its output to the task's log files and runs it; the job script's ``#SBATCH`` lines
are comments to bash. So an element behaves exactly like the single job it replaces, and
Slurm's per-element requeue, preemption and cancellation (``scancel 123_4``) touch one task
only.

Nothing is written per element at submission: on ext4 here, creating 1,000 work dirs with
their marker dirs and files took 1-3 s, longer than the whole submission may take. The
element creates its own dirs when it starts; until then the array dir (bundle, script, the
submission's lock, the array's job id) is all there is.

An element is known to hpcbridge as ``<array job id>_<index>``: the id ``squeue --array``,
``sacct`` and ``scancel`` take. The array has a token of its own in its ``--comment``, and
each element's (array token, index) is planned *before* the write-ahead commit and recorded
on the attempt (``backend_ref``), so an element whose sbatch reply was lost is found in
``squeue`` by (token, index) with no marker at all. An index whose write-ahead lost its
compare-and-set is left out of ``--array`` (``0-3,5-9``): the others keep their indexes.
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
    """One element: its attempt's token, work dir, attempt number, job script text and
    planned index (None: its position in the array)."""

    token: str
    work_dir: str
    attempt: int
    script: str
    index: int | None = None


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
        if len(set(self.indexes)) != len(self.members) or min(self.indexes) < 0:
            raise UsageError(f"array element indexes must be distinct and >= 0: {self.indexes}")

    @property
    def indexes(self) -> list[int]:
        return [i if m.index is None else int(m.index) for i, m in enumerate(self.members)]

    def bundle(self) -> bytes:
        """Every element's job script, concatenated in member order (see ``render_array_script``)."""
        return b"".join(m.script.encode() for m in self.members)


def index_spec(indexes: Sequence[int]) -> str:
    """``--array``'s index list for these indexes, as ranges: ``0-3,5,7-9``."""
    out: list[str] = []
    xs = sorted(set(indexes))
    start = prev = xs[0]
    for x in [*xs[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(out)


def array_name(token: str) -> str:
    return f"hpcb-array-{token}"


def render_array_script(job: ArrayJob) -> str:
    """The sbatch script of one array (see the module doc). It expects ``job.bundle()`` at
    ``<job.dir>/jobs``."""
    check_text("array dir", job.dir)
    if not posixpath.isabs(job.dir) or "\\" in job.dir:
        raise UsageError(f"the array dir must be absolute and without '\\': {job.dir!r}")
    spec = index_spec(job.indexes)
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
    table: list[str] = []
    offset = 0
    for index, m in zip(job.indexes, job.members, strict=True):
        check_text("work_dir", m.work_dir)
        if not posixpath.isabs(m.work_dir):
            raise UsageError(f"work_dir must be absolute on the cluster, got {m.work_dir!r}")
        size = len(m.script.encode())
        table.append(f"[{index}]={shlex.quote(posixpath.normpath(m.work_dir))}:{int(m.attempt)}:{offset}:{size}")
        offset += size
    lines += [
        "# hpcbridge array: no #SBATCH lines below this point",
        "set -u",
        "# Element i runs the job script of the task in work dir w, attempt n (bytes o.. o+len",
        "# of the bundle), in its work dir, with that attempt's log files: exactly what the",
        "# single job would have done. (A work dir may hold ':'; the numbers never do.)",
        "E=(" + " ".join(table) + ")",
        'i=${SLURM_ARRAY_TASK_ID:?not run as an array element}',
        'e=${E[$i]:?no element $i in this array}',
        'len=${e##*:}; e=${e%:*}; o=${e##*:}; e=${e%:*}; n=${e##*:}; w=${e%:*}',
        'd="$w/.hpcbridge/$n"',
        'mkdir -p -- "$d" || exit 70',
        "# Kept as the attempt's job.sh, as a single job's is (a temp file renamed: a requeued",
        "# element rewrites the same text).",
        f'tail -c +$((o + 1)) -- {shlex.quote(posixpath.join(job.dir, "jobs"))} | head -c "$len" > "$d/.job.sh.$$" '
        '&& [ "$(wc -c < "$d/.job.sh.$$")" -eq "$len" ] && mv -f -- "$d/.job.sh.$$" "$d/job.sh" || exit 70',
        f"printf '%s %s\\n' {shlex.quote(job.token)} \"$i\" > \"$d/array\"",
        'cd -- "$w" || exit 70',
        'exec >>"$w/.hpcbridge/attempt-$n.out" 2>>"$w/.hpcbridge/attempt-$n.err"',
        'exec bash "$d/job.sh"',
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
