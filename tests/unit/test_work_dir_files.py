"""A task's work dir, live (issue 10 item 6): ``tasks files``, ``tasks tail [-f]``, ``last``.

The path rules (pure), the Slurm backend's listing and read over a ReplayTransport whose
replies come from really running the generated commands here (GNU find, the read script in
bash, once as the argv itself and once through the SSH quoting as sshd's ``$SHELL -c`` gets
it), the local backend, the FakeBackend, the Service (``last``, ``files``' newest,
``follow_file``'s exactly-once) and the CLI through click's CliRunner.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpcbridge.backends.local import LocalBackend
from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.backends.slurm_files import FIND_FORMAT, READ_SCRIPT, find_argv, parse_find_listing
from hpcbridge.cli import cli
from hpcbridge.config import parse_config
from hpcbridge.errors import TaskNotFound, UsageError
from hpcbridge.lifecycle import TaskState
from hpcbridge.models import FileInfo, Task, TaskSpec
from hpcbridge.paths import check_work_path, in_meta_dir, is_log_path
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.testing import FakeBackend, ReplayCall, ReplayTransport, Reply, run_locally
from hpcbridge.transport.base import RemoteFileError, RemoteFileNotFound, build_command

S = TaskState

# Names a file may really have; each must be listed and read literally, never run.
HOSTILE = ["a'; touch PWNED; echo 'foo", "$(touch PWNED)", "`touch PWNED`", "new\nline",
           "tab\there", " lead space", "-n", "semi;colon", "back\\slash", "ünïcode", "*",
           "trailing-newline\n", "dir with space/inner $HOME.txt"]  # fmt: skip


# ------------------------------------------------------------------------------ path rules


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_valid_paths_kept_as_they_are(name: str) -> None:
    assert check_work_path(name) == name


@pytest.mark.parametrize(("given", "normal"), [("a//b/./c", "a/b/c"), ("./x", "x"), ("x/", "x"),
                                              (".hpcbridge/attempt-1.out", ".hpcbridge/attempt-1.out")])  # fmt: skip
def test_paths_are_normalised(given: str, normal: str) -> None:
    assert check_work_path(given) == normal


@pytest.mark.parametrize("bad", ["", ".", "./", "/", "/etc/passwd", "..", "../x", "a/../b",
                                 "a/..", "x/../../y", "nul\x00byte", "//etc/passwd"])  # fmt: skip
def test_paths_outside_or_not_naming_a_file_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        check_work_path(bad)
    assert err.value.hint and "tasks files" in err.value.hint


def test_meta_and_log_paths() -> None:
    assert in_meta_dir(".hpcbridge/1/started") and in_meta_dir(".hpcbridge/attempt-2.err")
    assert not in_meta_dir("out/.hpcbridge/x") and not in_meta_dir(".hpcbridgex/y")
    assert is_log_path(".hpcbridge/attempt-1.out") and is_log_path(".hpcbridge/attempt-12.err")
    for p in (".hpcbridge/1/started", ".hpcbridge/runner-1.log", "attempt-1.out",
              ".hpcbridge/attempt-x.out", ".hpcbridge/attempt-1.txt"):  # fmt: skip
        assert not is_log_path(p)


# ------------------------------------------------------------------------------ fixtures


def make_tree(root: Path, outside: Path) -> None:
    """A work dir with hostile names, a nested dir, hpcbridge's own files and symlinks in and
    out (none of which must be listed)."""
    root.mkdir(parents=True)
    (root / ".hpcbridge" / "1").mkdir(parents=True)
    (root / ".hpcbridge" / "1" / "started").write_text("1\n")
    (root / ".hpcbridge" / "attempt-1.out").write_text("out 1\nout 2\n")
    for i, name in enumerate(HOSTILE):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"content of {i}\n" * (i + 1))
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret").write_text("TOP SECRET\n")
    (root / "leak").symlink_to(outside / "secret")
    (root / "leakdir").symlink_to(outside)
    (root / "sneaky").mkdir()
    (root / "sneaky" / "up").symlink_to("../../../outside/secret")
    (root / "inside-link").symlink_to("-n")
    (root / "dangling").symlink_to(root / "nothing-here")
    (root / "subdir").mkdir()


def sshd_like(call: ReplayCall) -> Reply:
    """What sshd does with the command: ``bash -c <the one quoted string>``."""
    res = subprocess.run(["bash", "-c", build_command(call.argv)], capture_output=True, timeout=30,
                         check=False)  # fmt: skip
    return Reply(res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"), res.returncode)


def make_task(tid: str, work_dir: Path | str | None, name: str = "sim") -> Task:
    now = time.time()
    return Task(id=tid, spec=TaskSpec(command=("true",), name=name, cluster="lab"), state=S.RUNNING,
                metadata={}, created_at=now, updated_at=now, attempt_count=1,
                work_dir=None if work_dir is None else str(work_dir))  # fmt: skip


def slurm_backend(tmp_path: Path, responder: Any) -> tuple[SlurmBackend, ReplayTransport]:
    cfg = parse_config({"clusters": {"lab": {"backend": "slurm", "transport": "ssh", "host": "x",
                                             "work_dir": str(tmp_path)}}}).cluster("lab")  # fmt: skip
    transport = ReplayTransport()
    transport.on("find", responder).on("bash", responder)
    return SlurmBackend(cfg, transport), transport


@pytest.fixture(params=["argv", "ssh-quoted"])
def slurm(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[SlurmBackend, ReplayTransport, Task]:
    root = tmp_path / "work" / "t1"
    make_tree(root, tmp_path / "outside")
    backend, transport = slurm_backend(tmp_path, run_locally(cwd=tmp_path) if request.param == "argv"
                                       else sshd_like)  # fmt: skip
    return backend, transport, make_task("t1", root)


@pytest.fixture
def local(tmp_path: Path) -> tuple[LocalBackend, Task]:
    root = tmp_path / "work" / "t1"
    make_tree(root, tmp_path / "outside")
    return LocalBackend(tmp_path / "work"), make_task("t1", root)


EXPECTED = sorted([".hpcbridge/1/started", ".hpcbridge/attempt-1.out", *[n for n in HOSTILE]])


# ------------------------------------------------------------------------------ Slurm: listing


def test_find_output_of_a_real_find_parses(tmp_path: Path) -> None:
    """The exact bytes GNU find prints for FIND_FORMAT (made here by the real find)."""
    root = tmp_path / "w"
    make_tree(root, tmp_path / "outside")
    res = subprocess.run(find_argv(str(root)), capture_output=True, check=True)
    assert res.stdout.endswith(b"\x00") and b"new\nline\x00" in res.stdout
    files = parse_find_listing(res.stdout.decode())
    assert [f.path for f in files] == EXPECTED
    by = {f.path: f for f in files}
    assert by["-n"].size == os.stat(root / "-n").st_size
    assert by["new\nline"].mtime == pytest.approx(os.stat(root / "new\nline").st_mtime, abs=1e-6)


def test_a_captured_listing_parses_and_a_bad_record_is_skipped() -> None:
    captured = ("1 1796124976.0271474120 a b\x00"
                "3 1796124976.0271474120 sub/$(id)\x00"
                "1 1796124976.0271474120 new\nline\x00"
                "garbage\x00"
                "0 1796124976.5 \x00")  # the start point itself: %P is empty
    assert parse_find_listing(captured) == [
        FileInfo("a b", 1, 1796124976.0271474120), FileInfo("new\nline", 1, 1796124976.0271474120),
        FileInfo("sub/$(id)", 3, 1796124976.0271474120)]  # fmt: skip


def test_listing_is_one_find_exec_as_an_argv(slurm: Any) -> None:
    backend, transport, task = slurm
    files = backend.list_work_dir(task)
    assert [f.path for f in files] == EXPECTED  # symlinks (in or out) neither listed nor followed
    assert len(transport.calls) == 1
    call = transport.calls[0]
    assert call.method == "run" and call.argv == ("env", "LC_ALL=C", "find", "-H", task.work_dir,
                                                   "-type", "f", "-printf", FIND_FORMAT)  # fmt: skip
    assert all(f.mtime > time.time() - 600 for f in files)
    assert not (Path(task.work_dir) / "PWNED").exists()


def test_a_missing_work_dir_is_remote_file_not_found(tmp_path: Path) -> None:
    backend, _ = slurm_backend(tmp_path, run_locally())
    with pytest.raises(RemoteFileNotFound) as err:
        backend.list_work_dir(make_task("t9", tmp_path / "nope"))
    assert err.value.hint
    with pytest.raises(RemoteFileNotFound):
        backend.read_work_file(make_task("t9", tmp_path / "nope"), "x", 10)


def test_an_unreadable_subdir_leaves_out_only_its_files(tmp_path: Path) -> None:
    backend, _ = slurm_backend(tmp_path, lambda call: Reply(
        "1 1.5 ok\x00", "find: '/w/locked': Permission denied\n", 1))  # fmt: skip
    assert backend.list_work_dir(make_task("t1", "/w")) == [FileInfo("ok", 1, 1.5)]


def test_a_listing_refused_entirely_is_remote_file_error(tmp_path: Path) -> None:
    backend, _ = slurm_backend(tmp_path, lambda call: Reply("", "find: '/w': Permission denied\n", 1))
    with pytest.raises(RemoteFileError):
        backend.list_work_dir(make_task("t1", "/w"))


# ------------------------------------------------------------------------------ Slurm: reads


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_read_literally_and_nothing_runs(slurm: Any, name: str) -> None:
    backend, transport, task = slurm
    i = HOSTILE.index(name)
    assert backend.read_work_file(task, name, None) == f"content of {i}\n" * (i + 1)
    assert backend.read_work_file(task, name, 1) == f"content of {i}\n"
    call = transport.calls[-1]
    assert call.argv[:3] == ("bash", "-c", READ_SCRIPT)  # the script is a constant
    assert call.argv[4:] == (task.work_dir, name, "1")  # the values are arguments
    assert not list(Path(task.work_dir).parent.rglob("PWNED"))


def test_tail_is_exactly_tail_n(slurm: Any) -> None:
    backend, _, task = slurm
    assert backend.read_work_file(task, ".hpcbridge/attempt-1.out", 1) == "out 2\n"
    assert backend.read_work_file(task, ".hpcbridge/attempt-1.out", 0) == ""
    assert backend.read_work_file(task, ".hpcbridge/attempt-1.out", 50) == "out 1\nout 2\n"


def test_a_symlink_inside_the_work_dir_is_read(slurm: Any) -> None:
    backend, _, task = slurm
    assert backend.read_work_file(task, "inside-link", None).startswith("content of 6")


@pytest.mark.parametrize("path", ["leak", "leakdir/secret", "sneaky/up"])
def test_symlinks_leaving_the_work_dir_are_refused_on_the_reading_side(slurm: Any, path: str) -> None:
    backend, _, task = slurm
    with pytest.raises(UsageError) as err:
        backend.read_work_file(task, path, None)
    assert "outside" in err.value.message and err.value.hint
    assert "TOP SECRET" not in str(err.value)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/secret", "sneaky/../../x"])
def test_absolute_and_dotdot_paths_are_refused_before_any_command(slurm: Any, path: str) -> None:
    backend, transport, task = slurm
    with pytest.raises(UsageError):
        backend.read_work_file(task, path, None)
    assert transport.calls == []


def test_missing_dangling_and_directory(slurm: Any) -> None:
    backend, _, task = slurm
    for path in ("nope", "dangling"):
        with pytest.raises(RemoteFileNotFound) as err:
            backend.read_work_file(task, path, None)
        assert err.value.hint and "tasks files" in err.value.hint
    with pytest.raises(RemoteFileError, match="not a regular file"):
        backend.read_work_file(task, "subdir", None)


def test_a_work_dir_that_is_itself_a_symlink_works(tmp_path: Path) -> None:
    real = tmp_path / "lustre" / "t1"
    make_tree(real, tmp_path / "outside")
    (tmp_path / "scratch").symlink_to(tmp_path / "lustre")
    backend, _ = slurm_backend(tmp_path, sshd_like)
    task = make_task("t1", tmp_path / "scratch" / "t1")
    assert [f.path for f in backend.list_work_dir(task)] == EXPECTED
    assert backend.read_work_file(task, "-n", None).startswith("content of 6")
    with pytest.raises(UsageError):
        backend.read_work_file(task, "leak", None)


# ------------------------------------------------------------------------------ local backend


def test_local_backend_lists_like_find(local: Any) -> None:
    backend, task = local
    files = backend.list_work_dir(task)
    assert [f.path for f in files] == EXPECTED
    st = os.stat(Path(task.work_dir) / "-n")
    assert {f.path: (f.size, f.mtime) for f in files}["-n"] == (st.st_size, st.st_mtime)


def test_local_backend_reads_and_refuses_like_the_slurm_one(local: Any) -> None:
    backend, task = local
    for i, name in enumerate(HOSTILE):
        assert backend.read_work_file(task, name, None) == f"content of {i}\n" * (i + 1)
        assert backend.read_work_file(task, name, 2) == f"content of {i}\n" * min(2, i + 1)
    assert backend.read_work_file(task, "inside-link", 1) == "content of 6\n"
    for path in ("leak", "leakdir/secret", "sneaky/up", "/etc/passwd", "../outside/secret"):
        with pytest.raises(UsageError):
            backend.read_work_file(task, path, None)
    for path in ("nope", "dangling"):
        with pytest.raises(RemoteFileNotFound):
            backend.read_work_file(task, path, None)
    with pytest.raises(RemoteFileError):
        backend.read_work_file(task, "subdir", None)
    with pytest.raises(RemoteFileNotFound):
        backend.list_work_dir(make_task("t2", Path(task.work_dir).parent / "t2"))


def test_local_tail_reads_from_the_end_of_a_big_file(tmp_path: Path) -> None:
    root = tmp_path / "work" / "t1"
    root.mkdir(parents=True)
    lines = [f"{i:07d} " + "x" * 90 + "\n" for i in range(20000)]  # ~2 MB, > the 64 KiB block
    (root / "big.log").write_text("".join(lines) + "partial")
    backend, task = LocalBackend(tmp_path / "work"), make_task("t1", root)
    assert backend.read_work_file(task, "big.log", 3) == "".join(lines[-2:]) + "partial"
    assert backend.read_work_file(task, "big.log", 1000) == "".join(lines[-999:]) + "partial"


# ------------------------------------------------------------------------------ FakeBackend


def test_fake_backend_work_dir() -> None:
    fake = FakeBackend()
    task = make_task("t1", "/fake/work/t1")
    fake.set_outputs("sim", {"result.json": "{}"})
    fake.set_log("t1", 1, "stdout", "hello\nworld\n")
    fake.set_files("t1", {"out/a.txt": "a\nb\n"}, mtime=5.0, outside=["link"])
    assert [(f.path, f.size) for f in fake.list_work_dir(task)] == [
        (".hpcbridge/attempt-1.out", 12), ("out/a.txt", 4), ("result.json", 2)]  # fmt: skip
    assert fake.read_work_file(task, "out//a.txt", 1) == "b\n"
    assert fake.read_work_file(task, ".hpcbridge/attempt-1.out", None) == "hello\nworld\n"
    with pytest.raises(UsageError):
        fake.read_work_file(task, "link", None)
    with pytest.raises(UsageError):
        fake.read_work_file(task, "../x", None)
    with pytest.raises(RemoteFileNotFound):
        fake.read_work_file(task, "nope", None)
    with pytest.raises(RemoteFileError):
        fake.read_work_file(task, "out", None)
    fake.fail("list_work_dir")
    with pytest.raises(Exception, match="unreachable"):
        fake.list_work_dir(task)


# ------------------------------------------------------------------------------ Service


def make_service(tmp_path: Path, backend: FakeBackend) -> Service:
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000,
             "submit_grace_seconds": 0, "lost_grace_seconds": 60}  # fmt: skip
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": backend}, source="test"))


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(default=S.RUNNING)


@pytest.fixture
def svc(tmp_path: Path, fake: FakeBackend):
    s = make_service(tmp_path, fake)
    yield s
    s.close()


def test_last_is_the_newest_task_everywhere(svc: Service, fake: FakeBackend) -> None:
    with pytest.raises(TaskNotFound, match="no tasks yet") as err:
        svc.resolve("last")
    assert err.value.hint
    first = svc.submit(command=["true"], name="one")
    second = svc.submit(command=["true"], name="two")
    assert svc.resolve("last") == second.id != first.id
    assert svc.get("last").name == "two"
    fake.set_log("two", 1, "stdout", "from two\n")
    assert svc.logs("last") == "from two\n"
    assert svc.info("last")["id"] == second.id


def test_files_marks_hpcbridge_and_newest_is_what_the_task_wrote(svc: Service, fake: FakeBackend) -> None:
    task = svc.submit(command=["true"], name="sim")
    now = time.time()
    fake.set_files("sim", {"old.txt": "x", "sub/new.h5": "yy"}, mtime=now - 30)
    fake.set_files("sim", {"sub/new.h5": "yyy"}, mtime=now - 5)
    fake.set_files("sim", {".hpcbridge/1/started": "1\n"}, mtime=now)  # a marker: never newest
    got = svc.files(task.id)
    assert got["work_dir"] == task.work_dir
    assert [(f["path"], f["size"], f["meta"]) for f in got["files"]] == [
        (".hpcbridge/1/started", 2, True), ("old.txt", 1, False), ("sub/new.h5", 3, False)]  # fmt: skip
    assert got["newest"]["path"] == "sub/new.h5"
    assert 4 <= got["newest"]["age_seconds"] < 60
    fake.set_files("sim", {".hpcbridge/attempt-1.out": "progress\n"}, mtime=now + 0.5)
    assert svc.files(task.id)["newest"]["path"] == ".hpcbridge/attempt-1.out"  # logs count
    json.dumps(got)


def test_files_of_a_task_without_work_dir_says_so(svc: Service, fake: FakeBackend) -> None:
    fake.fail_prepare("sim")
    task = svc.submit(command=["true"], name="sim")
    with pytest.raises(UsageError, match="no work dir yet"):
        svc.files(task.id)


def test_tail_checks_the_path_before_the_backend(svc: Service, fake: FakeBackend) -> None:
    task = svc.submit(command=["true"], name="sim")
    fake.set_files("sim", {"a.log": "1\n2\n3\n"})
    assert svc.tail(task.id, "a.log", 2) == "2\n3\n"
    assert svc.tail(task.id, "a.log", None) == "1\n2\n3\n"
    before = len(fake.calls_to("read_work_file"))
    with pytest.raises(UsageError):
        svc.tail(task.id, "/etc/passwd")
    assert len(fake.calls_to("read_work_file")) == before


class GrowingFile(FakeBackend):
    """Each read of ``path`` returns the next text of ``texts`` (the last one repeating); the
    read of the last one makes the job succeed (seen by the next sync)."""

    def __init__(self, texts: list[str | None]) -> None:
        super().__init__(default=S.RUNNING)
        self.texts = texts
        self.reads = 0

    def read_work_file(self, task: Task, path: str, tail: int | None) -> str:
        text = self.texts[min(self.reads, len(self.texts) - 1)]
        self.reads += 1
        if self.reads == len(self.texts):
            self.set_state(task.id, None, S.SUCCEEDED, exit_code=0)
        if text is None:
            raise RemoteFileNotFound(path, where="fake")
        self.set_files(task.id, {path: text})
        return super().read_work_file(task, path, tail)


def follow(tmp_path: Path, texts: list[str | None], lines: int | None) -> list[str]:
    backend = GrowingFile(texts)
    svc = make_service(tmp_path, backend)
    try:
        task = svc.submit(command=["true"], name="sim")
        return list(svc.follow_file(task.id, "out.log", lines, interval=0))
    finally:
        svc.close()


def test_follow_yields_every_line_exactly_once(tmp_path: Path) -> None:
    texts = [None,  # not there yet: waited for
             "a\nb\n",
             "a\nb\nc",  # c is still being written: held back
             "a\nb\nc\nd\n",
             "a\nb\nc\nd\n",  # nothing new
             "x\n",  # replaced (or truncated): starts over
             "x\ny\nz"]  # the task ends: the last line without a newline comes too
    chunks = follow(tmp_path, texts, 1)
    assert "".join(chunks) == "a\nb\nc\nd\nx\ny\nz"  # the file appeared after the start: all of it
    assert all(chunks)


def test_follow_starts_with_the_last_lines(tmp_path: Path) -> None:
    assert "".join(follow(tmp_path, ["1\n2\n3\n", "1\n2\n3\n4\n", "1\n2\n3\n4\n5\n"], 2)) == "2\n3\n4\n5\n"
    assert "".join(follow(tmp_path / "b", ["1\n2\n", "1\n2\n3\n"], 0)) == "3\n"
    assert "".join(follow(tmp_path / "c", ["1\n2\n", "1\n2\n3\n"], None)) == "1\n2\n3\n"


def test_follow_of_a_file_that_never_appears_raises_at_the_end(tmp_path: Path) -> None:
    with pytest.raises(RemoteFileNotFound):
        follow(tmp_path, [None, None], 10)


def test_follow_refuses_outside_paths_at_once(svc: Service) -> None:
    task = svc.submit(command=["true"], name="sim")
    with pytest.raises(UsageError):
        next(svc.follow_file(task.id, "../../etc/passwd", 10, interval=0))


# ------------------------------------------------------------------------------ CLI


@pytest.fixture
def run(tmp_path: Path, fake: FakeBackend, monkeypatch: pytest.MonkeyPatch):
    def opener(*_a: Any, **_k: Any) -> Service:
        return make_service(tmp_path, fake)

    # The CLI opens its service with Service.open (cli_common.service, imported when used).
    monkeypatch.setattr(Service, "open", staticmethod(opener))

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_cli_files_tail_and_last(run: Any, svc: Service, fake: FakeBackend) -> None:
    svc.submit(command=["true"], name="old")
    task = svc.submit(command=["true"], name="sim")
    now = time.time()
    fake.set_files("sim", {"out/a b.txt": "1\n2\n3\n", "new\nline": "x" * 2048}, mtime=now - 3)
    fake.set_log("sim", 1, "stdout", "log line\n")
    res = run("tasks", "files", "last")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == f"work dir: {task.work_dir}"
    assert lines[1].split() == ["2.0K", *lines[1].split()[1:3], '"new\\nline"']
    assert lines[2].endswith("  out/a b.txt")
    assert lines[3] == "hpcbridge's own files:" and lines[4].endswith(".hpcbridge/attempt-1.out")
    assert lines[5].startswith("newest: .hpcbridge/attempt-1.out (")
    got = json.loads(run("tasks", "files", task.id, "--json").stdout)
    assert set(got) == {"work_dir", "files", "newest"}
    assert set(got["files"][0]) == {"path", "size", "mtime", "meta"}
    assert set(got["newest"]) == {"path", "age_seconds"}
    res = run("tasks", "tail", "last", "out/a b.txt", "-n", "2")
    assert (res.exit_code, res.stdout) == (0, "2\n3\n")
    assert run("logs", "last").stdout == "log line\n"


def test_cli_follow_prints_until_the_task_ends(run: Any, svc: Service, fake: FakeBackend) -> None:
    task = svc.submit(command=["true"], name="sim")
    fake.set_files("sim", {"a.log": "1\n2\n"})
    fake.set_state("sim", None, S.SUCCEEDED, exit_code=0)
    svc.sync_cluster("lab")
    assert svc.get(task.id).state == S.SUCCEEDED
    res = run("tasks", "tail", "-f", "last", "a.log")
    assert (res.exit_code, res.stdout) == (0, "1\n2\n")


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "link"])
def test_cli_refuses_outside_paths_with_one_error_line_and_a_hint(run: Any, svc: Service,
                                                                  fake: FakeBackend, path: str) -> None:  # fmt: skip
    svc.submit(command=["true"], name="sim")
    fake.set_files("sim", {"a": "1\n"}, outside=["link"])
    res = run("tasks", "tail", "last", path)
    assert res.exit_code == 1
    err = res.stderr.splitlines()
    assert err[0].startswith("error: ") and "outside the task's work dir" in err[0]
    assert err[1].startswith("hint: ") and len(err) == 2
    assert res.stdout == ""


def test_cli_last_without_tasks(run: Any) -> None:
    res = run("tasks", "files", "last")
    assert res.exit_code == 1 and res.stderr.startswith("error: there are no tasks yet")
