"""Watch modes (``--watch [SECS]``) and wait progress through the real CLI (click's CliRunner,
a registry in a tmp dir, the built-in local cluster); the terminal/non-terminal switch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import hpcbridge
from hpcbridge import cli_common
from hpcbridge.cli import cli
from hpcbridge.cli_common import CLEAR_SCREEN, watch_loop


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("HPCBRIDGE_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text('default_cluster = "local"\n')
    return tmp_path


def ctrl_c_after(monkeypatch, rounds: int) -> list[float]:
    """Make the watch's sleep raise KeyboardInterrupt (Ctrl-C) on its ``rounds``-th call."""
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) >= rounds:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_common.time, "sleep", sleep)
    return slept


def submit(*argv: str) -> str:
    res = CliRunner().invoke(cli, ["submit", *argv], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["tasks", "list"], ["tasks", "info", "last"], ["projects", "list"]])
def test_watch_prints_separated_plain_blocks_off_a_terminal_and_ctrl_c_exits_cleanly(env, monkeypatch, argv):
    tid = submit("--project", "demo", "--wait", "--", "true")
    slept = ctrl_c_after(monkeypatch, 3)
    res = CliRunner().invoke(cli, [*argv, "--watch"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "Traceback" not in res.output
    blocks = res.output.split("--- ")[1:]
    assert len(blocks) == 3 and slept == [2.0, 2.0, 2.0]  # --watch alone: every 2 s
    assert all(" ".join(argv[:2]) in b.splitlines()[0] for b in blocks)
    needle = "demo" if argv[0] == "projects" else tid
    assert all(needle in b for b in blocks)
    once = CliRunner().invoke(cli, argv, catch_exceptions=False).output
    assert once.strip() in blocks[0]  # each block is exactly what the command prints alone


def test_watch_redraws_in_place_on_a_terminal(env, monkeypatch):
    submit("--wait", "--", "true")
    ctrl_c_after(monkeypatch, 2)
    monkeypatch.setattr(cli_common, "is_terminal", lambda err=False: True)
    res = CliRunner().invoke(cli, ["tasks", "list", "--watch", "0.5"], catch_exceptions=False)
    assert res.exit_code == 0
    assert res.output.count(CLEAR_SCREEN) == 2 and res.output.startswith(CLEAR_SCREEN)
    assert "every 0.5s: " in res.output and "tasks list" in res.output and "--- " not in res.output


def test_watch_loop_stops_when_the_drawing_says_done() -> None:
    calls: list[int] = []

    def draw() -> bool:
        calls.append(1)
        return len(calls) == 3

    assert watch_loop(0.01, draw, terminal=False, sleep=lambda s: None) == 3
    assert watch_loop(0.01, lambda: None, terminal=False, sleep=lambda s: None, max_rounds=4) == 4


def test_watch_runs_no_scheduler_command(env, monkeypatch):
    """tasks list --watch reads only the registry: no sync, no backend is even opened."""
    submit("--", "sleep", "30")
    opened = []
    from hpcbridge.runtime import Runtime

    real = Runtime.backend
    monkeypatch.setattr(Runtime, "backend", lambda self, c: opened.append(c) or real(self, c))
    ctrl_c_after(monkeypatch, 3)
    for argv in (["tasks", "list"], ["tasks", "info", "last"], ["projects", "list"]):
        assert CliRunner().invoke(cli, [*argv, "-w", "0.1"], catch_exceptions=False).exit_code == 0
    assert opened == []
    CliRunner().invoke(cli, ["tasks", "kill", "last"], catch_exceptions=False)


def test_wait_on_several_tasks_off_a_terminal_prints_one_line_per_change(env):
    a, b = submit("--", "true"), submit("--", "false")
    res = CliRunner().invoke(cli, ["tasks", "wait", a, b])
    lines = res.stderr.splitlines()
    assert "\r" not in res.stderr and "[" not in res.stderr.split("last lines")[0]
    changes = [ln for ln in lines if ln[:2].isdigit()]
    assert any(f" {a} succeeded" in ln for ln in changes) and any(f" {b} failed" in ln for ln in changes)
    assert all(ln[2] == ":" and ln[5] == ":" and ln[8] == " " for ln in changes)  # HH:MM:SS id state


def test_wait_on_several_tasks_on_a_terminal_draws_a_bar(env, monkeypatch):
    import hpcbridge.cli_task_actions as ct  # where `tasks wait` lives

    a, b = submit("--", "true"), submit("--", "true")
    monkeypatch.setattr(ct, "is_terminal", lambda err=False: True)
    res = CliRunner().invoke(cli, ["tasks", "wait", a, b])
    assert res.exit_code == 0, res.stderr
    assert "\r[" in res.stderr and "2/2 done  2 succeeded  done" in res.stderr
    assert f"{a} succeeded" in res.stdout  # the result lines on stdout are unchanged


def test_projects_wait_on_a_terminal_draws_a_bar_and_off_it_prints_counts(env, monkeypatch):
    import hpcbridge.cli_projects as cp

    submit("--project", "sw", "--", "true")
    submit("--project", "sw", "--", "true")
    plain = CliRunner().invoke(cli, ["projects", "wait", "sw"])
    assert plain.exit_code == 0 and "sw: 2 succeeded" in plain.stderr and "\r" not in plain.stderr
    monkeypatch.setattr(cp, "is_terminal", lambda err=False: True)
    bar = CliRunner().invoke(cli, ["projects", "wait", "sw"])
    assert "\rsw [" in bar.stderr and "2/2 done" in bar.stderr
    assert bar.stdout == plain.stdout


def test_top_without_textual_is_one_error_line_with_the_install_hint(env, monkeypatch):
    monkeypatch.delitem(sys.modules, "hpcbridge.tui", raising=False)
    monkeypatch.delattr(hpcbridge, "tui", raising=False)
    for name in [m for m in sys.modules if m.split(".")[0] == "textual"] + ["textual"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    res = CliRunner().invoke(cli, ["top"])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["error: hpcbridge top needs the optional package textual, which is not installed",
                                       "hint: pip install 'hpcbridge[tui]'"]  # fmt: skip


def test_top_off_a_terminal_says_so(env):
    pytest.importorskip("textual")
    res = CliRunner().invoke(cli, ["top"])
    assert res.exit_code == 1 and res.stderr.startswith("error: hpcbridge top needs a terminal")


def test_no_other_command_imports_textual_or_rich(env):
    code = ("import sys; from click.testing import CliRunner; from hpcbridge.cli import cli; "
            "r = CliRunner().invoke(cli, ['tasks', 'list', '--usage']); "
            "CliRunner().invoke(cli, ['projects', 'list']); "
            "print(r.exit_code, sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "[]"], out


def test_a_long_transfer_shows_bytes_and_rate_and_a_short_one_nothing(capsys) -> None:
    from hpcbridge.cli_common import transfer_printer

    now = [0.0]
    observe = transfer_printer(lambda: now[0], shown_after=1.0, redraw=0.2)
    observe("upload", "small.dat", 0, 100)
    observe("upload", "small.dat", 100, 100)  # done within a second: no line
    assert capsys.readouterr().err == ""
    mib = 2**20
    for i in range(0, 41):
        now[0] = 10.0 + i * 0.1
        observe("upload", "big.dat", i * mib, 40 * mib)
    err = capsys.readouterr().err
    assert err.endswith("\rupload big.dat  40.0 MiB of 40.0 MiB (100%)  10.0 MiB/s\x1b[K\n")
    assert 5 <= err.count("\r") <= 20  # redrawn in place, at most every 0.2 s
    assert "\n" not in err[:-1]  # one line, left on screen when done


def test_transfers_are_reported_only_where_someone_watches() -> None:
    from hpcbridge.transfers import observe_transfers, transfer_callback

    assert transfer_callback("upload", "x") is None
    seen: list[tuple] = []
    with observe_transfers(lambda *a: seen.append(a)):
        cb = transfer_callback("download", "out.h5")
        assert cb is not None
        cb(5, 10)
        with observe_transfers(None):
            assert transfer_callback("upload", "y") is None
    assert seen == [("download", "out.h5", 5, 10)] and transfer_callback("upload", "x") is None
