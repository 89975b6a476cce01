"""The work dir of a running local task, live: `tasks files`, `tasks tail [-f]`, `last` (real
processes, the real CLI in a separate process for the follow)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .localtools import py, wait_for

WRITER = textwrap.dedent("""
    import os, time
    os.makedirs("out", exist_ok=True)
    os.symlink("/etc/passwd", "leak")
    with open("odd name $(id)", "w") as f:
        f.write("literal\\n")
    for i in range(600):
        with open("out/progress.txt", "a") as f:
            f.write(f"step {i}\\n")
        print("stdout", i, flush=True)
        if os.path.exists("stop"):
            break
        time.sleep(0.05)
    with open("out/progress.txt", "a") as f:
        f.write("done")  # the last line has no newline
""")


def test_files_and_follow_on_a_running_task(hb, run_cli):
    res = run_cli("submit", "--name", "writer", "--", *py(WRITER))
    assert res.exit_code == 0, res.stderr
    tid = res.stdout.split()[-1]
    work = hb.work_dir(tid)

    def listing():
        out = run_cli("tasks", "files", "last", "--json")
        assert out.exit_code == 0, out.stderr
        got = json.loads(out.stdout)
        return got if any(f["path"] == "out/progress.txt" for f in got["files"]) else None

    got = wait_for(listing, what="out/progress.txt in `tasks files`")
    assert got["work_dir"] == str(work)
    paths = {f["path"]: f for f in got["files"]}
    assert "leak" not in paths  # a symlink: not listed
    assert paths["odd name $(id)"]["meta"] is False and paths[".hpcbridge/attempt-1.out"]["meta"] is True
    assert got["newest"]["path"] in ("out/progress.txt", ".hpcbridge/attempt-1.out")
    assert got["newest"]["age_seconds"] < 10
    text = run_cli("tasks", "files", tid).stdout
    assert text.splitlines()[0] == f"work dir: {work}" and "hpcbridge's own files:" in text

    follow = subprocess.Popen([sys.executable, "-m", "hpcbridge", "tasks", "tail", "-f", "last",
                               "out/progress.txt", "-n", "1000"], env=hb.env, cwd=hb.cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: (work / "out" / "progress.txt").read_text().count("\n") >= 5, what="5 steps")
        tail = run_cli("tasks", "tail", "last", "out/progress.txt", "-n", "2")
        assert tail.exit_code == 0 and len(tail.stdout.splitlines()) == 2
        (work / "stop").write_text("")
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    final = (work / "out" / "progress.txt").read_text()
    assert final.endswith("\ndone")
    assert out == final  # every line exactly once, the unterminated last one included
    assert run_cli("tasks", "tail", tid, "odd name $(id)").stdout == "literal\n"
    assert run_cli("logs", "last", "--tail", "1").stdout.startswith("stdout ")


def test_paths_outside_the_work_dir_are_refused(hb, run_cli):
    res = run_cli("submit", "--", *py("import os; os.symlink('/etc/passwd', 'leak')"))
    tid = res.stdout.split()[-1]
    wait_for(lambda: (hb.work_dir(tid) / "leak").is_symlink(), what="the symlink")
    for path in ("leak", "/etc/passwd", "../../registry.db", "a/../../b"):
        out = run_cli("tasks", "tail", "last", path)
        assert out.exit_code == 1 and out.stdout == ""
        err = out.stderr.splitlines()
        assert len(err) == 2 and err[0].startswith("error: ") and "outside the task's work dir" in err[0]
        assert err[1].startswith("hint: ")
    out = run_cli("tasks", "tail", "last", "missing.txt")
    assert out.exit_code == 1 and out.stderr.startswith("error: ") and "no such file" in out.stderr
