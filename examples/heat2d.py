#!/usr/bin/env python3
"""Small 2-D heat equation solver used as the hpcbridge demo workload.

Solves ``dT/dt = alpha * (d2T/dx2 + d2T/dy2)`` on the unit square with
Dirichlet boundaries, using explicit (forward Euler) time stepping and the
standard 5-point finite-difference Laplacian.  Pure Python standard library
only, so it runs with any ``/usr/bin/python3`` >= 3.9 on a bare cluster node.

Features that make it a useful batch-system test job:

* periodic, atomic, validated checkpoints and automatic resume;
* SIGTERM / SIGUSR1 / SIGINT write a checkpoint and exit with ``128 + signum``
  (Slurm sends SIGTERM on preemption/time limit, and ``--signal=B:USR1@60``
  can warn a job before its limit);
* ``--sleep-per-step`` to make runs long without burning CPU, and
  ``--fail-at-step`` to simulate a crash (exit code 3);
* bit-for-bit deterministic: an interrupted-and-resumed run produces exactly
  the same ``field.csv`` as an uninterrupted one.

Exit codes: 0 success, 2 bad arguments/params file, 3 ``--fail-at-step``,
128 + signal number when stopped by a signal (143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

Grid = list[list[float]]

CHECKPOINT_FORMAT = "heat2d-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "heat2d.ckpt.json"
CHECKPOINT_PREV_NAME = "heat2d.ckpt.prev.json"

#: Fraction of the explicit stability limit actually used for dt.
SAFETY = 0.9

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INJECTED_FAILURE = 3

#: Defaults for every option.  A default run (64x64, 4000 steps) takes roughly
#: 2-3 s of CPU with CPython 3.11 on a typical x86 core.
DEFAULTS: dict[str, Any] = {
    "nx": 64,
    "ny": 64,
    "steps": 4000,
    "alpha": 0.1,
    "init": "edge",
    "t_hot": 100.0,
    "t_cold": 0.0,
    "checkpoint_every": 200,
    "checkpoint_dir": "checkpoints",
    "out_dir": ".",
    "sleep_per_step": 0.0,
    "fail_at_step": None,
}

#: Parameters that determine the numerical result.  A checkpoint is only
#: resumed if all of these match the current run exactly.
PHYSICS_KEYS = ("nx", "ny", "alpha", "init", "t_hot", "t_cold", "dt")

INT_KEYS = {"nx", "ny", "steps", "checkpoint_every", "fail_at_step"}
FLOAT_KEYS = {"alpha", "t_hot", "t_cold", "sleep_per_step"}
STR_KEYS = {"init", "checkpoint_dir", "out_dir"}
INIT_CHOICES = ("edge", "spot")


class UsageError(Exception):
    """Invalid command-line option or params file."""


def warn(msg: str) -> None:
    """Print a warning to stderr (unbuffered for batch logs)."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser.  Every default is None so we can tell which
    options were given explicitly (CLI > params file > built-in default)."""
    p = argparse.ArgumentParser(
        description="Explicit 2-D heat equation solver (pure Python) with "
        "checkpoint/restart, for batch-system demos.",
    )
    p.add_argument("--nx", type=int, help="grid points in x (default 64)")
    p.add_argument("--ny", type=int, help="grid points in y (default 64)")
    p.add_argument("--steps", type=int, help="time steps (default 4000)")
    p.add_argument("--alpha", type=float, help="diffusivity (default 0.1)")
    p.add_argument(
        "--init",
        choices=INIT_CHOICES,
        help="'edge': hot top edge, cold other edges; 'spot': "
        "cold edges, hot disc in the middle (default edge)",
    )
    p.add_argument("--t-hot", type=float, help="hot temperature (default 100)")
    p.add_argument("--t-cold", type=float, help="cold temperature (default 0)")
    p.add_argument(
        "--params",
        metavar="FILE.json",
        help="JSON object setting any of the options above "
        "(keys like 'nx' or 't_hot'); command-line flags win",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="checkpoint every N steps, 0 = only on signal/end (default 200)",
    )
    p.add_argument(
        "--checkpoint-dir", metavar="DIR", help="checkpoint directory (default ./checkpoints)"
    )
    p.add_argument(
        "--out-dir", metavar="DIR", help="where result.json and field.csv go (default .)"
    )
    p.add_argument(
        "--sleep-per-step",
        type=float,
        metavar="SECONDS",
        help="sleep after each step to stretch the run (default 0)",
    )
    p.add_argument(
        "--fail-at-step", type=int, metavar="N", help="exit with code 3 when step N is reached"
    )
    return p


def load_params_file(path: str) -> dict[str, Any]:
    """Read a JSON params file and return its (normalised) settings."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read params file {path!r}: {exc}") from exc
    except ValueError as exc:
        raise UsageError(f"params file {path!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"params file {path!r} must contain a JSON object")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in DEFAULTS:
            raise UsageError(f"params file {path!r}: unknown key {raw_key!r}")
        out[key] = value
    return out


def resolve_params(argv: Sequence[str] | None) -> dict[str, Any]:
    """Merge defaults, params file and command line; validate the result."""
    args = build_parser().parse_args(argv)
    params: dict[str, Any] = dict(DEFAULTS)
    if args.params:
        params.update(load_params_file(args.params))
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            params[key] = value

    # Type coercion/validation (params-file values are untrusted JSON).
    for key in INT_KEYS:
        v = params[key]
        if v is None and key == "fail_at_step":
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise UsageError(f"{key} must be an integer, got {v!r}")
        params[key] = v
    for key in FLOAT_KEYS:
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"{key} must be a number, got {v!r}")
        params[key] = float(v)
        if not math.isfinite(params[key]):
            raise UsageError(f"{key} must be finite")
    for key in STR_KEYS:
        if not isinstance(params[key], str) or not params[key]:
            raise UsageError(f"{key} must be a non-empty string")

    if params["nx"] < 3 or params["ny"] < 3:
        raise UsageError("nx and ny must be >= 3")
    if params["steps"] < 0:
        raise UsageError("steps must be >= 0")
    if params["alpha"] <= 0:
        raise UsageError("alpha must be > 0")
    if params["init"] not in INIT_CHOICES:
        raise UsageError(f"init must be one of {INIT_CHOICES}")
    if params["t_hot"] < params["t_cold"]:
        raise UsageError("t_hot must be >= t_cold")
    if params["checkpoint_every"] < 0:
        raise UsageError("checkpoint_every must be >= 0")
    if params["sleep_per_step"] < 0:
        raise UsageError("sleep_per_step must be >= 0")

    # Grid spacing on the unit square and the automatically chosen time step.
    params["dx"] = 1.0 / (params["nx"] - 1)
    params["dy"] = 1.0 / (params["ny"] - 1)
    params["dt"] = stable_dt(params["alpha"], params["dx"], params["dy"])
    return params


