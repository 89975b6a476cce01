"""The outputs of many tasks in one remote command: list, match locally, stream one tar.

One ``bash -c FETCH_SCRIPT`` runs for the whole batch, over one channel, and converses:

1. hpcbridge writes the work dirs (absolute) to its stdin, NUL-terminated, an empty record
   ending them: they are data, never shell code, so a hostile path cannot run anything.
2. The script answers ``M<i>`` / ``N<i>`` for a dir that is missing / not a directory and
   runs ONE ``find -H DIR/ ... -type f -printf 'F%H\0%P\0'`` over all the others (through
   ``xargs -0``, so no argument list is ever too long): per regular file its start point and
   its path below it, exactly what ``list_files`` sees; then ``E<exit status>``,
   ``R<find's stderr>`` and ``Z``. Every record is NUL-terminated and control records come
   first in their pair, so no file name can pose as one.
3. hpcbridge picks the outputs with the one matcher (:func:`hpcbridge.paths.match_outputs`,
   the same that decides ``require_outputs``) and writes their absolute paths back.
4. The script runs one ``tar -cf - --null -T -`` over those names (absolute: none can be read
   as a tar option; tar stores them without the leading ``/``, so each task's files carry its
   work dir as their prefix under the common base ``/``), streamed to stdout and extracted
   here as it arrives (:mod:`.safe_tar`) into each task's destination.

So the cost is one command execution per batch (two network round trips inside it, and a
fixed number of processes on the cluster: bash, xargs, find, tar), whatever the number of
tasks, and memory stays bounded whatever the size of the outputs.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import HpcBridgeError, RemoteFileError, RemoteFileNotFound, TransportError
from ..paths import match_outputs
from ..transport import Transport
from ..transport.base import CommandStream
from .safe_tar import StreamReader, extract_outputs

log = logging.getLogger(__name__)

FETCH_SCRIPT = r"""set -u
export LC_ALL=C
ok=()
i=0
while IFS= read -r -d '' d && [ -n "$d" ]; do
  if [ ! -e "$d" ]; then printf 'M%d\0' "$i"
  elif [ ! -d "$d" ]; then printf 'N%d\0' "$i"
  else ok+=("$d/")
  fi
  i=$((i + 1))
done
rc=0 err=
if [ "${#ok[@]}" -gt 0 ]; then
  { err=$(printf '%s\0' "${ok[@]}" |
          xargs -0 sh -c 'exec find -H "$@" -type f -printf "F%H\0%P\0"' find 2>&1 >&3)
    rc=$?; } 3>&1
fi
printf 'E%d\0R%s\0Z\0' "$rc" "${err:0:4000}"
exec tar -cf - --no-recursion --hard-dereference --null -T -
"""

def fetch_argv() -> list[str]:
    return ["bash", "-c", FETCH_SCRIPT, "hpcbridge-fetch"]


@dataclass(frozen=True)
class FetchItem:
    """One task of a batch: outputs matching ``patterns`` under ``work_dir`` go to ``dest``."""

    key: str
    work_dir: str
    patterns: Sequence[str]
    dest: Path


@dataclass
class Listing:
    """What the script found: ``files[i]`` lists work dir ``i``; ``status[i]`` is ``""``,
    ``"missing"`` or ``"notdir"``; ``find_status``/``find_err`` are find's (via xargs)."""

    files: list[list[str]]
    status: list[str]
    find_status: int = 0
    find_err: str = ""


def encode_dirs(dirs: Sequence[str]) -> bytes:
    """The stdin of phase 1. A NUL cannot be sent (it ends a record) nor can an empty path
    (it ends the list): both are refused before anything is sent."""
    for d in dirs:
        if not d or "\x00" in d:
            raise HpcBridgeError(f"invalid work dir {d!r}")
    return b"".join(d.encode("utf-8", "surrogateescape") + b"\0" for d in dirs) + b"\0"


def start_point(work_dir: str) -> str:
    """How the script names a work dir to find (``%H``): normalised, with one trailing ``/``."""
    return posixpath.normpath(work_dir).rstrip("/") + "/"


