"""The batched output fetch: one command for many tasks, hostile names, refused tar streams.

The Slurm backend runs over LocalTransport here: the real bash script, GNU find and GNU tar,
streamed through real pipes; only the network is missing (the lab test has it).
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from hpcbridge.backends.batch_fetch import (
    FetchItem,
    Listing,
    ListingParser,
    encode_dirs,
    fetch_batch,
    listing_error,
)
from hpcbridge.backends.safe_tar import UnsafeArchive, extract_outputs
from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.config import parse_config
from hpcbridge.errors import CommandTimeout, RemoteFileError, RemoteFileNotFound, TransportError
from hpcbridge.lifecycle import TaskState as S
from hpcbridge.models import Task, TaskSpec
from hpcbridge.paths import match_outputs
from hpcbridge.transport import LocalTransport
from tests.unit.test_work_dir_files import HOSTILE


def backend(tmp_path: Path) -> SlurmBackend:
    work = tmp_path / "cluster"
    cfg = parse_config({"clusters": {"lab": {"backend": "slurm", "transport": "local",
                                             "work_dir": str(work)}}}).cluster("lab")  # fmt: skip
    return SlurmBackend(cfg, LocalTransport(home=tmp_path))


def task(tid: str, outputs: tuple[str, ...], work_dir: str | None = None) -> Task:
    spec = TaskSpec(command=("true",), name=tid, cluster="lab", outputs=outputs)
    now = time.time()
    return Task(id=tid, spec=spec, state=S.FETCHING, metadata={}, created_at=now,
                updated_at=now, attempt_count=1, work_dir=work_dir)  # fmt: skip


def write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


def test_many_tasks_in_one_command_each_gets_exactly_its_own_outputs(tmp_path: Path) -> None:
    b = backend(tmp_path)
    tasks = [task(f"t{i}", ("*.txt", "res/**/*.csv")) for i in range(30)]
    for i, t in enumerate(tasks):
        root = tmp_path / "cluster" / t.id
        write(root / "out.txt", f"out of {t.id}")
        write(root / "res" / "a" / "b" / "x.csv", f"csv {i}")
        write(root / "scratch.bin", "not an output")
        write(root / ".hpcbridge" / "attempt-1.out", "log")
    dests = {t.id: tmp_path / "local" / t.id for t in tasks}
    before = b.transport.stats.round_trips
    got = b.fetch_outputs_many(tasks, dests)
    assert b.transport.stats.round_trips - before == 1  # one command for 30 tasks
    for i, t in enumerate(tasks):
        d = dests[t.id]
        assert sorted(got[t.id]) == [d / "out.txt", d / "res/a/b/x.csv"]
        assert (d / "out.txt").read_text() == f"out of {t.id}"
        assert (d / "res/a/b/x.csv").read_text() == f"csv {i}"
        assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == [
            "out.txt", "res/a/b/x.csv"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_and_dir_names_are_fetched_literally_and_nothing_runs(tmp_path: Path, name: str) -> None:
    b = backend(tmp_path)
    # A hostile work dir too (a custom work_dir is the user's string, kept as it is).
    work = tmp_path / "cluster" / f"wd {name}"
    t = task("t1", ("**/*",), work_dir=str(work))
    write(work / name, "payload")
    write(work / "-C", "dash")  # would be an option if tar read names as options
    dest = tmp_path / "local"
    got = b.fetch_outputs(t, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in got) == sorted([name, "-C"])
    assert (dest / name).read_text() == "payload"
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


def test_the_selection_is_the_one_matcher_s(tmp_path: Path) -> None:
    b = backend(tmp_path)
    files = ["a.txt", "sub/b.txt", ".hidden.txt", "x/y/z.csv", ".hpcbridge/1/exit_code", "c.TXT"]
    patterns = ("*.txt", "**/*.csv")
    root = tmp_path / "cluster" / "t1"
    for f in files:
        write(root / f, f)
    got = b.fetch_outputs(task("t1", patterns), tmp_path / "d")
    assert sorted(p.relative_to(tmp_path / "d").as_posix() for p in got) == match_outputs(files, patterns)


def test_a_vanished_work_dir_is_that_task_s_error_alone(tmp_path: Path) -> None:
    b = backend(tmp_path)
    good, gone = task("good", ("*.txt",)), task("gone", ("*.txt",))
    write(tmp_path / "cluster" / "good" / "o.txt", "ok")
    got = b.fetch_outputs_many([good, gone], {"good": tmp_path / "g", "gone": tmp_path / "x"})
    assert got["good"] == [tmp_path / "g" / "o.txt"]
    assert isinstance(got["gone"], RemoteFileNotFound) and not got["gone"].transient
    with pytest.raises(RemoteFileNotFound):
        b.fetch_outputs(gone, tmp_path / "x")


def test_tasks_without_matches_and_an_empty_batch(tmp_path: Path) -> None:
    b = backend(tmp_path)
    write(tmp_path / "cluster" / "t1" / "o.bin", "x")
    assert b.fetch_outputs_many([task("t1", ("*.txt",))], {"t1": tmp_path / "d"}) == {"t1": []}
    assert b.fetch_outputs_many([], {}) == {}


def test_work_dirs_that_cannot_be_sent_are_refused() -> None:
    with pytest.raises(Exception, match="invalid work dir"):
        encode_dirs(["/a\x00b"])
    with pytest.raises(Exception, match="invalid work dir"):
        encode_dirs([""])


def test_a_file_name_cannot_pose_as_a_control_record() -> None:
    # A file named "Z" (the end record) or "M0" arrives as the second record of an F pair.
    p = ListingParser(["/w/a", "/w/b", "/w/c"])
    rest = p.feed(b"M1\0F/w/a/\0Z\0F/w/a/\0M0\0N2\0E0\0R\0Z\0tarbytes")
    assert p.done and rest == b"tarbytes"
    assert p.listing.files == [["Z", "M0"], [], []]
    assert p.listing.status == ["", "missing", "notdir"]


def test_the_listing_may_arrive_in_any_chunks() -> None:
    data = b"F/w/a/\0x.txt\0F/w/a/\0sub/y\0E0\0R\0Z\0rest"
    for size in (1, 2, 3, 7):
        p = ListingParser(["/w/a/"])
        rest = b""
        for i in range(0, len(data), size):
            rest += p.feed(data[i:i + size]) if not p.done else data[i:i + size]
        assert p.done and p.listing.files == [["x.txt", "sub/y"]] and rest == b"rest"


# ------------------------------------------------------------------ malicious tar streams
def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    buf.seek(0)
    return buf


def reg(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"data"


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize("member", [
    reg("/etc/evil"), reg("0/../../evil"), reg("../evil"), reg("0/sub/../../evil"),
    reg("1/out.txt"),  # another key's name
    reg("0/not-requested"),
    link("0/out.txt", "/etc/passwd"), link("0/out.txt", "../../evil"),
    link("0/out.txt", "0/other", tarfile.LNKTYPE), device("0/out.txt"),
], ids=lambda m: f"{m[0].name}:{m[0].type!r}")
def test_extraction_refuses_what_was_not_asked_for(tmp_path: Path, member) -> None:
    dest = tmp_path / "dest" / "t0"
    with pytest.raises(UnsafeArchive):
        extract_outputs(tar_of(member), {"0/out.txt": [("0", "out.txt")]},
                        {"0": dest, "1": tmp_path / "dest" / "t1"})  # fmt: skip
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()
    assert not (dest / "out.txt").is_symlink()
    assert not (tmp_path / "dest" / "t1" / "out.txt").exists()


def test_extraction_never_writes_through_a_symlink_left_in_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    dest.mkdir()
    os.symlink(outside, dest / "sub")
    with pytest.raises(UnsafeArchive, match="leads outside"):
        extract_outputs(tar_of(reg("0/sub/deeper/x")), {"0/sub/deeper/x": [("0", "sub/deeper/x")]},
                        {"0": dest})
    assert list(outside.iterdir()) == []


def test_a_duplicate_member_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive):
        extract_outputs(tar_of(reg("0/a"), reg("0/a")), {"0/a": [("0", "a")]}, {"0": tmp_path})


def test_a_truncated_stream_is_a_transient_error_and_leaves_no_partial_file(tmp_path: Path) -> None:
    data = tar_of((tarfile.TarInfo("0/big"), b"x" * 100_000)).getvalue()
    with pytest.raises(TransportError) as exc:
        extract_outputs(io.BytesIO(data[:20_000]), {"0/big": [("0", "big")]}, {"0": tmp_path})
    assert exc.value.transient
    assert list(tmp_path.iterdir()) == []


def test_modes_are_tamed_and_content_is_kept(tmp_path: Path) -> None:
    info, data = tarfile.TarInfo("0/run.sh"), b"#!/bin/sh\n"
    info.mode = 0o4777
    got = extract_outputs(tar_of((info, data)), {"0/run.sh": [("0", "run.sh")]}, {"0": tmp_path})
    assert got == {"0": [tmp_path / "run.sh"]}
    assert (tmp_path / "run.sh").read_bytes() == data
    assert (tmp_path / "run.sh").stat().st_mode & 0o7777 == 0o744


@pytest.mark.parametrize("rel", ["../evil", "a/../../evil", "/etc/evil", "", "a//b", "./a"])
def test_a_requested_name_mapping_outside_its_destination_is_refused(tmp_path: Path, rel: str) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive):
        extract_outputs(tar_of(reg("w/x")), {"w/x": [("0", rel)]}, {"0": dest})
    assert not (tmp_path / "evil").exists()


def test_two_tasks_sharing_a_work_dir_each_get_the_file(tmp_path: Path) -> None:
    b = backend(tmp_path)
    shared = tmp_path / "cluster" / "shared"
    write(shared / "o.txt", "both")
    a, c = task("a", ("*.txt",), work_dir=str(shared)), task("c", ("*.txt",), work_dir=str(shared))
    got = b.fetch_outputs_many([a, c], {"a": tmp_path / "A", "c": tmp_path / "C"})
    assert got == {"a": [tmp_path / "A" / "o.txt"], "c": [tmp_path / "C" / "o.txt"]}
    assert (tmp_path / "C" / "o.txt").read_text() == "both"


def test_find_s_complaint_about_one_work_dir_fails_that_task_alone() -> None:
    # find's real message format for an unreadable subdirectory (GNU findutils 4.9).
    listing = Listing(files=[[], []], status=["", ""], find_status=123,
                      find_err="find: '/w/a/sub': Permission denied")
    items = [FetchItem("a", "/w/a", ("*",), Path("/x")), FetchItem("b", "/w/b", ("*",), Path("/y"))]
    err = listing_error(items[0], "", listing)
    assert isinstance(err, RemoteFileError) and "Permission denied" in err.message
    assert listing_error(items[1], "", listing) is None


# ------------------------------------------------------------------ broken streams
class ScriptedStream(LocalTransport):
    """Runs ``script`` instead of the fetch command: a remote side that misbehaves."""

    def __init__(self, script: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.script = script

    def open_stream(self, argv: Any, *, idle_timeout: float | None = None,
                    what: str | None = None) -> Any:  # fmt: skip
        return super().open_stream(["bash", "-c", self.script], idle_timeout=idle_timeout, what=what)


@pytest.mark.parametrize("script, message", [
    ("head -c 6 >/dev/null; printf 'F/w/a/\\0x\\0'; exit 3", "listing ended early"),
    ("head -c 4 >/dev/null; printf 'E0\\0R\\0Z\\0'; echo this is not a tar stream", "damaged or ended early"),
])
def test_a_broken_stream_fails_the_whole_batch_with_a_transient_error(tmp_path: Path, script: str,
                                                                      message: str) -> None:  # fmt: skip
    items = [FetchItem("a", "/w/a", ("x",), tmp_path / "a")]
    with pytest.raises(TransportError, match=message) as exc:
        fetch_batch(ScriptedStream(script, home=tmp_path), items, idle_timeout=10)
    assert exc.value.transient


def test_a_stream_that_goes_quiet_times_out(tmp_path: Path) -> None:
    with LocalTransport(home=tmp_path).open_stream(["sleep", "5"], idle_timeout=0.3) as stream:
        with pytest.raises(CommandTimeout):
            stream.read()