# --------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------


def stable_dt(alpha: float, dx: float, dy: float) -> float:
    """Largest safe time step for forward Euler + 5-point Laplacian.

    Von Neumann analysis gives the stability limit
    ``dt <= 1 / (2 * alpha * (1/dx**2 + 1/dy**2))``, i.e. ``dx**2 / (4 alpha)``
    for dx == dy.  We use ``SAFETY`` (0.9) times that limit, which also keeps
    every update a convex combination of neighbours (discrete maximum
    principle: temperatures stay within [t_cold, t_hot]).
    """
    return SAFETY / (2.0 * alpha * (1.0 / (dx * dx) + 1.0 / (dy * dy)))


def initial_grid(params: dict[str, Any]) -> Grid:
    """Initial temperature field; row 0 is the top edge (y = 1).

    * ``edge``: everything at t_cold except the top row (boundary) at t_hot.
    * ``spot``: all boundaries at t_cold; a disc of radius 0.15 around the
      centre starts at t_hot and diffuses out through the cold edges.
    """
    nx, ny = params["nx"], params["ny"]
    hot, cold = params["t_hot"], params["t_cold"]
    grid = [[cold] * nx for _ in range(ny)]
    if params["init"] == "edge":
        grid[0] = [hot] * nx
    else:
        r2 = 0.15 * 0.15
        for i in range(1, ny - 1):
            y = i * params["dy"]
            for j in range(1, nx - 1):
                x = j * params["dx"]
                if (x - 0.5) ** 2 + (y - 0.5) ** 2 <= r2:
                    grid[i][j] = hot
    return grid


def step_grid(u: Grid, rx: float, ry: float) -> Grid:
    """Advance one explicit step; boundary rows/columns are kept fixed.

    ``T_new[i][j] = T + rx*(T[j-1] + T[j+1] - 2T) + ry*(T[i-1] + T[i+1] - 2T)``
    with ``rx = alpha*dt/dx**2`` and ``ry = alpha*dt/dy**2``, rearranged as
    ``k0*T + rx*(left+right) + ry*(up+down)``.  Rows are processed with
    ``zip`` over shifted slices, which is the fastest pure-Python form.
    The operation order is fixed, so results are bit-reproducible.
    """
    k0 = 1.0 - 2.0 * rx - 2.0 * ry
    new: Grid = [u[0]]  # Dirichlet: boundary rows never change (shared, never mutated)
    for i in range(1, len(u) - 1):
        up, row, down = u[i - 1], u[i], u[i + 1]
        inner = [
            k0 * c + rx * (left + right) + ry * (a + b)
            # zip(strict=...) needs Python 3.10; all slices have length nx-2.
            for a, b, left, right, c in zip(  # noqa: B905
                up[1:-1], down[1:-1], row[:-2], row[2:], row[1:-1]
            )
        ]
        new.append([row[0]] + inner + [row[-1]])
    new.append(u[-1])
    return new


