"""End to end on the embedded local backend: real processes, real registry, real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import hpcbridge
from hpcbridge import TaskState

from .localtools import (
    HEAT2D,
    assert_clean_error,
    gone,
    py,
    state_moves,
    wait_for,
    wait_running,
)

S = TaskState

# -------------------------------------------------------------------------- the demo workload


def test_heat2d_demo_runs_and_brings_back_outputs(hb, run_cli, tmp_path):
    params = hb.cwd / "params.json"
    params.write_text(json.dumps({"nx": 16, "ny": 16, "steps": 200, "checkpoint_every": 0}))
    task = hpcbridge.submit(
        [sys.executable, "heat2d.py", "--params", "params.json", "--nx", "16", "--ny", "16",
         "--steps", "200"],
        name="heat demo", inputs=[HEAT2D, params], outputs=["result.json", "field.csv"],
        metadata={"study": "e2e"},
    )  # fmt: skip
    assert task.wait(timeout=60) == S.SUCCEEDED, task.record().reason

    dest = tmp_path / "downloaded"
    files = task.download_outputs(dest)
    assert sorted(p.name for p in files) == ["field.csv", "result.json"]
    result = json.loads((dest / "result.json").read_text())
    assert result["steps"] == 200
    assert result["final_step"] == 200
    assert (result["nx"], result["ny"]) == (16, 16)
    rows = (dest / "field.csv").read_text().splitlines()
    assert len(rows) == 16 and all(len(r.split(",")) == 16 for r in rows)
    # The input params file was copied into the work dir under its own name.
    assert (hb.work_dir(task.id) / "params.json").read_text() == params.read_text()

    # `tasks info --json`: timings, the attempt (pid, exit 0) and the history in order.
    res = run_cli("tasks", "info", task.id[:8], "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["id"] == task.id and info["state"] == "succeeded" and info["exit_code"] == 0
    for key in ("created", "submitted", "started", "ended", "fetched"):
        assert info["timings"][key], f"timing {key} missing: {info['timings']}"
    assert info["timings"]["run_seconds"] is not None and info["timings"]["run_seconds"] >= 0
    assert info["metadata"] == {"study": "e2e"}
    [att] = info["attempts"]
    assert att["number"] == 1 and att["exit_code"] == 0 and att["state"] == "succeeded"
    assert att["job_id"] is not None and att["job_id"].isdigit()  # the runner's pid
    moves = [(e["from"], e["to"]) for e in info["events"] if e["kind"] == "state"]
    to = [t for _, t in moves]
    assert to[:4] == ["created", "staging", "submitting", "queued"], to
    assert to[-2:] == ["fetching", "succeeded"], to
    assert set(to[4:-2]) <= {"running", "completing"}, to
    assert all(moves[i][0] == moves[i - 1][1] for i in range(1, len(moves))), moves

    # The human-readable form shows the same facts.
    text = run_cli("tasks", "info", task.id).stdout
    for label in ("submitted", "started", "ended", "fetched"):
        line = next(ln for ln in text.splitlines() if ln.startswith(label))
        assert "-" != line.split()[1], line
    assert f"#1 job {att['job_id']} succeeded" in text
    assert "exit=0" in text
    assert "fetching -> succeeded" in text
    assert text.index("created -> staging") < text.index("staging -> submitting") < text.index(
        "fetching -> succeeded"
    )
    assert "heat demo" in text


def test_failing_command_ends_failed_with_its_exit_code(hb):
    task = hpcbridge.submit(["python3", "-c", "import sys; sys.exit(3)"])
    assert task.wait(timeout=30) == S.FAILED
    rec = task.record()
    assert rec.exit_code == 3
    assert "exit code 3" in (rec.reason or "")
    [att] = task.attempts()
    assert att.exit_code == 3 and att.state == S.FAILED
    assert state_moves(task)[-1][1] == "failed"


def test_missing_executable_fails_with_127(hb):
    task = hpcbridge.submit(["definitely-not-a-command-hpcbridge"])
    assert task.wait(timeout=30) == S.FAILED
    assert task.record().exit_code == 127
    assert "definitely-not-a-command-hpcbridge" in task.logs("stderr")


def test_kill_cancels_and_the_process_group_is_gone(hb):
    task = hpcbridge.submit(["sleep", "60"])
    wait_running(task)
    runner_pid = int(task.attempts()[0].job_id)
    children = psutil.Process(runner_pid).children(recursive=True)
    assert [c.name() for c in children] == ["sleep"]
    started = time.monotonic()
    task.kill()
    assert task.wait(timeout=15) == S.CANCELLED
    assert time.monotonic() - started < 10
    assert task.record().cancel_requested
    assert gone(runner_pid), "runner still running"
    wait_for(lambda: all(gone(c.pid) for c in children), 5, what="sleep child to die")
    with pytest.raises(ProcessLookupError):
        os.killpg(runner_pid, 0)  # the whole process group is gone
    # Killing again is a no-op.
    assert task.kill() == S.CANCELLED


# -------------------------------------------------------------------------- separate processes


def test_task_seen_identically_from_another_process(hb):
    task = hpcbridge.submit(["true"], name="shared")
    assert task.wait(timeout=30) == S.SUCCEEDED
    task.metadata["k"] = "v"
    code = textwrap.dedent(
        f"""
        import json, hpcbridge
        t = hpcbridge.Task({task.id[:10]!r})
        print(json.dumps({{"id": t.id, "state": t.status.value, "meta": dict(t.metadata),
                           "events": len(t.events()), "name": t.name,
                           "attempts": [a.job_id for a in t.attempts()]}}))
        t.metadata["child"] = "was here"
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=hb.env, cwd=hb.cwd, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {
        "id": task.id,
        "state": "succeeded",
        "meta": {"k": "v"},
        "events": len(task.events()) - 1,  # the child's metadata write added one event
        "name": "shared",
        "attempts": [a.job_id for a in task.attempts()],
    }
    assert dict(task.metadata) == {"k": "v", "child": "was here"}


