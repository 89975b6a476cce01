"""The outputs of many tasks in one remote command: list, match locally, stream one tar.

One ``bash -c FETCH_SCRIPT`` runs for the whole batch, over one channel, and converses:

1. hpcbridge writes the work dirs to its stdin (NUL-terminated, an empty record ends them);
   they are data, never shell code, so a hostile path cannot run anything.
2. For each dir ``i`` the script links ``$tmp/i -> dir`` and answers ``T<i>``, one ``F<path>``
   per regular file below it (``find -H dir/ -type f``, exactly what ``list_files`` sees),
   then ``E<status>`` (``0``, ``missing``, ``notdir`` or find's exit status, followed by
   ``R<stderr>``); ``Z`` ends the listing. Every record is NUL-terminated and starts with its
   kind, so no file name can pose as a control record.
3. hpcbridge picks the outputs with the one matcher (:func:`hpcbridge.paths.match_outputs`,
   the same that decides ``require_outputs``) and writes ``<i>/<path>`` for each back.
4. The script runs one ``tar -cf - --null -T -`` in ``$tmp`` over those names (every name
   starts with a digit, so none is read as a tar option), streamed to stdout and extracted
   here as it arrives (:mod:`.safe_tar`) into each task's destination.

So the cost is one command execution per batch (two network round trips inside it), whatever
the number of tasks, and memory stays bounded whatever the size of the outputs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HpcBridgeError, RemoteFileError, RemoteFileNotFound, TransportError
from ..paths import match_outputs
from ..transport import Transport
from ..transport.base import CommandStream
from .safe_tar import StreamReader, extract_outputs

log = logging.getLogger(__name__)

# A mktemp failure: nothing was listed.
NO_TEMP_DIR = 97

FETCH_SCRIPT = r"""set -u
export LC_ALL=C
t=$(mktemp -d "${TMPDIR:-/tmp}/hpcbridge-fetch.XXXXXX") || exit 97
trap 'rm -rf -- "$t"' EXIT
dirs=()
while IFS= read -r -d '' d && [ -n "$d" ]; do dirs+=("$d"); done
i=0
for d in ${dirs[@]+"${dirs[@]}"}; do
  printf 'T%d\0' "$i"
  case $d in /*) ;; *) d=$PWD/$d ;; esac
  if [ ! -e "$d" ]; then printf 'Emissing\0'
  elif [ ! -d "$d" ]; then printf 'Enotdir\0'
  else
    ln -s -- "$d" "$t/$i"
    find -H "$t/$i/" -type f -printf 'F%P\0' 2>"$t/err" </dev/null
    rc=$?
    printf 'E%d\0' "$rc"
    [ "$rc" -eq 0 ] || printf 'R%s\0' "$(head -c 300 "$t/err" | tr -d '\000')"
  fi
  i=$((i + 1))
done
printf 'Z\0'
cd "$t" || exit 98
tar -cf - --no-recursion --hard-dereference --null -T -
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
    """What the script found under one work dir."""

    files: list[str] = field(default_factory=list)
    status: str = ""
    detail: str = ""


def encode_dirs(dirs: Sequence[str]) -> bytes:
    """The stdin of phase 1. A NUL cannot be sent (it ends a record) nor can an empty path
    (it ends the list): both are refused before anything is sent."""
    for d in dirs:
        if not d or "\x00" in d:
            raise HpcBridgeError(f"invalid work dir {d!r}")
    return b"".join(d.encode("utf-8", "surrogateescape") + b"\0" for d in dirs) + b"\0"


def parse_listing(records: Sequence[bytes], count: int) -> list[Listing]:
    """Phase-1 records (without the final ``Z``) -> one Listing per work dir, in order. A
    record outside any ``T`` block, or of an unknown kind, is skipped and logged."""
    out = [Listing(status="unlisted") for _ in range(count)]
    cur: Listing | None = None
    for rec in records:
        kind, body = rec[:1], rec[1:].decode("utf-8", "surrogateescape")
        if kind == b"T" and body.isdigit() and int(body) < count:
            cur = out[int(body)] = Listing()
        elif cur is None:
            log.warning("fetch listing: record %r outside a work dir; skipped", rec[:100])
        elif kind == b"F":
            if body:
                cur.files.append(body)
        elif kind == b"E":
            cur.status = body
        elif kind == b"R":
            cur.detail = body
        else:
            log.warning("fetch listing: unknown record %r; skipped", rec[:100])
    return out


def listing_error(item: FetchItem, got: Listing) -> HpcBridgeError | None:
    """The per-task error a listing carries, if any (the same classes ``list_files`` raises)."""
    if got.status == "0":
        return None
    if got.status == "missing":
        return RemoteFileNotFound(item.work_dir, where=f"task {item.key}'s work dir",
                                  hint="it was removed on the cluster; its outputs are gone")  # fmt: skip
    if got.status == "notdir":
        return RemoteFileError(f"task {item.key}: work dir {item.work_dir} is not a directory",
                               path=item.work_dir)  # fmt: skip
    return RemoteFileError(f"task {item.key}: cannot list {item.work_dir} "
                           f"(find exit {got.status or '?'}): {got.detail}", path=item.work_dir)  # fmt: skip


def read_until_end_of_listing(read: Callable[[int], bytes]) -> tuple[list[bytes], bytes]:
    """Records up to the ``Z`` record, and the bytes that came after it."""
    buf = b""
    records: list[bytes] = []
    while True:
        chunk = read(65536)
        if not chunk:
            raise TransportError("output fetch: the listing ended before its end record",
                                 hint="the remote script stopped early; the fetch is retried "
                                      "next cycle")  # fmt: skip
        buf += chunk
        *done, buf = buf.split(b"\0")
        for i, rec in enumerate(done):
            if rec == b"Z":
                rest = b"\0".join(done[i + 1:] + [buf])
                return records, rest
            records.append(rec)


def fetch_batch(transport: Transport, items: Sequence[FetchItem], *, idle_timeout: float,
                what: str = "fetching outputs") -> dict[str, list[Path] | HpcBridgeError]:  # fmt: skip
    """Fetch every item's outputs in one command execution (see the module doc).

    Returns, per ``item.key``, the local files written or the error met by that task alone
    (its work dir vanished, a file vanished while being read). Raises ``TransportError`` (the
    connection broke, the stream ended early, the script failed before listing) or
    :class:`~.safe_tar.UnsafeArchive` (the stream held something never asked for) for the
    whole batch: files already extracted stay, nothing else changes."""
    if not items:
        return {}
    data = encode_dirs([i.work_dir for i in items])
    results: dict[str, list[Path] | HpcBridgeError] = {}
    with transport.open_stream(fetch_argv(), idle_timeout=idle_timeout, what=what) as stream:
        stream.write(data)
        try:
            records, rest = read_until_end_of_listing(stream.read)
        except TransportError:
            status, err = stream.finish()
            if status == NO_TEMP_DIR:
                raise TransportError(f"{what}: cannot make a temporary dir on the cluster: "
                                     f"{err.strip()[-300:]}", hint="check $TMPDIR there") from None  # fmt: skip
            raise
        listings = parse_listing(records, len(items))
        wanted: dict[str, set[str]] = {}
        names: list[bytes] = []
        for idx, (item, got) in enumerate(zip(items, listings, strict=True)):
            error = listing_error(item, got)
            if error is not None:
                results[item.key] = error
                continue
            chosen = match_outputs(got.files, item.patterns)
            wanted[str(idx)] = set(chosen)
            names += [f"{idx}/{rel}".encode("utf-8", "surrogateescape") + b"\0" for rel in chosen]
        # From a thread: tar may fill the channel with output before it has read every name.
        writer = threading.Thread(target=_send_names, args=(stream, b"".join(names)),
                                  daemon=True, name="hpcbridge-fetch-names")  # fmt: skip
        writer.start()
        dests = {str(i): item.dest for i, item in enumerate(items)}
        got_files = extract_outputs(StreamReader(stream.read, rest), wanted, dests)
        status, err = stream.finish()
        writer.join(timeout=idle_timeout)
    if status != 0:
        log.warning("%s: tar exit %s: %s", what, status, err.strip()[-500:])
    for idx, item in enumerate(items):
        key = str(idx)
        if key not in wanted:
            continue
        files = got_files.get(key, [])
        if len(files) != len(wanted[key]):
            missing = sorted(wanted[key] - {p.relative_to(item.dest).as_posix() for p in files})
            results[item.key] = RemoteFileError(
                f"task {item.key}: {len(missing)} output file(s) could not be read "
                f"({', '.join(missing[:5])}); tar said: {err.strip()[-300:]}",
                path=item.work_dir)  # fmt: skip
            continue
        results[item.key] = files
    return results


def _send_names(stream: CommandStream, data: bytes) -> None:
    try:
        stream.write(data)
    finally:
        stream.close_stdin()