def field_stats(u: Grid, dx: float, dy: float) -> tuple[float, float, float]:
    """Return (max, mean, total heat) where total heat = sum(T) * dx * dy."""
    total = 0.0
    tmax = -math.inf
    for row in u:
        total += math.fsum(row)
        m = max(row)
        if m > tmax:
            tmax = m
    n = len(u) * len(u[0])
    return tmax, total / n, total * dx * dy


# --------------------------------------------------------------------------
# Files: atomic writes, checkpoints
# --------------------------------------------------------------------------


def atomic_write(path: str, data: str) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable (best effort; not all FS allow it)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _canonical(obj: Any) -> str:
    """Canonical JSON used for checksums (floats round-trip exactly)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def physics_params(params: dict[str, Any]) -> dict[str, Any]:
    """The subset of parameters a checkpoint must match to be resumable."""
    return {k: params[k] for k in PHYSICS_KEYS}


def write_checkpoint(
    ckpt_dir: str, step: int, grid: Grid, params: dict[str, Any], resumes: int, wall_time: float
) -> None:
    """Atomically write a checkpoint, keeping the previous one as a fallback."""
    payload = {
        "step": step,
        "params": physics_params(params),
        "resumes": resumes,
        "wall_time_s": wall_time,
        "grid": grid,
    }
    doc = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "sha256": hashlib.sha256(_canonical(payload).encode()).hexdigest(),
        "payload": payload,
    }
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    current = os.path.join(ckpt_dir, CHECKPOINT_NAME)
    os.makedirs(ckpt_dir, exist_ok=True)
    if os.path.exists(current):
        # Keep the last good checkpoint in case the new one gets damaged.
        os.replace(current, os.path.join(ckpt_dir, CHECKPOINT_PREV_NAME))
    atomic_write(current, text)


def _validate_checkpoint(path: str, params: dict[str, Any]) -> dict[str, Any]:
    """Load and validate one checkpoint file; raise ValueError if unusable.

    Raises ``_ParamsMismatch`` (a ValueError) when the file is intact but was
    written for different physics parameters.
    """
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)  # ValueError on corrupt/truncated JSON
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not a heat2d checkpoint")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"unsupported checkpoint version {doc.get('version')!r}")
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        raise ValueError("missing payload")
    digest = hashlib.sha256(_canonical(payload).encode()).hexdigest()
    if digest != doc.get("sha256"):
        raise ValueError("checksum mismatch")
    step = payload.get("step")
    grid = payload.get("grid")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError("bad step")
    want = physics_params(params)
    if payload.get("params") != want:
        raise _ParamsMismatch(f"parameters differ (checkpoint {payload.get('params')}, run {want})")
    if step > params["steps"]:
        raise _ParamsMismatch(f"checkpoint step {step} is beyond requested steps {params['steps']}")
    if (
        not isinstance(grid, list)
        or len(grid) != params["ny"]
        or any(not isinstance(r, list) or len(r) != params["nx"] for r in grid)
    ):
        raise ValueError("grid has wrong shape")
    for row in grid:
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError("grid contains a non-numeric value")
    payload["grid"] = [[float(v) for v in row] for row in grid]
    return payload


class _ParamsMismatch(ValueError):
    """Checkpoint is intact but belongs to a different parameter set."""


def load_latest_checkpoint(ckpt_dir: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Return the newest valid checkpoint payload, or None to start fresh.

    Tries the current checkpoint, then the previous one.  Corrupt files and
    parameter mismatches are reported as warnings and skipped.
    """
    for name in (CHECKPOINT_NAME, CHECKPOINT_PREV_NAME):
        path = os.path.join(ckpt_dir, name)
        if not os.path.exists(path):
            continue
        try:
            return _validate_checkpoint(path, params)
        except _ParamsMismatch as exc:
            warn(f"ignoring checkpoint {path}: {exc}; starting fresh")
            return None  # an older file cannot match better than the newest
        except (OSError, ValueError) as exc:
            warn(f"ignoring corrupt checkpoint {path}: {exc}")
    return None


