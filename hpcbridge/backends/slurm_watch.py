"""Watching running tasks' work dirs: the newest file (stall detection) and the files a task
watches (``--watch-file PATH[:REGEX]``), for every running task of a cluster in ONE command.

The command is a constant bash script (``WATCH_SCRIPT``); what it looks at (tokens, work
dirs, watched paths, regexes) travels on its stdin as NUL-separated fields, never inside
shell code, so the one command stays the same size whatever the names and however many
tasks there are. Its output is line-oriented and parsed by ``parse_watch_output``:

    N <cluster clock, epoch seconds>
    T <token> <newest mtime under the work dir, or ->
    F <token> <index of the watched item> <1 if it exists / its regex matches, else 0>

Ages are measured against the cluster's own clock (``N``), so a skewed client clock never
makes a task look stalled. Regexes are POSIX extended (``grep -E``) on every backend: the
local backend runs the same script. A watched path is resolved with ``realpath`` and
ignored when its real location leaves the work dir (a symlink the job made).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..config import ClusterConfig
from ..errors import BackendError

if TYPE_CHECKING:  # importing the transports pulls in paramiko: not for every CLI start
    from ..transport import Transport

log = logging.getLogger(__name__)

# stdin: T tok dir, then per watched item: F idx path | R idx path regex, repeated.
WATCH_SCRIPT = r"""
export LC_ALL=C
printf 'N %s\n' "$(date +%s)"
tok= dir=
while IFS= read -r -d '' kind; do
  case $kind in
    T) IFS= read -r -d '' tok; IFS= read -r -d '' dir
       case $dir in "~/"*) dir="$HOME/${dir#"~/"}";; esac
       newest=$(find -H "$dir" -type f -printf '%T@\n' 2>/dev/null | awk 'NR==1||$1>m{m=$1} END{if(NR)print m}')
       printf 'T %s %s\n' "$tok" "${newest:--}";;
    F|R) IFS= read -r -d '' idx; IFS= read -r -d '' path; re=
       [ "$kind" = R ] && IFS= read -r -d '' re
       hit=0
       root=$(realpath -e -- "$dir" 2>/dev/null) && file=$(realpath -e -- "$dir/$path" 2>/dev/null) &&
       case $file in "$root"/*)
         if [ "$kind" = F ]; then hit=1
         elif [ -f "$file" ] && grep -E -q -e "$re" -- "$file" 2>/dev/null; then hit=1; fi;;
       esac
       printf 'F %s %s %s\n' "$tok" "$idx" "$hit";;
  esac
done
"""


@dataclass(frozen=True)
class WatchRequest:
    """One running attempt to look at: its work dir and the items it watches."""

    token: str
    work_dir: str
    task_id: str = ""
    task_name: str = ""
    items: tuple[tuple[str, str | None], ...] = ()  # (path, regex or None)


@dataclass(frozen=True)
class WatchResult:
    """What one watch command saw."""

    now: float  # the cluster's clock when it looked
    newest: dict[str, float | None] = field(default_factory=dict)  # token -> newest mtime
    hits: dict[str, dict[int, bool]] = field(default_factory=dict)  # token -> item -> seen


@runtime_checkable
class WatchingBackend(Protocol):
    def watch(self, requests: Sequence[WatchRequest]) -> WatchResult:
        """The newest file of each work dir and the state of its watched items, in one
        command. Raises TransportError when the cluster cannot be reached."""
        ...


def watch_stdin(requests: Sequence[WatchRequest]) -> bytes:
    fields: list[str] = []
    for r in requests:
        fields += ["T", r.token, r.work_dir]
        for i, (path, regex) in enumerate(r.items):
            fields += ["F", str(i), path] if regex is None else ["R", str(i), path, regex]
    return b"".join(f.encode() + b"\0" for f in fields)


def watch_argv() -> list[str]:
    return ["bash", "-c", WATCH_SCRIPT, "hpcbridge-watch"]


def parse_watch_output(stdout: str) -> WatchResult:
    """The script's output -> WatchResult; a line that does not parse is skipped, logged."""
    now: float | None = None
    newest: dict[str, float | None] = {}
    hits: dict[str, dict[int, bool]] = {}
    for line in stdout.splitlines():
        parts = line.split(" ")
        try:
            if parts[0] == "N" and len(parts) == 2:
                now = float(parts[1])
            elif parts[0] == "T" and len(parts) == 3:
                newest[parts[1]] = None if parts[2] == "-" else float(parts[2])
            elif parts[0] == "F" and len(parts) == 4:
                hits.setdefault(parts[1], {})[int(parts[2])] = parts[3] == "1"
            else:
                raise ValueError(line)
        except ValueError:
            log.warning("unreadable watch line %r; skipped", line[:200])
    if now is None:
        raise BackendError(f"the watch command printed no clock line: {stdout[:200]!r}")
    return WatchResult(now, newest, hits)


def run_watch_locally(requests: Sequence[WatchRequest], timeout: float = 120.0) -> WatchResult:
    """The same script on this machine (the local backend)."""
    done = subprocess.run(watch_argv(), input=watch_stdin(requests), capture_output=True,
                          timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        raise BackendError(f"watch command exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")
    return parse_watch_output(done.stdout.decode(errors="replace"))


class SlurmWatchMixin:
    """``watch`` for SlurmBackend over ``self.transport`` (SSH or local)."""

    transport: Transport
    cluster: ClusterConfig

    def watch(self, requests: Sequence[WatchRequest]) -> WatchResult:
        res = self.transport.run(watch_argv(), stdin=watch_stdin(requests), timeout=self.cluster.command_timeout,
                                 what=f"watching {len(requests)} running task(s)")  # fmt: skip
        if not res.ok:
            raise BackendError(f"watch command exited {res.exit_status}: {res.stderr.strip()[-300:]}")
        return parse_watch_output(res.stdout)
