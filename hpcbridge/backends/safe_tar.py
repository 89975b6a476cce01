"""Extract a tar stream of task outputs into local directories, refusing anything unsafe.

The stream comes from the cluster, which hpcbridge does not trust with the local file
system: a job (or whoever controls its work dir) chooses the file names, and the stream
itself could be forged. So the archive is read strictly in order (``tarfile`` stream mode,
nothing is held in memory but one chunk) and a member is written only when

* it is a regular file (no symlink, hard link, device, FIFO or directory entry: hpcbridge
  asked for regular files only, so anything else is refused, not interpreted);
* its name is exactly one of the names requested (which rules out absolute names, ``..`` and
  names nobody asked for), it arrives once, and the path it maps to under its task's
  destination is plain (no ``..``, no empty or ``.`` component);
* the directory it lands in, symlinks resolved, is still inside that key's destination (a
  symlink left in the destination by an earlier run cannot redirect the write).

Each file is written to a temporary name beside its target and renamed, so an interrupted
stream leaves no partial file. Modes are reduced to ``rw-r--r--`` plus the owner's execute
bit (no setuid, no world-writable files); mtimes are kept.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from ..errors import HpcBridgeError, TransportError

COPY_CHUNK = 1 << 20


class UnsafeArchive(HpcBridgeError):
    """The output stream held a member hpcbridge refuses to write (see the module doc)."""


class StreamReader(io.RawIOBase):
    """A read-only binary file over ``read(size) -> bytes`` (a transport stream), with
    ``head`` bytes already read served first."""

    def __init__(self, read: Callable[[int], bytes], head: bytes = b"") -> None:
        self._read = read
        self._head = head

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        chunk = self._read(len(buf))
        buf[: len(chunk)] = chunk
        return len(chunk)


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def extract_outputs(fileobj: io.IOBase | io.BufferedIOBase,
                    wanted: Mapping[str, Sequence[tuple[str, str]]],
                    dests: Mapping[str, Path]) -> dict[str, list[Path]]:  # fmt: skip
    """Write each member of the tar stream ``fileobj`` whose name is a key of ``wanted`` to
    ``dests[key] / path`` for every ``(key, path)`` it maps to (two tasks sharing a work dir
    share the member; the second gets a local copy); return, per key of ``dests``, the files
    written, in stream order.

    Raises :class:`UnsafeArchive` at the first member that is not a requested regular file
    (files already written stay: each was requested and is complete) and a transient
    ``TransportError`` when the stream is not a tar archive or ends in the middle of one."""
    got: dict[str, list[Path]] = {key: [] for key in dests}
    seen: set[str] = set()
    safe_dirs: set[Path] = set()  # directories already checked to lie inside their dest
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for member in tar:
                if member.name in seen or member.name not in wanted:
                    raise UnsafeArchive(f"output stream: refused member {member.name!r}: "
                                        "not one of the files requested")  # fmt: skip
                if not member.isreg():
                    raise UnsafeArchive(f"output stream: refused member {member.name!r}: "
                                        "not a regular file (links and devices are never "
                                        "extracted)")  # fmt: skip
                seen.add(member.name)
                first: Path | None = None
                for key, rel in wanted[member.name]:
                    target = _target(dests[key], rel, member.name, safe_dirs)
                    if first is None:
                        source = tar.extractfile(member)
                        assert source is not None  # a regular file always has data
                        _write_atomic(source, target, member)
                        first = target
                    else:
                        with open(first, "rb") as again:
                            _write_atomic(again, target, member)
                    got[key].append(target)
    except tarfile.ReadError as exc:
        raise TransportError(f"output stream is damaged or ended early ({exc})",
                             hint="nothing changed on the cluster; the fetch is retried "
                                  "next cycle") from None  # fmt: skip
    return got


def _target(dest: Path, rel: str, name: str, safe_dirs: set[Path]) -> Path:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafeArchive(f"output stream: refused member {name!r}: {rel!r} is not a plain "
                            "relative path")  # fmt: skip
    target = dest / rel
    parent = target.parent
    if parent in safe_dirs:
        return target
    existing = parent
    while not existing.exists() and existing != dest:
        existing = existing.parent
    # Checked before mkdir (which would follow a symlink) and after it.
    if not _inside(existing, dest) or not _mkdirs(parent, dest):
        raise UnsafeArchive(f"output stream: refused member {name!r}: "
                            f"{parent} leads outside {dest} (a symlink)")  # fmt: skip
    safe_dirs.add(parent)
    return target


def _mkdirs(path: Path, dest: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return _inside(path, dest)


def _write_atomic(source: IO[bytes], target: Path, member: tarfile.TarInfo) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, COPY_CHUNK)
        os.chmod(tmp, 0o644 | (0o100 if member.mode & 0o100 else 0))
        os.utime(tmp, (member.mtime, member.mtime))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
