"""Shared helpers for the benchmark scripts: lab checks, timing, medians, tables, JSON output,
and cleanup of the Slurm jobs a benchmark created (by job id only: the lab is shared).

The scripts run as root on the lab host (like ``scripts/slurm-lab``); hpcbridge itself talks to
the lab over SSH as the lab user, exactly as it would talk to a real cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LAB_DIR = Path(os.environ.get("HPCBRIDGE_LAB_DIR", "/tmp/hpcbridge-lab"))
LAB_CONFIG = LAB_DIR / "hpcbridge.toml"
LAB_USER = "hpcblab"
LAB_HOST = "127.0.0.1"
LAB_PORT = int(os.environ.get("HPCBRIDGE_LAB_SSH_PORT", "2822"))
LAB_KEY = LAB_DIR / "ssh" / "id_ed25519"
LAB_KNOWN_HOSTS = LAB_DIR / "ssh" / "known_hosts"
LAB_HOME = Path("/home") / LAB_USER

if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------ lab checks
def die(msg: str) -> None:
    print(f"benchmark: {msg}", file=sys.stderr)
    raise SystemExit(2)


def check_lab() -> None:
    """Exit with a clear message unless the Slurm lab answers (slurmctld, sshd, config)."""
    if os.geteuid() != 0:
        die("run as root on the lab host (baselines run sbatch via runuser; cleanup uses scancel)")
    if not LAB_CONFIG.exists():
        die(f"{LAB_CONFIG} not found: start the lab with `scripts/slurm-lab up`")
    if shutil.which("sinfo") is None:
        die("Slurm client commands not found: start the lab with `scripts/slurm-lab up`")
    res = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        die(f"slurmctld does not answer ({res.stderr.strip()}): `scripts/slurm-lab status` / `up`")
    states = res.stdout.split()
    if not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        die(f"no usable Slurm node (states: {states}): `scripts/slurm-lab status`")
    try:
        with socket.create_connection((LAB_HOST, LAB_PORT), timeout=5):
            pass
    except OSError as exc:
        die(f"lab sshd not reachable on {LAB_HOST}:{LAB_PORT} ({exc}): `scripts/slurm-lab up`")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 600,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and res.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {res.returncode}: {res.stderr.strip()[:500]}")
    return res


def as_lab_user(script: str, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a bash script as the lab user on this host (the cluster's "login node")."""
    return run(["runuser", "-u", LAB_USER, "--", "bash", "-c", f"cd ~ && {script}"], timeout=timeout)


def ssh_argv(*remote: str) -> list[str]:
    """An OpenSSH client command for the lab sshd (the same key and known_hosts hpcbridge uses)."""
    return [
        "ssh", "-i", str(LAB_KEY), "-p", str(LAB_PORT),
        "-o", f"UserKnownHostsFile={LAB_KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
        f"{LAB_USER}@{LAB_HOST}", *remote,
    ]  # fmt: skip


def queue_load() -> dict[str, int]:
    """Jobs in the lab queue by state right now (everyone's): context for noisy numbers."""
    res = run(["squeue", "-h", "-o", "%T"], check=False)
    out: dict[str, int] = {}
    for s in res.stdout.split():
        out[s] = out.get(s, 0) + 1
    return out


def max_job_count() -> int:
    res = run(["scontrol", "show", "config"], check=False)
    m = re.search(r"^MaxJobCount\s*=\s*(\d+)", res.stdout, re.M)
    return int(m[1]) if m else 10000


# ------------------------------------------------------------------------------ job cleanup
def cancel_jobs(job_ids: Iterable[str]) -> None:
    """scancel exactly these job ids (as root), in chunks. Never by user: the lab is shared."""
    ids = sorted({str(j).split(";")[0].strip() for j in job_ids if j and str(j).strip()})
    for i in range(0, len(ids), 500):
        run(["scancel", *ids[i : i + 500]], check=False, timeout=120)


