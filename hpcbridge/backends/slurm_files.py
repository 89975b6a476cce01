"""A task's work dir on the cluster, live: list it and read files in it, one exec each.

Mixed into :class:`~hpcbridge.backends.slurm.SlurmBackend`; works over any transport (SSH or
local). Both commands are argv lists; the values (work dir, path, line count) travel as
arguments, never inside shell code:

* the listing is one GNU ``find -H DIR -type f -printf '%s %T@ %P\\0'`` (size, mtime, path
  relative to DIR, NUL-terminated, so a name with spaces, tabs or newlines stays one
  record);
* a read is one ``bash -c READ_SCRIPT`` whose script is a constant: it resolves the work dir
  and the file with ``realpath -e`` on the cluster, refuses a file whose real location is not
  inside the work dir (a symlink the job made to ``~/.ssh/id_rsa``), and only then runs
  ``cat`` or ``tail -n`` on the resolved path.
"""

from __future__ import annotations

import logging
import posixpath

from ..config import ClusterConfig
from ..errors import UsageError
from ..models import FileInfo, Task
from ..paths import check_work_path
from ..transport import Transport
from ..transport.base import RemoteFileError, RemoteFileNotFound

log = logging.getLogger(__name__)

FIND_FORMAT = "%s %T@ %P\\0"  # find's own escape: \0 is a NUL byte

# Exit statuses of READ_SCRIPT's own refusals (cat and tail exit 1 on their errors).
NO_REALPATH, NO_WORK_DIR, NO_FILE, OUTSIDE, NOT_A_FILE = 89, 90, 91, 92, 93

# $1 = work dir, $2 = path relative to it, $3 = line count or "all". `$(... && echo x)` then
# stripping "\nx" keeps a trailing newline of a file name (command substitution would eat it).
READ_SCRIPT = (
    f"command -v realpath >/dev/null || exit {NO_REALPATH}; "
    f'root=$(realpath -e -- "$1" && echo x) || exit {NO_WORK_DIR}; root=${{root%??}}; '
    f'file=$(realpath -e -- "$1/$2" && echo x) || exit {NO_FILE}; file=${{file%??}}; '
    f'case $file in "$root"/*) ;; *) exit {OUTSIDE};; esac; '
    f'[ -f "$file" ] || exit {NOT_A_FILE}; '
    'if [ "$3" = all ]; then exec cat -- "$file"; fi; '
    'exec tail -n "$3" -- "$file"'
)

OUTSIDE_HINT = "give a path relative to the work dir, as `hpcbridge tasks files ID` lists it"


def find_argv(root: str) -> list[str]:
    """The listing command for the work dir ``root`` (absolute: find would read a start point
    beginning with ``-`` as an expression). ``-H`` follows ``root`` itself when it is a
    symlink (a scratch dir linked from elsewhere), nothing below it."""
    if not root.startswith("/"):
        raise UsageError(f"work dir must be absolute, got {root!r}")
    return ["env", "LC_ALL=C", "find", "-H", root, "-type", "f", "-printf", FIND_FORMAT]


def parse_find_listing(stdout: str) -> list[FileInfo]:
    """``find -printf FIND_FORMAT`` output -> FileInfo sorted by path. A record that does not
    parse is skipped and logged, never fatal; the start point itself (``%P`` empty) is left
    out."""
    out: list[FileInfo] = []
    for record in stdout.split("\x00"):
        if not record:
            continue
        size, _, rest = record.partition(" ")
        mtime, sep, path = rest.partition(" ")
        try:
            info = FileInfo(path=path, size=int(size), mtime=float(mtime))
        except ValueError:
            log.warning("unreadable find record %r; skipped", record[:200])
            continue
        if sep and path:
            out.append(info)
    return sorted(out, key=lambda f: f.path)


def read_argv(root: str, path: str, tail: int | None) -> list[str]:
    """The read command for ``path`` under the work dir ``root`` (see READ_SCRIPT)."""
    if tail is not None and tail < 0:
        raise UsageError(f"tail must be 0 or more lines, got {tail}")
    rel = check_work_path(path)
    return ["bash", "-c", READ_SCRIPT, "hpcbridge-read", root, rel,
            "all" if tail is None else str(tail)]  # fmt: skip


class SlurmFilesMixin:
    """``list_work_dir`` and ``read_work_file`` of the Backend protocol over ``self.transport``.

    The class it is mixed into provides ``transport``, ``cluster`` and ``work_dir(task)``."""

    transport: Transport
    cluster: ClusterConfig

    def work_dir(self, task: Task) -> str:  # pragma: no cover - SlurmBackend's comes first
        raise NotImplementedError

    def _files_root(self, task: Task) -> str:
        return posixpath.normpath(self.work_dir(task))

    def list_work_dir(self, task: Task) -> list[FileInfo]:
        root = self._files_root(task)
        res = self.transport.run(find_argv(root), timeout=self.cluster.command_timeout,
                                 what=f"listing the work dir of task {task.id}")  # fmt: skip
        files = parse_find_listing(res.stdout)
        if res.ok:
            return files
        err = res.stderr.strip()
        if not files and f"'{root}': No such file or directory" in err:
            raise RemoteFileNotFound(root, where=f"task {task.id}'s work dir",
                                     hint="the job has not created it yet; try again once it runs")  # fmt: skip
        if not files and res.stdout == "":
            raise RemoteFileError(f"cannot list {root} (find exit {res.exit_status}): {err[-300:]}",
                                  path=root)  # fmt: skip
        # Some subdirectory was unreadable or vanished while find walked: keep the rest.
        log.warning("task %s: listing %s was incomplete: %s", task.id, root, err[-300:])
        return files

    def read_work_file(self, task: Task, path: str, tail: int | None) -> str:
        root = self._files_root(task)
        argv = read_argv(root, path, tail)
        rel = argv[-2]
        res = self.transport.run(argv, timeout=self.cluster.command_timeout,
                                 what=f"reading {rel} of task {task.id}")  # fmt: skip
        if res.ok:
            return res.stdout
        where = f"task {task.id}'s work dir"
        full = posixpath.join(root, rel)
        code, err = res.exit_status, res.stderr.strip()[-300:]
        if code == OUTSIDE:
            raise UsageError(f"{rel!r} is outside the task's work dir (a symlink that leaves it)",
                             hint=OUTSIDE_HINT)  # fmt: skip
        if code == NO_FILE:
            raise RemoteFileNotFound(full, where=where,
                                     hint=f"list the files with `hpcbridge tasks files {task.id}`")  # fmt: skip
        if code == NO_WORK_DIR:
            raise RemoteFileNotFound(root, where=where,
                                     hint="the job has not created it yet; try again once it runs")  # fmt: skip
        if code == NOT_A_FILE:
            raise RemoteFileError(f"{where}: not a regular file: {full}", path=full)
        if code == NO_REALPATH:
            raise RemoteFileError(f"{where}: the cluster has no `realpath` (GNU coreutils)",
                                  path=full)  # fmt: skip
        raise RemoteFileError(f"{where}: cannot read {full} (exit {code}): {err}", path=full)
