"""Shared inputs: uploaded once per content to a store on the cluster, copied (never linked)
into each work dir, not uploaded again by a later sweep. Real bash over
LocalTransport; the lab test does the same over SSH."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.backends.slurm_inputs import sha256_file
from hpcbridge.config import parse_config
from hpcbridge.errors import HpcBridgeError
from hpcbridge.lifecycle import TaskState as S
from hpcbridge.models import Task, TaskSpec
from hpcbridge.paths import input_name
from hpcbridge.transport import LocalTransport
from tests.unit.test_work_dir_files import HOSTILE


class CountingTransport(LocalTransport):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.puts: list[tuple[Path, str]] = []

    def put(self, local: Path, remote: str) -> None:
        self.puts.append((Path(local), remote))
        super().put(local, remote)


def setup(tmp_path: Path) -> tuple[SlurmBackend, CountingTransport, Path]:
    work = tmp_path / "cluster"
    cfg = parse_config({"clusters": {"lab": {"backend": "slurm", "transport": "local",
                                             "work_dir": str(work)}}}).cluster("lab")  # fmt: skip
    t = CountingTransport(home=tmp_path)
    return SlurmBackend(cfg, t), t, work


def task(tid: str, *inputs: Path) -> Task:
    spec = TaskSpec(command=("true",), name=tid, cluster="lab", inputs=tuple(map(str, inputs)))
    now = time.time()
    return Task(id=tid, spec=spec, state=S.CREATED, metadata={}, created_at=now, updated_at=now)


def test_a_file_shared_by_30_tasks_is_uploaded_once_and_copied_into_each(tmp_path: Path) -> None:
    b, t, work = setup(tmp_path)
    mesh = tmp_path / "mesh.dat"
    mesh.write_bytes(b"mesh" * 1000)
    own = [tmp_path / f"p{i}.json" for i in range(30)]
    for i, p in enumerate(own):
        p.write_text(f'{{"i": {i}}}')
    tasks = [task(f"t{i}", mesh, own[i]) for i in range(30)]
    out = b.prepare(tasks)
    assert out == {f"t{i}": str(work / f"t{i}") for i in range(30)}
    mesh_puts = [p for p in t.puts if p[0] == mesh]
    assert len(mesh_puts) == 1 and len(t.puts) == 31
    store = work / ".inputs" / sha256_file(mesh) / "mesh.dat"
    assert mesh_puts[0][1] == str(store)
    for i in range(30):
        placed = work / f"t{i}" / "mesh.dat"
        assert not placed.is_symlink() and placed.read_bytes() == mesh.read_bytes()
        assert placed.stat().st_ino != store.stat().st_ino  # a copy of its own, not a link
        assert (work / f"t{i}" / f"p{i}.json").read_text() == f'{{"i": {i}}}'
    # A job writing its input in place changes its own copy only.
    with open(work / "t0" / "mesh.dat", "ab") as f:
        f.write(b"changed by t0")
    assert (work / "t1" / "mesh.dat").read_bytes() == mesh.read_bytes() == store.read_bytes()

    # The next sweep with the same file uploads nothing; a changed file is a new upload.
    t.puts.clear()
    b.prepare([task("u1", mesh), task("u2", mesh)])
    assert t.puts == []
    assert (work / "u2" / "mesh.dat").read_bytes() == mesh.read_bytes()
    os.chmod(mesh, 0o644)
    mesh.write_bytes(b"other")
    b.prepare([task("v1", mesh)])
    assert len(t.puts) == 1 and (work / "v1" / "mesh.dat").read_bytes() == b"other"
    assert (work / "t1" / "mesh.dat").read_bytes() == b"mesh" * 1000  # old tasks keep theirs


@pytest.mark.parametrize("name", [n for n in HOSTILE if "/" not in n])
def test_hostile_input_names_are_placed_literally(tmp_path: Path, name: str) -> None:
    b, t, work = setup(tmp_path)
    src = tmp_path / "in" / name
    src.parent.mkdir()
    src.write_text("content")
    out = b.prepare([task("a", src), task("b", src)])
    assert not any(isinstance(v, HpcBridgeError) for v in out.values()), out
    assert len(t.puts) == 1
    placed = input_name(str(src))  # its base name (a backslash counts as a separator)
    assert (work / "a" / placed).read_text() == (work / "b" / placed).read_text() == "content"
    assert not list(tmp_path.rglob("PWNED"))


def test_a_missing_input_fails_that_task_alone(tmp_path: Path) -> None:
    b, _t, work = setup(tmp_path)
    ok = tmp_path / "ok.txt"
    ok.write_text("ok")
    out = b.prepare([task("good", ok), task("bad", ok, tmp_path / "nope.txt")])
    assert out["good"] == str(work / "good") and isinstance(out["bad"], HpcBridgeError)
    assert (work / "good" / "ok.txt").read_text() == "ok"


def test_directories_are_still_uploaded_per_task(tmp_path: Path) -> None:
    b, t, work = setup(tmp_path)
    d = tmp_path / "case"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    b.prepare([replace(task("a"), spec=replace(task("a").spec, inputs=(str(d),)))])
    assert (work / "a" / "case" / "sub" / "f").read_text() == "x" and len(t.puts) == 1


def test_copies_keep_the_store_files_mode_and_a_failed_batch_falls_back_per_copy(tmp_path: Path) -> None:
    b, _t, work = setup(tmp_path)
    tool = tmp_path / "solver.sh"
    tool.write_text("#!/bin/sh\necho solved\n")
    tool.chmod(0o750)
    work.mkdir(parents=True)
    (work / "blocked").write_text("a file where the work dir should be")  # its batch's tee fails
    out = b.prepare([task(f"t{i}", tool) for i in range(250)] + [task("blocked", tool)])  # two tee batches
    assert isinstance(out["blocked"], HpcBridgeError) and "solver.sh" in out["blocked"].message
    for i in range(250):
        placed = work / f"t{i}" / "solver.sh"
        assert placed.read_text() == tool.read_text(), i
        assert placed.stat().st_mode & 0o777 == 0o750, i  # executable, as the input was
