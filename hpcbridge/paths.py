"""Pure path rules shared by the backends: where a task's files live inside its work dir and
which files the declared output globs select."""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Sequence

from .errors import UsageError

META_DIR = ".hpcbridge"  # inside the work dir: markers, logs, the batch script


def log_name(attempt: int, stream: str) -> str:
    if stream not in ("stdout", "stderr"):
        raise UsageError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
    return f"{META_DIR}/attempt-{attempt}.{'out' if stream == 'stdout' else 'err'}"


def marker_dir(attempt: int) -> str:
    return f"{META_DIR}/{attempt}"


def _glob_to_parts(pattern: str) -> list[str]:
    return [p for p in pattern.replace("\\", "/").split("/") if p not in ("", ".")]


def _match_parts(path: list[str], pat: list[str]) -> bool:
    if not pat:
        return not path
    if pat[0] == "**":
        return any(_match_parts(path[i:], pat[1:]) for i in range(len(path) + 1))
    if not path:
        return False
    return fnmatch.fnmatchcase(path[0], pat[0]) and _match_parts(path[1:], pat[1:])


def match_outputs(files: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The relative ``files`` (POSIX paths) selected by the output globs, sorted.

    ``*`` does not cross ``/``; ``**`` matches any number of directories. hpcbridge's own
    ``.hpcbridge/`` directory is never an output unless a pattern names it explicitly.
    """
    out = set()
    for f in files:
        norm = posixpath.normpath(f)
        if norm.startswith("../") or norm == ".." or posixpath.isabs(norm):
            continue  # never follow a listing outside the work dir
        parts = norm.split("/")
        for pattern in patterns:
            pat = _glob_to_parts(pattern)
            if parts[0] == META_DIR and (not pat or pat[0] != META_DIR):
                continue
            if _match_parts(parts, pat):
                out.add(norm)
                break
    return sorted(out)


def input_name(path: str) -> str:
    """The name an input file/dir gets inside the work dir (its base name)."""
    name = posixpath.basename(path.rstrip("/").replace("\\", "/"))
    if name in ("", ".", "..") or name == META_DIR:
        raise UsageError(f"input {path!r} has no usable file name")
    return name


def check_output_pattern(pattern: str) -> str:
    """Refuse an output glob that selects nothing usable or escapes the work dir.

    ``''``, ``.`` and ``./`` name the work dir itself (fetching it would copy hpcbridge's own
    markers and every input back, and made every later sync of the cluster crash); absolute
    paths and ``..`` leave the work dir.
    """
    if not isinstance(pattern, str) or not _glob_to_parts(pattern):
        raise UsageError(
            f"output pattern {pattern!r} names the work dir itself, not files in it",
            hint="name files or globs inside the work dir, e.g. 'results/*.h5' or '**/*.csv'",
        )
    if pattern.startswith("/") or ".." in pattern.replace("\\", "/").split("/"):
        raise UsageError(
            f"output pattern {pattern!r} must be relative to the work dir, without '..'"
        )
    return pattern


def missing_outputs(files: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The patterns that select none of ``files``, with the same matcher as match_outputs."""
    listed = list(files)
    return [p for p in patterns if not match_outputs(listed, [p])]


def check_work_path(path: str) -> str:
    """A path the user gave for a file under a task's work dir, normalised (``a//b/./c`` ->
    ``a/b/c``), or ``UsageError`` when it cannot name one: empty, the work dir itself, an
    absolute path, a ``..`` component (anywhere, even one that would come back inside), or a
    NUL byte.

    Only the spelling is checked here. Everything else a POSIX file name may hold is kept
    as it is (quotes, ``$(...)``, ``;``, spaces, newlines, backslashes): the backends pass the
    path as one argument, never through a shell. Whether the file, once symlinks are
    resolved, is still inside the work dir can only be decided where the file is read, and
    the backends check that there."""
    hint = "give a path relative to the work dir, as `hpcbridge tasks files ID` lists it"
    if not isinstance(path, str) or "\x00" in path:
        raise UsageError(f"invalid file path {path!r}", hint=hint)
    if path.startswith("/"):
        raise UsageError(f"{path!r} is outside the task's work dir (an absolute path)", hint=hint)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{path!r} is outside the task's work dir ('..' is not allowed)",
                         hint=hint)  # fmt: skip
    if not parts:
        raise UsageError(f"{path!r} names the work dir itself, not a file in it", hint=hint)
    return "/".join(parts)


def in_meta_dir(path: str) -> bool:
    """Whether the work-dir-relative ``path`` lies in hpcbridge's own ``.hpcbridge/`` dir."""
    return path.split("/", 1)[0] == META_DIR


def is_log_path(path: str) -> bool:
    """Whether ``path`` is one of the job logs hpcbridge keeps in the work dir
    (``.hpcbridge/attempt-N.out`` / ``.err``): the task's own output, routed there."""
    name = path[len(META_DIR) + 1:] if in_meta_dir(path) else ""
    stem, dot, ext = name.rpartition(".")
    return (dot == "." and ext in ("out", "err") and stem.startswith("attempt-")
            and stem[len("attempt-"):].isdigit())  # fmt: skip