def test_task_submitted_elsewhere_is_waited_for_here(hb):
    code = "import hpcbridge; print(hpcbridge.submit(['python3', '-c', 'print(41+1)']).id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=hb.env, cwd=hb.cwd, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    task = hpcbridge.Task(out.stdout.strip())
    assert task.wait(timeout=30) == S.SUCCEEDED
    assert task.logs() == "42\n"


# -------------------------------------------------------------------------- clean errors


def test_unknown_id_is_a_clean_error(hb, run_proc, run_cli):
    res = run_proc("tasks", "info", "nope")
    assert res.returncode == 1
    assert res.stdout == ""
    assert_clean_error(res.stderr, "nope")
    for args in (("logs", "nope"), ("tasks", "kill", "nope"), ("tasks", "meta", "nope")):
        r = run_cli(*args)
        assert r.exit_code == 1, args
        assert_clean_error(r.stderr, "nope")
    with pytest.raises(hpcbridge.TaskNotFound, match="nope"):
        hpcbridge.Task("nope")
    with pytest.raises(hpcbridge.TaskNotFound):
        hpcbridge.get_task("")


def test_ambiguous_prefix_is_a_clean_error(hb, run_proc):
    a, b = hpcbridge.submit_many([{"command": ["true"]}, {"command": ["true"]}])
    prefix = os.path.commonprefix([a.id, b.id])
    assert len(prefix) >= 5  # registered in the same millisecond
    res = run_proc("tasks", "info", prefix)
    assert res.returncode == 1
    assert_clean_error(res.stderr, "several tasks")
    assert a.id in res.stderr and b.id in res.stderr
    with pytest.raises(hpcbridge.HpcBridgeError, match="several tasks"):
        hpcbridge.Task(prefix)
    assert hpcbridge.Task(a.id[: len(prefix) + 1] if a.id[len(prefix)] != b.id[len(prefix)]
                          else a.id) == a  # fmt: skip
    hpcbridge.wait_all([a, b], timeout=30)