def write_results(out_dir: str, grid: Grid, result: dict[str, Any]) -> None:
    """Write field.csv (one grid row per line, exact float repr) and result.json."""
    csv_text = "".join(",".join(repr(v) for v in row) + "\n" for row in grid)
    result["field_sha256"] = hashlib.sha256(csv_text.encode()).hexdigest()
    atomic_write(os.path.join(out_dir, "field.csv"), csv_text)
    atomic_write(
        os.path.join(out_dir, "result.json"), json.dumps(result, indent=2, sort_keys=True) + "\n"
    )


# --------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------

_pending_signal: int | None = None


def _on_signal(signum: int, _frame: Any) -> None:
    """Record the signal; the main loop checkpoints at a consistent point."""
    global _pending_signal
    if _pending_signal is None:
        _pending_signal = signum


def install_signal_handlers() -> None:
    """Catch SIGTERM, SIGUSR1 (where available) and SIGINT."""
    for name in ("SIGTERM", "SIGUSR1", "SIGINT"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, _on_signal)


def interruptible_sleep(seconds: float) -> None:
    """Sleep in short slices so a pending signal is handled promptly.

    (time.sleep is transparently restarted after a Python signal handler
    returns, so one long sleep would delay the checkpoint.)
    """
    deadline = time.monotonic() + seconds
    while _pending_signal is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, 0.05))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def run(params: dict[str, Any]) -> int:
    """Run (or resume) the simulation; return the process exit code."""
    t_start = time.monotonic()
    nx, ny, steps = params["nx"], params["ny"], params["steps"]
    dx, dy, dt, alpha = params["dx"], params["dy"], params["dt"], params["alpha"]
    rx, ry = alpha * dt / (dx * dx), alpha * dt / (dy * dy)
    ckpt_dir = params["checkpoint_dir"]
    every = params["checkpoint_every"]

    print(
        f"heat2d: nx={nx} ny={ny} steps={steps} alpha={alpha} "
        f"init={params['init']} dt={dt:.6g} (limit {dt / SAFETY:.6g}) "
        f"rx={rx:.4g} ry={ry:.4g}",
        flush=True,
    )

    ckpt = load_latest_checkpoint(ckpt_dir, params)
    if ckpt is not None:
        step: int = ckpt["step"]
        grid = ckpt["grid"]
        resumes = int(ckpt.get("resumes", 0)) + 1
        prior_wall = float(ckpt.get("wall_time_s", 0.0))
        print(f"resumed from checkpoint at step {step}", flush=True)
    else:
        step, grid, resumes, prior_wall = 0, initial_grid(params), 0, 0.0

    def elapsed() -> float:
        return time.monotonic() - t_start

    def checkpoint() -> None:
        write_checkpoint(ckpt_dir, step, grid, params, resumes, prior_wall + elapsed())

    sleep = params["sleep_per_step"]
    fail_at = params["fail_at_step"]
    while step < steps:
        if _pending_signal is not None:
            break
        grid = step_grid(grid, rx, ry)
        step += 1
        if fail_at is not None and step == fail_at:
            print(
                f"error: injected failure at step {step} (--fail-at-step)",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_INJECTED_FAILURE
        if every and step % every == 0:
            checkpoint()
            tmax, tmean, _ = field_stats(grid, dx, dy)
            print(
                f"step {step}/{steps} max_T={tmax:.6g} mean_T={tmean:.6g} elapsed={elapsed():.2f}s",
                flush=True,
            )
        if sleep:
            interruptible_sleep(sleep)

    if _pending_signal is not None and step < steps:
        checkpoint()
        name = signal.Signals(_pending_signal).name
        print(f"checkpointed at step {step} on signal {name}", flush=True)
        return 128 + _pending_signal

    # Final checkpoint: re-running a finished job just rewrites the results.
    checkpoint()
    tmax, tmean, heat = field_stats(grid, dx, dy)
    wall = elapsed()
    result = {
        "final_step": step,
        "steps": steps,
        "nx": nx,
        "ny": ny,
        "alpha": alpha,
        "init": params["init"],
        "t_hot": params["t_hot"],
        "t_cold": params["t_cold"],
        "dx": dx,
        "dy": dy,
        "dt": dt,
        "sim_time": step * dt,
        "max_temperature": tmax,
        "mean_temperature": tmean,
        "total_heat": heat,
        "resumes": resumes,
        "wall_time_s": wall,
        "total_wall_time_s": prior_wall + wall,
    }
    write_results(params["out_dir"], grid, result)
    print(
        f"done: step {step} max_T={tmax:.6g} mean_T={tmean:.6g} "
        f"total_heat={heat:.6g} resumes={resumes} wall={wall:.2f}s",
        flush=True,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse parameters, install signal handlers, run."""
    install_signal_handlers()
    try:
        params = resolve_params(argv)
    except UsageError as exc:
        print(f"heat2d: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return run(params)


if __name__ == "__main__":
    sys.exit(main())
