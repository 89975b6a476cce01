"""What an extra ``--sbatch-option`` may say. Pure.

hpcbridge writes some #SBATCH options itself and relies on them: the comment carries the
submission token (how a job is found when sbatch's reply is lost), the job name, where the
logs go, the work dir, the requeue policy, one job per attempt. An extra option comes later
in the script, so sbatch would let it win: those are refused, naming the hpcbridge option
that does the job, and ``--exclude`` is merged into the node exclusion list instead.
``check_sbatch_options`` is the one check; submission validation and the script renderer
both call it.

sbatch reads options with getopt_long: a long option may be abbreviated to any unambiguous
prefix (``--comm=x`` is ``--comment=x``), and short flags may be bundled (``-vW``). Both
are resolved here before deciding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import UsageError
from .commands import check_text
from .hostlist import expand_hostlist

# Long options hpcbridge owns -> what to use instead. Abbreviations of them are refused too.
RESERVED_LONG: dict[str, str] = {
    "comment": "the comment carries hpcbridge's submission token; put notes in --metadata",
    "job-name": "hpcbridge names the job after the task and attempt; use --name",
    "output": "hpcbridge keeps the job's stdout in .hpcbridge/attempt-N.out; read it with "
              "`hpcbridge logs`",
    "error": "hpcbridge keeps the job's stderr in .hpcbridge/attempt-N.err; read it with "
             "`hpcbridge logs --stderr`",
    "open-mode": "hpcbridge appends to the logs so a Slurm-side requeue keeps the first run's",
    "chdir": "the job runs in the task's work dir (the cluster's work_dir setting)",
    "workdir": "the job runs in the task's work dir (the cluster's work_dir setting)",
    "array": "one task is one job; submit several tasks (submit_many, --from-file)",
    "requeue": "use the task option --requeue / --no-requeue",
    "no-requeue": "use the task option --requeue / --no-requeue",
    "signal": "use the task option --signal",
    "test-only": "a test-only sbatch submits nothing; hpcbridge would wait for a job forever",
    "wait": "hpcbridge waits itself: `hpcbridge wait` or submit --wait",
    "parsable": "hpcbridge already asks sbatch for --parsable output",
    "wrap": "give the task a command or a script instead",
    "clusters": "hpcbridge follows a job on the configured cluster only; configure the other "
                "cluster and submit there",
    "uid": "the job would belong to another user, whom hpcbridge cannot poll",
    "gid": "the job's group is the submitting user's",
    "help": "sbatch would print help and submit nothing",
    "usage": "sbatch would print usage and submit nothing",
    "version": "sbatch would print its version and submit nothing",
}
# Merged into the node exclusion list (a later --exclude would replace hpcbridge's).
MERGED_LONG = "exclude"
# Short forms (man sbatch) of the reserved options, and of --exclude.
RESERVED_SHORT: dict[str, str] = {
    "J": "job-name", "o": "output", "e": "error", "D": "chdir", "a": "array", "W": "wait",
    "M": "clusters", "h": "help", "V": "version",
}  # fmt: skip
MERGED_SHORT = "x"
# Short options that take no argument (``-H`` hold, ``-k`` no-kill, ...): bundled flags go on.
SHORT_FLAGS = frozenset("HhkOQsVvW")
# Long option names that are prefixes of a reserved one but are options of their own.
_OWN_OPTIONS = frozenset({"export", "exclusive", "exclude", "wait-all-nodes"})


def _reserved(name: str) -> str | None:
    """The reserved option ``--name`` means (exactly, or as an abbreviation), else None."""
    if name in RESERVED_LONG:
        return name
    if name in _OWN_OPTIONS:
        return None
    hits = [full for full in RESERVED_LONG if full.startswith(name)]
    return hits[0] if hits else None


def _refuse(option: str, reserved: str) -> UsageError:
    return UsageError(
        f"sbatch option {option!r} would override --{reserved}, which hpcbridge sets itself",
        hint=RESERVED_LONG[reserved],
    )


def _exclude_names(option: str, value: str) -> list[str]:
    try:
        names = expand_hostlist(value.strip())
    except ValueError as exc:
        raise UsageError(f"sbatch option {option!r}: {exc}",
                         hint="a Slurm hostlist, e.g. node[1-3],gpu05") from exc  # fmt: skip
    if not names:
        raise UsageError(f"sbatch option {option!r} names no node")
    return names


def check_sbatch_options(options: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``options`` -> (the options to pass on, node names to add to the exclusion list).

    Raises UsageError for an option that is not one (no leading ``-``, a newline) or that
    would override what hpcbridge relies on (``RESERVED_LONG``), with the option to use
    instead as hint. ``--exclude=``/``-x`` values are expanded and returned separately."""
    keep: list[str] = []
    excludes: list[str] = []
    for option in options:
        check_text("sbatch option", option)
        if not option.startswith("-") or option in ("-", "--"):
            raise UsageError(f"sbatch options must start with '-', got {option!r}")
        if option.startswith("--"):
            name, eq, value = option[2:].partition("=")
            if name == MERGED_LONG or (name not in _OWN_OPTIONS and len(name) >= 4
                                       and MERGED_LONG.startswith(name)):  # fmt: skip
                if not eq:
                    raise UsageError(f"sbatch option {option!r} needs a value: --exclude=NODES")
                excludes += _exclude_names(option, value)
                continue
            reserved = _reserved(name)
            if reserved is not None:
                raise _refuse(option, reserved)
            keep.append(option)
            continue
        # Short options, possibly bundled: each letter is a flag until one that takes an
        # argument, which takes the rest of the word.
        for i, letter in enumerate(option[1:], start=1):
            if letter == MERGED_SHORT:
                value = option[i + 1 :]
                if not value:
                    raise UsageError(f"sbatch option {option!r} needs a value: -xNODES "
                                     "or --exclude=NODES")  # fmt: skip
                excludes += _exclude_names(option, value)
                if i > 1:
                    keep.append(option[:i])  # the bundled flags before it
                break
            if letter in RESERVED_SHORT:
                raise _refuse(option, RESERVED_SHORT[letter])
            if letter not in SHORT_FLAGS:
                keep.append(option)
                break
        else:
            keep.append(option)
    return tuple(keep), tuple(dict.fromkeys(excludes))


def _regroup(items: Sequence[str]) -> list[str]:
    """Node names from items that are names, hostlists, or pieces of a hostlist that was split
    on commas (``"node[1"``, ``"3]"``): pieces are joined again until their brackets close. A
    piece that never closes is dropped (excluding one node fewer beats never submitting);
    anything else that is not a hostlist raises ValueError."""
    names: list[str] = []
    buf: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        buf.append(item)
        joined = ",".join(buf)
        if joined.count("[") == joined.count("]"):
            names += expand_hostlist(joined)
            buf = []
    if buf:
        if "[" not in buf[0]:
            raise ValueError(f"bad node list item {buf[0]!r}")
        names += _regroup(buf[1:])
    return names


def merge_excludes(*lists: Sequence[str]) -> list[str]:
    """Node names from several exclusion lists (each item a name, a hostlist, or a piece of a
    hostlist split on commas, see ``_regroup``), in order and without repeats. Raises
    ValueError for an item that is no node name."""
    names: list[str] = []
    for items in lists:
        names += _regroup(items)
    return list(dict.fromkeys(names))
