"""Tests for the examples/heat2d.py demo workload.

The script is always run as a subprocess (``sys.executable``) on small grids,
exactly as a batch job would run it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "heat2d.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals required")


def run(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run heat2d.py in ``cwd`` and capture its output."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_result(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "result.json").read_text())


def read_field(out_dir: Path) -> list[list[float]]:
    lines = (out_dir / "field.csv").read_text().splitlines()
    return [[float(v) for v in line.split(",")] for line in lines]


def start_and_signal(cwd: Path, sig: int, args: Sequence[str]) -> subprocess.CompletedProcess:
    """Start a slowed-down run, wait for its first progress line, send ``sig``."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break  # EOF: process ended early
            lines.append(line)
            if line.startswith("step "):
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + out, err)


SMALL = ["--nx", "20", "--ny", "16", "--steps", "300", "--checkpoint-every", "50"]


# --------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------


def test_hot_edge_converges_to_laplace_solution(tmp_path: Path) -> None:
    """Hot top edge, cold other edges: heat spreads in, stays bounded, and the
    steady state has centre temperature t_hot/4 (superposition of the four
    edge problems, exact also for the symmetric discrete Laplacian)."""
    short = tmp_path / "short"
    long_ = tmp_path / "long"
    common = [
        "--nx",
        "17",
        "--ny",
        "17",
        "--t-hot",
        "100",
        "--t-cold",
        "0",
        "--checkpoint-every",
        "0",
    ]
    r1 = run(
        tmp_path,
        *common,
        "--steps",
        "40",
        "--out-dir",
        str(short),
        "--checkpoint-dir",
        str(tmp_path / "c1"),
    )
    r2 = run(
        tmp_path,
        *common,
        "--steps",
        "1500",
        "--out-dir",
        str(long_),
        "--checkpoint-dir",
        str(tmp_path / "c2"),
    )
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr

    res_s, res_l = read_result(short), read_result(long_)
    # Heat spreads inwards over time.
    assert 0 < res_s["mean_temperature"] < res_l["mean_temperature"]
    assert res_s["total_heat"] < res_l["total_heat"]

    for out in (short, long_):
        field = read_field(out)
        assert len(field) == 17 and all(len(r) == 17 for r in field)
        # Discrete maximum principle: bounded by boundary values.
        assert all(0.0 <= v <= 100.0 for row in field for v in row)
        assert field[0] == [100.0] * 17  # hot edge fixed
        assert all(v == 0.0 for v in field[-1])  # cold edges fixed
        assert all(row[0] == 0.0 and row[-1] == 0.0 for row in field[1:])
        # Temperature decreases monotonically away from the hot edge.
        centre_col = [row[8] for row in field]
        assert all(a > b for a, b in zip(centre_col[:-2], centre_col[1:-1], strict=True))
        # Left/right mirror symmetry.
        for row in field:
            assert row == pytest.approx(row[::-1], abs=1e-9)

    centre = read_field(long_)[8][8]
    assert centre == pytest.approx(25.0, abs=1e-3)
    assert res_l["max_temperature"] == 100.0


def test_hot_spot_diffuses_and_decays(tmp_path: Path) -> None:
    """Hot disc with cold boundaries: peak drops, heat leaks out, no overshoot."""
    results = []
    for steps in (0, 50, 400):
        out = tmp_path / f"s{steps}"
        r = run(
            tmp_path,
            "--init",
            "spot",
            "--nx",
            "21",
            "--ny",
            "21",
            "--steps",
            str(steps),
            "--t-hot",
            "10",
            "--out-dir",
            str(out),
            "--checkpoint-dir",
            str(tmp_path / f"c{steps}"),
        )
        assert r.returncode == 0, r.stderr
        field = read_field(out)
        assert all(0.0 <= v <= 10.0 for row in field for v in row)
        results.append(read_result(out))
    maxes = [r["max_temperature"] for r in results]
    heats = [r["total_heat"] for r in results]
    assert maxes[0] == 10.0
    assert maxes[0] > maxes[1] > maxes[2] > 0
    assert heats[0] > heats[1] > heats[2] > 0


def test_dt_respects_stability_limit(tmp_path: Path) -> None:
    r = run(tmp_path, "--nx", "11", "--ny", "21", "--steps", "5", "--alpha", "0.5")
    assert r.returncode == 0, r.stderr
    res = read_result(tmp_path)
    dx, dy, dt, alpha = res["dx"], res["dy"], res["dt"], res["alpha"]
    assert dt <= 1.0 / (2 * alpha * (1 / dx**2 + 1 / dy**2))
    assert res["final_step"] == 5 and res["nx"] == 11 and res["ny"] == 21


# --------------------------------------------------------------------------
# Checkpoint / restart / signals
# --------------------------------------------------------------------------


