"""Input files uploaded once per content, then placed in every work dir that needs them.

A sweep of 30 tasks sharing one mesh used to upload it 30 times (one SFTP put per task per
input). Now every regular-file input goes to a content-addressed store on the cluster,
``<base_dir>/.inputs/<sha256>/<name>``, and:

1. one command asks which store files already exist (paths on stdin, NUL-separated);
2. each missing one is uploaded once (SFTP, atomic), whatever the number of tasks using it;
   a file uploaded by an earlier sweep (same content, same name) is not uploaded again;
3. one command places every (store file, work dir) pair as a copy of its own on the
   cluster: one ``mkdir -p`` for all, one ``tee`` per 200 copies of a small file, one
   ``cp --reflink=auto`` per copy of a large one (see ``PLACE_SCRIPT``).

Never a symlink, and never a hard link: a job may write its input in place (a restart file,
a mesh it refines), and with a shared inode that would change the input of every other task
of the sweep, and of the next sweep. The upload, the part that crosses the network, happens
once; the copies are local to the cluster's file system. Directories given as inputs are
uploaded per task as before.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import HpcBridgeError, RemoteFileError, TransportError
from ..models import Task
from ..paths import input_name
from ..transport import Transport

STORE_DIR = ".inputs"
HASH_CHUNK = 1 << 20

# stdin: NUL-terminated paths; prints the ones that exist as regular files.
PROBE_SCRIPT = "while IFS= read -r -d '' p; do [ -f \"$p\" ] && printf '%s\\0' \"$p\"; done; exit 0"

# stdin: NUL-terminated (store file, destination) pairs, grouped by store file; prints the
# destinations that failed. One mkdir for all (through xargs: no argument list too long).
# Then, per store file of at most TEE_MAX_BYTES, one `tee` writes up to 200 copies at once
# (and one `chmod --reference` gives them the store file's mode, as cp would): measured on
# the lab, 1,000 `cp` forks took 2-3 s of a 1,000-task sweep's 4.5 s submission; two `tee`
# take milliseconds. Larger files, and any batch tee or chmod fails for, go one `cp` per
# copy (`--reflink=auto`: a copy-on-write clone where the file system has them; GNU's, so
# plain cp elsewhere), which reports each failure on its own.
TEE_MAX_BYTES = 16 << 20
PLACE_SCRIPT = r"""s=() d=() p=()
while IFS= read -r -d '' a && IFS= read -r -d '' b; do s+=("$a"); d+=("$b"); p+=("${b%/*}"); done
[ "${#s[@]}" -gt 0 ] || exit 0
printf '%s\0' "${p[@]}" | sort -zu | xargs -0 mkdir -p -- 2>/dev/null
i=0; n=${#s[@]}
while [ "$i" -lt "$n" ]; do
  src=${s[i]}; j=$i
  while [ "$j" -lt "$n" ] && [ "${s[j]}" = "$src" ] && [ $((j - i)) -lt 200 ]; do j=$((j + 1)); done
  batch=("${d[@]:i:j-i}"); i=$j
  size=$(wc -c < "$src" 2>/dev/null) || size=
  if [ -n "$size" ] && [ "$size" -le __TEE_MAX__ ] && tee -- "${batch[@]}" < "$src" > /dev/null 2>&1 &&
     chmod --reference="$src" -- "${batch[@]}" 2>/dev/null; then
    continue
  fi
  for x in "${batch[@]}"; do
    rm -f -- "$x" 2>/dev/null  # what a failed tee left, with the wrong mode
    cp -f --reflink=auto -- "$src" "$x" 2>/dev/null || cp -f -- "$src" "$x" 2>/dev/null || printf '%s\0' "$x"
  done
done
exit 0
""".replace("__TEE_MAX__", str(TEE_MAX_BYTES))


@dataclass(frozen=True)
class Placement:
    task_id: str
    local: Path
    store: str  # remote store path
    dest: str  # remote path in the work dir


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _nul(items: Sequence[str]) -> bytes:
    return b"".join(i.encode("utf-8", "surrogateescape") + b"\0" for i in items)


def _split(out: str) -> set[str]:
    return {p for p in out.split("\x00") if p}


def stage_inputs(transport: Transport, base_dir: str, tasks: Sequence[Task],
                 dirs: dict[str, str], timeout: float) -> dict[str, HpcBridgeError]:  # fmt: skip
    """Upload every task's inputs (files once per content, dirs per task) and place them in
    ``dirs[task.id]``; return the tasks that met an error of their own. Raises
    ``TransportError`` when the cluster cannot be reached."""
    errors: dict[str, HpcBridgeError] = {}
    placements: list[Placement] = []
    hashes: dict[tuple[str, int, int], str] = {}
    for task in tasks:
        try:
            for src in task.spec.inputs:
                local = Path(src)
                target = posixpath.join(dirs[task.id], input_name(src))
                if local.is_dir() or not local.exists():
                    transport.put(local, target)  # a dir, or a missing file: put says so
                    continue
                st = local.stat()
                key = (os.path.realpath(local), st.st_size, st.st_mtime_ns)
                if key not in hashes:
                    hashes[key] = sha256_file(local)
                store = posixpath.join(base_dir, STORE_DIR, hashes[key], input_name(src))
                placements.append(Placement(task.id, local, store, target))
        except TransportError:
            raise
        except HpcBridgeError as exc:
            errors[task.id] = exc
        except OSError as exc:
            errors[task.id] = HpcBridgeError(f"cannot upload inputs of task {task.id}: {exc}")
    placements = [p for p in placements if p.task_id not in errors]
    if not placements:
        return errors
    stores = sorted({p.store for p in placements})
    res = transport.run(["bash", "-c", PROBE_SCRIPT], stdin=_nul(stores), timeout=timeout,
                        what="looking for inputs uploaded before")  # fmt: skip
    present = _split(res.stdout) if res.ok else set()
    uploaded: dict[str, HpcBridgeError | None] = {s: None for s in present}
    for p in placements:
        if p.store in uploaded:
            continue
        try:
            transport.put(p.local, p.store)
            uploaded[p.store] = None
        except TransportError:
            raise
        except HpcBridgeError as exc:
            uploaded[p.store] = exc
        except OSError as exc:
            uploaded[p.store] = RemoteFileError(f"cannot upload {p.local}: {exc}", path=p.store)
    todo = []
    for p in placements:
        failed = uploaded[p.store]
        if failed is not None:
            errors.setdefault(p.task_id, failed)
        else:
            todo.append(p)
    if todo:
        todo.sort(key=lambda p: p.store)  # grouped: one tee per store file (PLACE_SCRIPT)
        res = transport.run(["bash", "-c", PLACE_SCRIPT],
                            stdin=_nul([x for p in todo for x in (p.store, p.dest)]),
                            timeout=timeout + len(todo) / 100, what="placing inputs in work dirs")  # fmt: skip
        bad = _split(res.stdout)
        if not res.ok:
            bad = {p.dest for p in todo}
        for p in todo:
            if p.dest in bad:
                errors.setdefault(p.task_id, RemoteFileError(
                    f"task {p.task_id}: cannot place input {p.local.name} at {p.dest}",
                    path=p.dest, hint="check that the work dir can be written "
                                      f"({res.stderr.strip()[-200:] or 'no message'})"))  # fmt: skip
    return errors