def wait_drained(job_ids: Iterable[str], timeout: float = 300) -> float:
    """Wait until none of these jobs is pending/running/completing; return seconds waited."""
    ids = {str(j).split(";")[0].strip() for j in job_ids if j}
    start = time.monotonic()
    if not ids:
        return 0.0
    while True:
        res = run(["squeue", "-h", "-t", "PD,R,CG,CF,S,RQ,SO", "-o", "%i"], check=False)
        live = ids & set(res.stdout.split())
        if not live:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            print(f"  warning: {len(live)} job(s) still in the queue after {timeout:.0f} s", file=sys.stderr)
            return time.monotonic() - start
        time.sleep(0.5)


def wait_for_room(n: int, max_jobs: int, timeout: float = 420) -> float:
    """Wait until slurmctld holds few enough job records for ``n`` more; seconds waited.

    A job that ended stays a record for MinJobAge (300 s on the lab; a cancelled array
    element becomes a record of its own), and sbatch over MaxJobCount is not refused but
    retried by sbatch itself for minutes ("Resource temporarily unavailable"): without
    this wait, back-to-back runs of 1,000 jobs time the controller's purge instead."""
    start = time.monotonic()
    while True:
        res = run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], check=False)
        held = len(res.stdout.split())
        if held + 2 * n <= max_jobs or time.monotonic() - start > timeout:
            waited = time.monotonic() - start
            if waited > 1:
                print(f"  (waited {waited:.0f} s for slurmctld to purge ended jobs: {held} records)", flush=True)
            return waited
        time.sleep(2)


def cleanup_jobs(job_ids: Sequence[str], settle: float = 1.0) -> None:
    cancel_jobs(job_ids)
    wait_drained(job_ids)
    time.sleep(settle)  # let slurmctld finish its bookkeeping before the next timed run


def remove_lab_dirs(paths: Iterable[str]) -> None:
    """Delete hpcbridge work dirs a benchmark created under the lab user's home."""
    base = str(LAB_HOME) + "/"
    targets = [p for p in paths if p and p.startswith(base) and ".." not in p]
    for i in range(0, len(targets), 500):
        run(["rm", "-rf", "--", *targets[i : i + 500]], check=False)


# ------------------------------------------------------------------------------ hpcbridge config
def bench_config(dest_dir: Path, **overrides: Any) -> Path:
    """A copy of the lab's hpcbridge.toml with extra ``[clusters.lab]`` keys (e.g. a large
    ``lost_grace_seconds`` or ``commands_per_minute`` so the politeness budget does not make
    a tight benchmark loop sleep)."""
    text = LAB_CONFIG.read_text()
    lines = text.splitlines()
    out: list[str] = []
    in_lab = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            in_lab = stripped == "[clusters.lab]"
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else None
        if in_lab and key in overrides:
            continue
        out.append(line)
        if stripped == "[clusters.lab]":
            for k, v in overrides.items():
                out.append(f"{k} = {json.dumps(v)}")
    path = dest_dir / "hpcbridge.toml"
    path.write_text("\n".join(out) + "\n")
    return path


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"hpcb-bench-{prefix}-"))


# ------------------------------------------------------------------------------ stats, output
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, local CPU seconds, result)."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        if x != x:  # nan
            return "-"
        return f"{x:.{digits}f}"
    return str(x)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "") -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(title)
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine_info() -> dict[str, Any]:
    def out(argv: list[str]) -> str:
        try:
            return run(argv, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else ""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "debian": debian,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "slurm": out(["slurmd", "-V"]),
        "openssh": (out(["ssh", "-V"]) or run(["ssh", "-V"], check=False).stderr.strip()),
    }


def write_json(name: str, data: dict[str, Any], path: str | None = None) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = Path(path) if path else RESULTS_DIR / f"{name}-{dt.date.today().isoformat()}.json"
    payload = {"benchmark": name, "machine": machine_info(), **data}
    target.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {target}")
    return target


def parse_ns(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]