def test_sigterm_checkpoint_resume_is_bit_identical(tmp_path: Path) -> None:
    ref, run_dir = tmp_path / "ref", tmp_path / "interrupted"
    ref.mkdir()
    run_dir.mkdir()
    r = run(ref, *SMALL)
    assert r.returncode == 0, r.stderr
    assert read_result(ref)["resumes"] == 0

    killed = start_and_signal(run_dir, signal.SIGTERM, [*SMALL, "--sleep-per-step", "0.01"])
    assert killed.returncode == 143, (killed.stdout, killed.stderr)
    line = [ln for ln in killed.stdout.splitlines() if ln.startswith("checkpointed at step")]
    assert line and line[0].endswith("on signal SIGTERM"), killed.stdout
    stopped_at = int(line[0].split()[3])
    assert 50 <= stopped_at < 300
    assert not (run_dir / "result.json").exists()

    resumed = run(run_dir, *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from checkpoint at step {stopped_at}" in resumed.stdout

    assert (run_dir / "field.csv").read_bytes() == (ref / "field.csv").read_bytes()
    a, b = read_result(ref), read_result(run_dir)
    assert b["resumes"] == 1
    for key in ("final_step", "max_temperature", "mean_temperature", "total_heat", "field_sha256"):
        assert a[key] == b[key], key


@pytest.mark.parametrize(
    "sig,code", [(signal.SIGUSR1, 138), (signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_signal_writes_checkpoint_at_current_step(tmp_path: Path, sig: int, code: int) -> None:
    done = start_and_signal(tmp_path, sig, [*SMALL, "--sleep-per-step", "0.01"])
    assert done.returncode == code, (done.stdout, done.stderr)
    name = signal.Signals(sig).name
    msg = [ln for ln in done.stdout.splitlines() if ln.startswith("checkpointed at step")]
    assert msg and msg[0].endswith(f"on signal {name}")
    step = int(msg[0].split()[3])
    ckpt = json.loads((tmp_path / "checkpoints" / "heat2d.ckpt.json").read_text())
    assert ckpt["payload"]["step"] == step
    # No stray temp files left behind by the atomic write.
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp." in p.name]


def _make_checkpoint(cwd: Path) -> None:
    """Produce checkpoints by failing at step 120 (last checkpoint: 100)."""
    r = run(cwd, *SMALL, "--fail-at-step", "120")
    assert r.returncode == 3


@pytest.mark.parametrize("damage", ["garbage", "truncate", "tamper"])
def test_corrupt_checkpoint_is_ignored(tmp_path: Path, damage: str) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run(ref, *SMALL).returncode == 0

    work = tmp_path / "work"
    work.mkdir()
    _make_checkpoint(work)
    ckdir = work / "checkpoints"
    for name in ("heat2d.ckpt.json", "heat2d.ckpt.prev.json"):
        path = ckdir / name
        text = path.read_text()
        if damage == "garbage":
            path.write_bytes(b"\x00\xffnot json at all")
        elif damage == "truncate":
            path.write_text(text[: len(text) // 2])
        else:  # valid JSON, but a grid value changed -> checksum mismatch
            doc = json.loads(text)
            doc["payload"]["grid"][3][3] += 1.0
            path.write_text(json.dumps(doc))

    r = run(work, *SMALL)
    assert r.returncode == 0, r.stderr
    assert "resumed" not in r.stdout
    assert "warning: ignoring corrupt checkpoint" in r.stderr
    assert read_result(work)["resumes"] == 0
    assert (work / "field.csv").read_bytes() == (ref / "field.csv").read_bytes()


def test_falls_back_to_previous_checkpoint(tmp_path: Path) -> None:
    _make_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "heat2d.ckpt.json").write_text("{")
    r = run(tmp_path, *SMALL)
    assert r.returncode == 0, r.stderr
    assert "resumed from checkpoint at step 50" in r.stdout
    assert "warning: ignoring corrupt checkpoint" in r.stderr


def test_params_mismatch_starts_fresh(tmp_path: Path) -> None:
    _make_checkpoint(tmp_path)
    r = run(tmp_path, *SMALL, "--alpha", "0.2")
    assert r.returncode == 0, r.stderr
    assert "resumed" not in r.stdout
    assert "parameters differ" in r.stderr and "starting fresh" in r.stderr
    assert read_result(tmp_path)["resumes"] == 0


def test_fail_at_step_exits_3_then_resumes(tmp_path: Path) -> None:
    r = run(tmp_path, *SMALL, "--fail-at-step", "120")
    assert r.returncode == 3
    assert "injected failure at step 120" in r.stderr
    assert not (tmp_path / "result.json").exists()
    r2 = run(tmp_path, *SMALL)
    assert r2.returncode == 0, r2.stderr
    assert "resumed from checkpoint at step 100" in r2.stdout
    assert read_result(tmp_path)["final_step"] == 300


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------


def test_params_file_is_read_and_cli_wins(tmp_path: Path) -> None:
    params = {
        "nx": 12,
        "ny": 10,
        "steps": 30,
        "alpha": 0.3,
        "init": "spot",
        "t-hot": 5.0,
        "out_dir": "outputs",
    }
    (tmp_path / "params.json").write_text(json.dumps(params))
    r = run(tmp_path, "--params", "params.json", "--steps", "7")
    assert r.returncode == 0, r.stderr
    res = read_result(tmp_path / "outputs")
    assert (res["nx"], res["ny"], res["alpha"], res["init"], res["t_hot"]) == (
        12,
        10,
        0.3,
        "spot",
        5.0,
    )
    assert res["steps"] == 7 and res["final_step"] == 7  # CLI flag won
    assert len(read_field(tmp_path / "outputs")) == 10


@pytest.mark.parametrize(
    "content", ['{"nx": 10, "bogus": 1}', "[1, 2]", "{nope", '{"nx": "big"}', '{"nx": 2}']
)
def test_bad_params_file_exits_2(tmp_path: Path, content: str) -> None:
    (tmp_path / "p.json").write_text(content)
    r = run(tmp_path, "--params", "p.json")
    assert r.returncode == 2
    assert "error" in r.stderr


def test_missing_params_file_exits_2(tmp_path: Path) -> None:
    r = run(tmp_path, "--params", "does-not-exist.json")
    assert r.returncode == 2
