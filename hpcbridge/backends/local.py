"""The embedded local backend: each attempt is a detached process group on this machine.

There is no scheduler to ask, so the truth lives in files the runner writes (``started``,
``result``) plus psutil: a recorded pid only counts as "ours" if its create time matches, so
a recycled pid is never mistaken for a running task.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from ..errors import BackendError, HpcBridgeError, UsageError
from ..lifecycle import TaskState
from ..models import FileInfo, JobInfo, Task
from ..paths import META_DIR, check_work_path, input_name, log_name, marker_dir, match_outputs
from ..transport.base import RemoteFileError, RemoteFileNotFound, tail_bytes
from .base import PollRequest, SubmitOutcome, SubmitRequest
from .slurm_watch import WatchRequest, WatchResult, run_watch_locally

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 5.0


def _tail_text(text: str, tail: int | None) -> str:
    if tail is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:]) if tail > 0 else ""


def _alive(ref: dict[str, object]) -> bool:
    """True when the runner process recorded in ``ref`` still runs (same pid AND start time)."""
    pid, created = ref.get("pid"), ref.get("create_time")
    if not isinstance(pid, int) or not isinstance(created, (int, float)):
        return False
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 0.01:
            return False  # pid reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            try:  # our own child: reap it so it does not linger
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class LocalBackend:
    name = "local"
    scheduler_requeues = False

    def __init__(self, work_root: Path) -> None:
        self.work_root = work_root

    def work_dir(self, task: Task) -> Path:
        return self.work_root / task.id

    def prepare(self, tasks: Sequence[Task]) -> dict[str, str | HpcBridgeError]:
        out: dict[str, str | HpcBridgeError] = {}
        for task in tasks:
            try:
                out[task.id] = self._prepare_one(task)
            except HpcBridgeError as exc:
                out[task.id] = exc
            except OSError as exc:
                out[task.id] = BackendError(f"cannot stage inputs of task {task.id}: {exc}")
        return out

    def _prepare_one(self, task: Task) -> str:
        work = self.work_dir(task)
        (work / META_DIR).mkdir(parents=True, exist_ok=True)
        for src in task.spec.inputs:
            source = Path(src)
            dest = work / input_name(src)
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, dest)
            else:
                raise UsageError(f"input {src!r} does not exist (task {task.id})")
        return str(work)

    def plan(self, requests: Sequence[SubmitRequest]) -> dict[str, Mapping[str, Any]]:
        return {}  # one job per request: nothing to decide before the write-ahead

    def submit(self, requests: Sequence[SubmitRequest]) -> list[SubmitOutcome]:
        return [self._submit_one(r) for r in requests]

    def _submit_one(self, req: SubmitRequest) -> SubmitOutcome:
        task = req.task
        work = Path(task.work_dir or self.work_dir(task))
        marks = work / marker_dir(req.attempt)
        marks.mkdir(parents=True, exist_ok=True)
        (marks / "token").write_text(req.token)
        if task.spec.script is not None:
            script = marks / "script.sh"
            script.write_text(task.spec.script, encoding="utf-8")
            command = ["bash", str(script)]
        else:
            command = list(task.spec.command)
        argv = [
            sys.executable,
            "-m",
            "hpcbridge.backends._runner",
            "--dir",
            str(work),
            "--attempt",
            str(req.attempt),
            "--",
            *command,
        ]
        try:
            # The child gets its own copy of the fd; close ours at once (it used to leak one
            # open file per submission until garbage collection, with a ResourceWarning).
            with open(work / META_DIR / f"runner-{req.attempt}.log", "ab") as runner_log:
                proc = subprocess.Popen(
                    argv,
                    # The task's env goes through the environment, never the command line:
                    # argv is world-readable in /proc and `ps`, and env values hold secrets.
                    env={**os.environ, **task.spec.env},
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=runner_log,
                    start_new_session=True,  # own session + process group: survives us, killable as one
                    close_fds=True,
                )
        except OSError as exc:
            return SubmitOutcome(req.token, error=BackendError(f"cannot start runner: {exc}"))
        ref = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
        (marks / "ref.json").write_text(json.dumps(ref))
        return SubmitOutcome(req.token, job_id=str(proc.pid), backend_ref=ref)

    def poll(self, requests: Sequence[PollRequest]) -> dict[str, JobInfo]:
        out: dict[str, JobInfo] = {}
        for req in requests:
            info = self._poll_one(req)
            if info is not None:
                out[req.token] = info
        return out

    def _poll_one(self, req: PollRequest) -> JobInfo | None:
        if not req.work_dir:
            return None
        marks = Path(req.work_dir) / marker_dir(req.attempt)
        ref = dict(req.backend_ref)
        if not ref and (marks / "ref.json").exists():
            # Submission outcome unknown (we died between spawn and commit): adopt the process.
            ref = json.loads((marks / "ref.json").read_text())
        job_id = req.job_id or (str(ref["pid"]) if "pid" in ref else None)
        if job_id is None:
            return None
        started = _read_float(marks / "started")
        cancelled = (marks / "cancelled").exists()
        result_file = marks / "result"
        if result_file.exists():
            result = json.loads(result_file.read_text())
            code, sig = result.get("exit_code"), result.get("signal")
            if cancelled:
                state, raw = TaskState.CANCELLED, "CANCELLED"
            elif code == 0:
                state, raw = TaskState.SUCCEEDED, "COMPLETED"
            else:
                state, raw = TaskState.FAILED, "FAILED"
            return JobInfo(
                job_id=job_id,
                raw_state=raw,
                state=state,
                source="marker",
                exit_code=code,
                signal=sig,
                nodes="localhost",
                start_time=started,
                end_time=result.get("ended"),
                reason=(f"signal {sig}" if sig else None),
            )
        if _alive(ref):
            return JobInfo(
                job_id=job_id,
                raw_state="RUNNING" if started else "STARTING",
                state=TaskState.RUNNING if started else TaskState.QUEUED,
                source="process",
                nodes="localhost",
                start_time=started,
            )
        if cancelled:
            # Killed before it could write a result (SIGKILL after the grace period).
            return JobInfo(job_id, "CANCELLED", TaskState.CANCELLED, "marker", start_time=started)
        # Runner gone without a result: it was killed hard (kill -9, reboot). The service turns
        # a job absent for its grace period into `lost`.
        return None

    def cancel(self, requests: Sequence[PollRequest]) -> None:
        for req in requests:
            if not req.work_dir:
                continue
            marks = Path(req.work_dir) / marker_dir(req.attempt)
            marks.mkdir(parents=True, exist_ok=True)
            (marks / "cancelled").write_text(f"{time.time()}\n")
            ref = dict(req.backend_ref)
            if _alive(ref):
                pid = int(ref["pid"])
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + KILL_GRACE_SECONDS
                while time.monotonic() < deadline and _alive(ref):
                    time.sleep(0.05)
                if _alive(ref):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def fetch_outputs(self, task: Task, dest: Path) -> list[Path]:
        work = Path(task.work_dir or self.work_dir(task))
        files = [
            str(p.relative_to(work).as_posix())
            for p in work.rglob("*")
            if p.is_file() and not p.is_symlink()
        ]
        copied = []
        for rel in match_outputs(files, task.spec.outputs):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / rel, target)
            copied.append(target)
        return copied

    def fetch_outputs_many(self, tasks: Sequence[Task], dests: Mapping[str, Path],
                           ) -> dict[str, list[Path] | HpcBridgeError]:  # fmt: skip
        # Local files: no round trips to save, so one copy per task, errors per task.
        out: dict[str, list[Path] | HpcBridgeError] = {}
        for task in tasks:
            work = Path(task.work_dir or self.work_dir(task))
            try:
                if not work.is_dir():
                    raise RemoteFileNotFound(str(work), where=f"task {task.id}'s work dir")
                Path(dests[task.id]).mkdir(parents=True, exist_ok=True)
                out[task.id] = self.fetch_outputs(task, Path(dests[task.id]))
            except HpcBridgeError as exc:
                out[task.id] = exc
            except OSError as exc:
                out[task.id] = RemoteFileError(f"task {task.id}: {exc}", path=str(work))
        return out

    def read_log(self, task: Task, attempt: int, stream: str, tail: int | None) -> str:
        path = Path(task.work_dir or self.work_dir(task)) / log_name(attempt, stream)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return _tail_text(text, tail)

    def list_work_dir(self, task: Task) -> list[FileInfo]:
        root = Path(task.work_dir or self.work_dir(task))
        if not root.is_dir():
            raise RemoteFileNotFound(str(root), where=f"task {task.id}'s work dir")
        out: list[FileInfo] = []

        def skipped(exc: OSError) -> None:
            log.warning("task %s: listing %s: %s", task.id, root, exc)

        # As find -H DIR -type f: the root may be a symlink, nothing below it is followed.
        for dirpath, _dirs, names in os.walk(root, onerror=skipped):
            for name in names:
                full = Path(dirpath) / name
                try:
                    st = full.lstat()
                except OSError:
                    continue  # vanished while we walked
                if stat.S_ISREG(st.st_mode):
                    out.append(FileInfo(full.relative_to(root).as_posix(), st.st_size, st.st_mtime))
        return sorted(out, key=lambda f: f.path)

    def watch(self, requests: Sequence[WatchRequest]) -> WatchResult:
        """The same one batched script as on a cluster (slurm_watch), run here."""
        return run_watch_locally(requests)

    def read_work_file(self, task: Task, path: str, tail: int | None) -> str:
        rel = check_work_path(path)
        where = f"task {task.id}'s work dir"
        work = Path(task.work_dir or self.work_dir(task))
        try:
            root = work.resolve(strict=True)
        except OSError:
            raise RemoteFileNotFound(str(work), where=where) from None
        try:
            target = (root / rel).resolve(strict=True)
        except OSError:  # missing, a dangling symlink, or a symlink loop
            raise RemoteFileNotFound(str(root / rel), where=where,
                                     hint=f"list the files with `hpcbridge tasks files {task.id}`") from None  # fmt: skip
        if target == root or not target.is_relative_to(root):
            raise UsageError(f"{rel!r} is outside the task's work dir (a symlink that leaves it)",
                             hint="give a path relative to the work dir, as "
                                  "`hpcbridge tasks files ID` lists it")  # fmt: skip
        if not target.is_file():
            raise RemoteFileError(f"{where}: not a regular file: {root / rel}", path=str(root / rel))
        try:
            with open(target, "rb") as fh:
                data = fh.read() if tail is None else _read_tail(fh, tail)
        except OSError as exc:
            raise RemoteFileError(f"{where}: cannot read {root / rel}: {exc.strerror}",
                                  path=str(root / rel), err=exc.errno) from None  # fmt: skip
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        pass


def _read_tail(fh: BinaryIO, lines: int) -> bytes:
    """The last ``lines`` lines of an open file, read backwards in blocks (never the whole
    file unless it has fewer lines)."""
    if lines <= 0:
        return b""
    end = fh.seek(0, os.SEEK_END)
    data = b""
    pos = end
    while pos > 0 and data.count(b"\n") <= lines:
        step = min(65536, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
    return tail_bytes(data, lines)


def _read_float(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
