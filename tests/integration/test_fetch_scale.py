"""Outputs at scale on the real Slurm lab, through the real sshd: the outputs of 50 tasks
that finished come back in ONE remote command (one tar stream), each task gets exactly its
own files; a shared input used by 30 tasks is uploaded once and every job sees it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import squeue_as_root, wait_for

pytestmark = pytest.mark.integration
S = TaskState


def counting(obj: Any, name: str, counts: dict[str, int]) -> None:
    """Count calls of ``obj.name`` (the real method still runs)."""
    real: Callable[..., Any] = getattr(obj, name)
    counts[name] = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return real(*args, **kwargs)

    setattr(obj, name, wrapper)


def wait_jobs_done(service: Service, ids: list[str], timeout: float = 180) -> None:
    """Wait, without syncing, until Slurm says every job ended, so one cycle sees them all."""
    jobs = [a.job_id for a in service.registry.current_attempts(ids).values() if a.job_id]
    assert len(jobs) == len(ids)

    def done() -> bool:
        out = squeue_as_root("-t", "all", "-o", "%T", "-j", ",".join(jobs))
        states = out.split()
        return len(states) == len(jobs) and all(s == "COMPLETED" for s in states)

    wait_for(done, timeout, f"{len(jobs)} jobs to complete")


def test_50_finished_tasks_are_fetched_in_one_remote_command(service: Service, tmp_path: Path) -> None:
    n = 50
    specs = [{"command": ["bash", "-c", 'echo "$1" > result.txt; mkdir -p "sub dir"; '
                          'echo "csv $1" > "sub dir/$1.csv"; echo scratch > scratch.bin', "x", f"task-{i}"],
              "name": f"fetch-{i}", "cluster": "lab", "outputs": ["result.txt", "**/*.csv"],
              "cpus": 1, "time": "00:02:00"}
             for i in range(n)]  # fmt: skip
    tasks = service.submit_many(specs)
    ids = [t.id for t in tasks]
    wait_jobs_done(service, ids)

    transport = service.runtime.backend("lab").transport  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    for name in ("open_stream", "get", "list_files", "run", "run_script"):
        counting(transport, name, counts)
    service.sync_cluster("lab")  # poll: all 50 ended -> fetching -> one batch fetch
    states = {t.id: service.get(t.id).state for t in tasks}
    assert all(s == S.SUCCEEDED for s in states.values()), states
    assert counts["open_stream"] == 1, counts  # the fetch of 50 tasks: one command
    assert counts["get"] == 0 and counts["list_files"] == 0, counts
    for i in range(n):
        out = Path(service.runtime.data_dir) / "outputs" / tasks[i].id
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert files == ["result.txt", f"sub dir/task-{i}.csv"], files
        assert (out / "result.txt").read_text() == f"task-{i}\n"
        assert (out / "sub dir" / f"task-{i}.csv").read_text() == f"csv task-{i}\n"


def test_a_shared_input_of_30_tasks_is_uploaded_once_and_every_job_sees_it(
        service: Service, tmp_path: Path) -> None:  # fmt: skip
    shared = tmp_path / "shared mesh.dat"
    content = f"mesh {uuid.uuid4()}\n"  # new content: nothing in the store has it yet
    shared.write_text(content)
    transport = service.runtime.backend("lab").transport  # type: ignore[attr-defined]
    puts: list[Path] = []
    real_put = transport.put

    def put(local: Path, remote: str) -> None:
        puts.append(Path(local))
        real_put(local, remote)

    transport.put = put
    n = 30
    specs = [{"command": ["bash", "-c", 'cat "shared mesh.dat" > seen.txt; echo "$1" >> seen.txt; '
                          'echo "changed by $1" >> "shared mesh.dat"',
                          "x", f"job-{i}"],
              "name": f"shared-{i}", "cluster": "lab", "inputs": [str(shared)], "outputs": ["seen.txt"],
              "cpus": 1, "time": "00:02:00"}
             for i in range(n)]  # fmt: skip
    tasks = service.submit_many(specs)
    assert puts == [shared]  # 30 tasks, one upload
    wait_jobs_done(service, [t.id for t in tasks])
    service.sync_cluster("lab")
    for i, t in enumerate(tasks):
        assert service.get(t.id).state == S.SUCCEEDED, service.get(t.id).reason
        # Each job read the shared content; what the others wrote into theirs never reached it.
        assert (Path(service.runtime.data_dir) / "outputs" / t.id / "seen.txt").read_text() == f"{content}job-{i}\n"