class ListingParser:
    """Phase-1 records -> :class:`Listing`, fed chunk by chunk until the ``Z`` record. A
    record of an unknown kind, or a file under a start point never sent, is skipped and
    logged, never fatal."""

    def __init__(self, work_dirs: Sequence[str]) -> None:
        self.listing = Listing(files=[[] for _ in work_dirs], status=["" for _ in work_dirs])
        self.index: dict[str, list[int]] = {}
        for i, d in enumerate(work_dirs):
            self.index.setdefault(start_point(d), []).append(i)
        self._buf = b""
        self._start: str | None = None  # the F record waiting for its path record
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Consume ``chunk``; once the ``Z`` record is seen, return the bytes after it (the
        tar stream's start) and set ``done``."""
        self._buf += chunk
        *records, self._buf = self._buf.split(b"\0")
        for n, rec in enumerate(records):
            if self._start is not None:
                self._add(self._start, rec.decode("utf-8", "surrogateescape"))
                self._start = None
                continue
            kind, body = rec[:1], rec[1:].decode("utf-8", "surrogateescape")
            if kind == b"F":
                self._start = body
            elif kind in (b"M", b"N") and body.isdigit() and int(body) < len(self.listing.status):
                self.listing.status[int(body)] = "missing" if kind == b"M" else "notdir"
            elif kind == b"E" and body.isdigit():
                self.listing.find_status = int(body)
            elif kind == b"R":
                self.listing.find_err = body
            elif rec == b"Z":
                self.done = True
                rest = b"\0".join([*records[n + 1:], self._buf])
                self._buf = b""
                return rest
            else:
                log.warning("fetch listing: unknown record %r; skipped", rec[:100])
        return b""

    def _add(self, start: str, rel: str) -> None:
        for i in self.index.get(start, ()):
            self.listing.files[i].append(rel)
        if start not in self.index:
            log.warning("fetch listing: file under unknown start point %r; skipped", start[:200])


def listing_error(item: FetchItem, status: str, listing: Listing) -> HpcBridgeError | None:
    """The per-task error of one work dir, if any (the classes ``list_files`` raises): gone,
    not a directory, or named in find's complaints (an unreadable subdirectory)."""
    if status == "missing":
        return RemoteFileNotFound(item.work_dir, where=f"task {item.key}'s work dir",
                                  hint="it was removed on the cluster; its outputs are gone")  # fmt: skip
    if status == "notdir":
        return RemoteFileError(f"task {item.key}: work dir {item.work_dir} is not a directory",
                               path=item.work_dir)  # fmt: skip
    if listing.find_status != 0:
        start = start_point(item.work_dir)
        lines = [ln for ln in listing.find_err.splitlines() if f"'{start}" in ln]
        if lines:
            return RemoteFileError(f"task {item.key}: cannot list {item.work_dir} completely: "
                                   f"{'; '.join(lines)[:300]}", path=item.work_dir)  # fmt: skip
    return None


def fetch_batch(transport: Transport, items: Sequence[FetchItem], *, idle_timeout: float,
                what: str = "fetching outputs") -> dict[str, list[Path] | HpcBridgeError]:  # fmt: skip
    """Fetch every item's outputs in one command execution (see the module doc). Work dirs
    must be absolute.

    Returns, per ``item.key``, the local files written or the error met by that task alone
    (its work dir vanished or cannot be listed, a file vanished while being read). Raises
    ``TransportError`` (the connection broke, the stream ended early) or
    :class:`~.safe_tar.UnsafeArchive` (the stream held something never asked for) for the
    whole batch: files already extracted stay, nothing else changes."""
    if not items:
        return {}
    for item in items:
        if not item.work_dir.startswith("/"):
            raise HpcBridgeError(f"task {item.key}: work dir {item.work_dir!r} is not absolute")
    data = encode_dirs([posixpath.normpath(i.work_dir) for i in items])
    results: dict[str, list[Path] | HpcBridgeError] = {}
    with transport.open_stream(fetch_argv(), idle_timeout=idle_timeout, what=what) as stream:
        stream.write(data)
        parser = ListingParser([i.work_dir for i in items])
        rest = b""
        while not parser.done:
            chunk = stream.read(65536)
            if not chunk:
                status, err = stream.finish()
                raise TransportError(f"{what}: the listing ended early (exit {status}): "
                                     f"{err.strip()[-300:]}",
                                     hint="the fetch is retried next cycle")  # fmt: skip
            rest = parser.feed(chunk)
        listing = parser.listing
        if listing.find_status != 0:
            log.warning("%s: find exit %s: %s", what, listing.find_status, listing.find_err[-500:])
        # tar stores "/a/b" as "a/b": member name -> [(key, path under the work dir)]
        wanted: dict[str, list[tuple[str, str]]] = {}
        expected: dict[str, int] = {}
        names: list[bytes] = []
        for idx, item in enumerate(items):
            error = listing_error(item, listing.status[idx], listing)
            if error is not None:
                results[item.key] = error
                continue
            chosen = match_outputs(listing.files[idx], item.patterns)
            expected[item.key] = len(chosen)
            base = start_point(item.work_dir)
            for rel in chosen:
                full = base + rel
                member = full.lstrip("/")
                if member not in wanted:
                    names.append(full.encode("utf-8", "surrogateescape") + b"\0")
                wanted.setdefault(member, []).append((item.key, rel))
        # From a thread: tar may fill the channel with output before it has read every name.
        writer = threading.Thread(target=_send_names, args=(stream, b"".join(names)),
                                  daemon=True, name="hpcbridge-fetch-names")  # fmt: skip
        writer.start()
        dests = {item.key: item.dest for item in items}
        got_files = extract_outputs(StreamReader(stream.read, rest), wanted, dests)
        status, err = stream.finish()
        writer.join(timeout=idle_timeout)
    tar_err = "\n".join(ln for ln in err.splitlines() if "Removing leading" not in ln)
    if status != 0:
        log.warning("%s: tar exit %s: %s", what, status, tar_err.strip()[-500:])
    for item in items:
        if item.key in results:
            continue
        files = got_files.get(item.key, [])
        if len(files) != expected[item.key]:
            results[item.key] = RemoteFileError(
                f"task {item.key}: {expected[item.key] - len(files)} output file(s) could not "
                f"be read; tar said: {tar_err.strip()[-300:] or '(nothing)'}",
                path=item.work_dir)  # fmt: skip
            continue
        results[item.key] = files
    return results


def _send_names(stream: CommandStream, data: bytes) -> None:
    try:
        stream.write(data)
    finally:
        stream.close_stdin()