def test_bad_config_key_is_a_clean_error_naming_file_and_key(hb, run_proc, tmp_path):
    cfg = tmp_path / "bad config.toml"
    cfg.write_text('[clusters.lab]\nbackend = "local"\nlost_grace_secondz = 5\n')
    env = {**hb.env, "HPCBRIDGE_CONFIG": str(cfg)}
    res = run_proc("config", env=env)
    assert res.returncode == 1
    assert_clean_error(res.stderr, str(cfg), "lost_grace_secondz", "clusters.lab")
    cfg.write_text('colour = "blue"\n')
    res = run_proc("submit", "--", "true", env=env)
    assert res.returncode == 1
    assert_clean_error(res.stderr, str(cfg), "colour")
    cfg.write_text("[clusters.lab\n")
    res = run_proc("config", env=env)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and str(cfg) in res.stderr
    # A listing reads the registry only (no config): a broken config file does not stop it.
    res = run_proc("tasks", "list", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    res = run_proc("config", env={**hb.env, "HPCBRIDGE_CONFIG": str(tmp_path / "none.toml")})
    assert res.returncode == 1
    assert_clean_error(res.stderr, "none.toml", "does not exist")


# -------------------------------------------------------------------------- hostile names


HOSTILE = "we ird 'q\" $(touch pwned) `touch pwned2`; touch pwned3 & ünïcødé ✓"


def _no_pwned(*roots: Path) -> None:
    for root in roots:
        found = [p for p in root.rglob("pwned*")] if root.exists() else []
        assert not found, f"command injection: {found}"


def test_hostile_name_and_input_path_are_taken_literally(hb, run_proc, run_cli, tmp_path):
    src_dir = tmp_path / f"in {HOSTILE}"
    src_dir.mkdir()
    fname = f"{HOSTILE}.txt"
    src = src_dir / fname
    src.write_text("payload ✓\n", encoding="utf-8")
    record_argv = (
        "import json, sys, pathlib; "
        "json.dump({'argv': sys.argv[1:], 'data': pathlib.Path(sys.argv[1]).read_text('utf-8')}, "
        "open('argv.json', 'w', encoding='utf-8'))"
    )

    # Python API
    task = hpcbridge.submit(py(record_argv) + [fname], name=HOSTILE, inputs=[src],
                            outputs=["argv.json"], metadata={HOSTILE: HOSTILE})  # fmt: skip
    assert task.wait(timeout=30) == S.SUCCEEDED, task.record().reason
    assert task.name == HOSTILE
    assert task.metadata[HOSTILE] == HOSTILE
    work = hb.work_dir(task.id)
    assert (work / fname).read_text(encoding="utf-8") == "payload ✓\n"
    got = json.loads((Path(task.record().output_dir) / "argv.json").read_text(encoding="utf-8"))
    assert got == {"argv": [fname], "data": "payload ✓\n"}

    # CLI in a real process: same name, input and argument.
    res = run_proc("submit", "--wait", "--name", HOSTILE, "-i", str(src), "-o", "argv.json",
                   "-m", f"k={HOSTILE}", "--", *py(record_argv), fname)  # fmt: skip
    assert res.returncode == 0, res.stderr
    cli_task = hpcbridge.Task(res.stdout.splitlines()[-1])
    assert cli_task.status == S.SUCCEEDED and cli_task.name == HOSTILE
    assert cli_task.metadata["k"] == HOSTILE
    got = json.loads((hb.work_dir(cli_task.id) / "argv.json").read_text(encoding="utf-8"))
    assert got == {"argv": [fname], "data": "payload ✓\n"}

    # Showing them runs nothing either.
    for args in (("tasks", "info", cli_task.id), ("tasks", "list"), ("logs", cli_task.id)):
        assert run_cli(*args).exit_code == 0
    assert HOSTILE in run_cli("tasks", "info", cli_task.id).stdout
    time.sleep(0.2)
    _no_pwned(hb.cwd, tmp_path, work, hb.work_dir(cli_task.id), REPO_ROOT)
    assert not list(Path("/tmp").glob("pwned*"))
    assert not list(Path.home().glob("pwned*"))


REPO_ROOT = Path(__file__).resolve().parents[2]


def test_script_runs_with_bash_and_hostile_arguments_are_not_expanded(hb, run_proc, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text('set -eu\necho "$((6 * 7))" > answer.txt\necho "shell=$BASH_VERSION" >&2\n')
    res = run_proc("submit", "--wait", "--script", str(script), "-o", "answer.txt")
    assert res.returncode == 0, res.stderr
    task = hpcbridge.Task(res.stdout.splitlines()[-1])
    assert task.status == S.SUCCEEDED
    assert (Path(task.record().output_dir) / "answer.txt").read_text() == "42\n"
    assert task.logs("stderr").startswith("shell=")
    assert "(script) set -eu" in run_proc("tasks", "info", task.id).stdout


# -------------------------------------------------------------------------- logs


def test_logs_api_and_cli(hb, run_cli):
    code = "import sys\nfor i in range(1, 6): print(f'out {i}')\nprint('err A', file=sys.stderr)\nprint('err B', file=sys.stderr)"
    task = hpcbridge.submit(py(code))
    assert task.wait(timeout=30) == S.SUCCEEDED
    assert task.logs() == "".join(f"out {i}\n" for i in range(1, 6))
    assert task.logs(tail=2) == "out 4\nout 5\n"
    assert task.logs("stderr") == "err A\nerr B\n"
    res = run_cli("logs", task.id, "--tail", "2")
    assert res.exit_code == 0 and res.stdout == "out 4\nout 5\n"
    res = run_cli("logs", task.id[:9], "--stderr")
    assert res.exit_code == 0 and res.stdout == "err A\nerr B\n"
    res = run_cli("logs", task.id, "-n", "0")
    assert res.exit_code == 0 and res.stdout == ""
    with pytest.raises(hpcbridge.UsageError):
        task.logs("stdin")


def test_logs_follow_ends_with_the_task_and_prints_every_line(hb, run_proc):
    code = (
        "import time\n"
        "for i in range(8):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.25)\n"
    )
    task = hpcbridge.submit(py(code))
    started = time.monotonic()
    res = run_proc("logs", task.id, "--follow", timeout=30)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert res.stdout == "".join(f"tick {i}\n" for i in range(8))
    assert elapsed >= 1.5  # it really followed the run
    assert task.status == S.SUCCEEDED  # and the follow drove the task to its end


# -------------------------------------------------------------------------- CLI submit & tasks


def test_submit_json_and_plain_output(hb, run_cli):
    res = run_cli("submit", "--json", "-n", "j", "-m", "a=1", "--", "true")
    assert res.exit_code == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["name"] == "j" and rec["spec"]["command"] == ["true"]
    assert rec["metadata"] == {"a": "1"} and rec["cluster"] == "local"
    assert rec["state"] in {"queued", "running", "fetching", "succeeded"}
    assert hpcbridge.Task(rec["id"]).wait(timeout=30) == S.SUCCEEDED

    res = run_cli("submit", "--", "echo", "hello")
    assert res.exit_code == 0, res.stderr
    last = res.stdout.splitlines()[-1]
    task = hpcbridge.Task(last)
    assert task.id == last and len(last) == 13
    assert task.record().spec.command == ("echo", "hello")
    assert task.wait(timeout=30) == S.SUCCEEDED


def test_submit_wait_exit_status(hb, run_cli):
    ok = run_cli("submit", "--wait", "--", "true")
    assert ok.exit_code == 0, ok.stderr
    assert hpcbridge.Task(ok.stdout.splitlines()[-1]).status == S.SUCCEEDED
    bad = run_cli("submit", "--wait", "--", "python3", "-c", "raise SystemExit(5)")
    assert bad.exit_code == 1
    t = hpcbridge.Task(bad.stdout.splitlines()[-1])
    assert t.status == S.FAILED and t.record().exit_code == 5


def test_submit_usage_errors_are_clean(hb, run_cli):
    res = run_cli("submit")
    assert res.exit_code == 1
    assert_clean_error(res.stderr, "command")
    res = run_cli("submit", "-m", "novalue", "--", "true")
    assert res.exit_code == 1
    assert_clean_error(res.stderr, "key=value")
    assert hpcbridge.list_tasks() == []


def test_tasks_meta_list_filters_and_limit(hb, run_cli):
    ok = hpcbridge.submit(["true"], name="ok")
    bad = hpcbridge.submit(["false"], name="bad")
    assert hpcbridge.wait_all([ok, bad], timeout=30) == [S.SUCCEEDED, S.FAILED]

    assert run_cli("tasks", "meta", ok.id, "k=v", "x=a=b").exit_code == 0
    res = run_cli("tasks", "meta", ok.id)
    assert res.exit_code == 0 and res.stdout == "k=v\nx=a=b\n"
    assert dict(ok.metadata) == {"k": "v", "x": "a=b"}
    assert run_cli("tasks", "meta", ok.id, "-d", "x").stdout == "k=v\n"

    res = run_cli("tasks", "list", "--state", "succeeded", "--json")
    assert res.exit_code == 0
    assert [r["id"] for r in json.loads(res.stdout)] == [ok.id]
    res = run_cli("tasks", "list", "-s", "failed", "-s", "succeeded", "--json")
    assert [r["id"] for r in json.loads(res.stdout)] == [bad.id, ok.id]  # newest first
    res = run_cli("tasks", "list", "--limit", "1", "--json")
    assert [r["id"] for r in json.loads(res.stdout)] == [bad.id]
    res = run_cli("tasks", "list", "--active", "--json")
    assert json.loads(res.stdout) == []
    text = run_cli("tasks", "list").stdout.splitlines()
    assert text[0].split()[:2] == ["ID", "STATE"] and len(text) == 3
    assert [t.id for t in hpcbridge.list_tasks("failed")] == [bad.id]
    assert [t.id for t in hpcbridge.list_tasks(limit=1)] == [bad.id]


def test_many_tasks_then_wait_all_and_tasks_wait(hb, run_cli):
    tasks = [hpcbridge.submit(py(f"print({i} * {i})")) for i in range(6)]
    assert hpcbridge.wait_all(tasks[:3], timeout=30) == [S.SUCCEEDED] * 3
    res = run_cli("tasks", "wait", *(t.id for t in tasks[3:]), "--timeout", "30")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == [f"{t.id} succeeded" for t in tasks[3:]]
    assert [t.logs() for t in tasks] == [f"{i * i}\n" for i in range(6)]
    assert all(len(t.attempts()) == 1 for t in tasks)

    slow = hpcbridge.submit(["sleep", "30"])
    res = run_cli("tasks", "wait", slow.id, "--timeout", "0.5")
    assert res.exit_code == 3
    assert "timeout" in res.stderr
    with pytest.raises(TimeoutError):
        slow.wait(timeout=0.3)
    slow.kill()
    assert slow.wait(timeout=15) == S.CANCELLED


def test_submit_many_batch(hb):
    tasks = hpcbridge.submit_many([{"command": ["true"], "name": f"b{i}"} for i in range(4)])
    assert [t.name for t in tasks] == ["b0", "b1", "b2", "b3"]
    assert hpcbridge.wait_all(tasks, timeout=30) == [S.SUCCEEDED] * 4
    with pytest.raises(hpcbridge.UsageError):
        hpcbridge.submit_many([{"command": ["true"]}, {"command": "not a list"}])
    assert len(hpcbridge.list_tasks()) == 4  # all-or-nothing validation


# -------------------------------------------------------------------------- lost


def test_sigkilled_runner_becomes_lost_after_grace(hb, tmp_path, monkeypatch, run_cli):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[clusters.local]\nbackend = "local"\nlost_grace_seconds = 1\n')
    monkeypatch.setenv("HPCBRIDGE_CONFIG", str(cfg))
    task = hpcbridge.submit(["sleep", "60"])
    assert task.record().cluster == "local"
    wait_running(task)
    runner = psutil.Process(int(task.attempts()[0].job_id))
    [child] = runner.children()
    # Runner first: killed the other way round, the runner could still record the child's
    # death (a real FAILED result) before its own SIGKILL lands.
    os.kill(runner.pid, signal.SIGKILL)
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: gone(runner.pid) and gone(child.pid), 5, what="processes to die")
    started = time.monotonic()
    assert task.wait(timeout=20) == S.LOST
    assert time.monotonic() - started >= 0.5
    rec = task.record()
    assert rec.ended_at is not None
    [att] = task.attempts()
    assert att.state == S.LOST
    assert state_moves(task)[-1] == ("running", "lost")
    assert "absent" in task.events()[-1].detail
    # The CLI shows it too (the config file's [clusters.local] is used).
    res = run_cli("tasks", "info", task.id)
    assert res.exit_code == 0 and "state     lost" in res.stdout


def test_submit_wait_json_keeps_the_failure_exit_status(hb, run_cli):
    bad = run_cli("submit", "--wait", "--json", "--", "python3", "-c", "raise SystemExit(4)")
    assert bad.exit_code == 1, bad.stdout
    rec = json.loads(bad.stdout)
    assert rec["state"] == "failed" and rec["exit_code"] == 4
    ok = run_cli("submit", "--wait", "--json", "--", "true")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["state"] == "succeeded"


def test_submitting_leaks_no_open_file(hb):
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks = [hpcbridge.submit(["true"]) for _ in range(3)]
        gc.collect()
    # ("subprocess N is still running" is expected: the runner is detached on purpose.)
    leaks = [str(w.message) for w in caught
             if issubclass(w.category, ResourceWarning) and "unclosed file" in str(w.message)]  # fmt: skip
    assert leaks == []
    assert hpcbridge.wait_all(tasks, timeout=30) == [S.SUCCEEDED] * 3


def test_tasks_download_and_kill_and_config_commands(hb, run_cli, tmp_path):
    task = hpcbridge.submit(py("open('a.txt', 'w').write('A'); open('b.log', 'w').write('B')"),
                            outputs=["*.txt"])  # fmt: skip
    assert task.wait(timeout=30) == S.SUCCEEDED
    res = run_cli("tasks", "download", task.id, "--dir", str(tmp_path / "dl"))
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == [str(tmp_path / "dl" / "a.txt")]
    assert (tmp_path / "dl" / "a.txt").read_text() == "A"
    # Default destination: ./<id>
    res = run_cli("tasks", "download", task.id)
    assert res.exit_code == 0 and (hb.cwd / task.id / "a.txt").read_text() == "A"

    slow = hpcbridge.submit(["sleep", "30"])
    res = run_cli("tasks", "kill", slow.id)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.split()[0] == slow.id
    assert slow.wait(timeout=15) == S.CANCELLED

    res = run_cli("config")
    assert res.exit_code == 0
    assert "(none; built-in local cluster)" in res.stdout
    assert str(hb.db) in res.stdout and "cluster local: backend=local" in res.stdout


def test_list_tasks_rejects_an_unknown_state_with_a_usage_error(hb):
    with pytest.raises(hpcbridge.UsageError, match="bogus"):
        hpcbridge.list_tasks("bogus")
    assert hpcbridge.list_tasks(["succeeded", S.FAILED]) == []


# -------------------------------------------------------------------------- bulk from a file


def test_submit_from_file_jsonl(hb, run_proc, tmp_path):
    specs = tmp_path / "tasks.jsonl"
    specs.write_text(
        "\n".join(json.dumps(s) for s in [
            {"command": ["python3", "-c", "print('one')"], "name": "one", "metadata": {"i": "1"}},
            {"command": ["sh", "-c", "exit 4"], "name": "two"},
            {"script": "echo three\n", "name": "three"},
        ]) + "\n\n"  # blank lines are skipped
    )  # fmt: skip
    res = run_proc("submit", "--from-file", str(specs), "--wait")
    assert res.returncode == 1  # one of them failed: --wait reports it
    ids = res.stdout.split()
    assert len(ids) == 3 and len(set(ids)) == 3
    tasks = [hpcbridge.Task(i) for i in ids]
    assert [t.name for t in tasks] == ["one", "two", "three"]
    assert [t.status for t in tasks] == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED]
    assert tasks[1].record().exit_code == 4
    assert tasks[0].metadata["i"] == "1"
    assert tasks[2].logs() == "three\n"


def test_submit_from_file_rejects_bad_lines_before_registering_anything(hb, run_proc, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"command": ["true"]}\n{"command": "true"}\n')
    res = run_proc("submit", "--from-file", str(bad))
    assert res.returncode == 1 and res.stderr.startswith("error: command must be a list")
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text('{"command": ["true"]}\nnot json\n')
    res = run_proc("submit", "--from-file", str(garbled))
    assert res.returncode == 1 and f"{garbled}:2: not JSON" in res.stderr
    assert "Traceback" not in res.stderr
    assert hpcbridge.list_tasks() == []


def test_task_env_values_never_reach_a_command_line(hb):
    """Secrets in a task's env travel in the environment, never in argv (world-readable)."""
    task = hpcbridge.submit(py("import os, time; print(os.environ['API_TOKEN']); time.sleep(3)"),
                            env={"API_TOKEN": "s3cr3t-value"})
    att = task.attempts()[0]
    pid = int(att.job_id or 0)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"hpcbridge" in cmdline  # it is the runner
    assert b"s3cr3t-value" not in cmdline
    assert task.wait(timeout=30) == S.SUCCEEDED
    assert task.logs() == "s3cr3t-value\n"


def test_a_success_whose_outputs_matched_nothing_is_visible_at_a_glance(hb, run_cli):
    task = hpcbridge.submit(py("print('no files made')"), outputs=["result.json"])
    assert task.wait(timeout=30) == S.SUCCEEDED
    assert "no file matched" in (task.record().reason or "")
    res = run_cli("tasks", "list")
    assert f"{task.id} succeeded!" in " ".join(res.stdout.split()), res.stdout
    strict = hpcbridge.submit(py("print('no files made')"), outputs=["result.json"], require_outputs=True)
    assert strict.wait(timeout=30) == S.FAILED
    assert "outputs missing" in (strict.record().reason or "")
