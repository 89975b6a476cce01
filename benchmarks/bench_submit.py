#!/usr/bin/env python3
"""Submit throughput: hpcbridge ``submit_many`` over SSH against the physical limit (a raw
``sbatch`` loop on the lab host), one ``ssh`` process per ``sbatch``, and the PyPI peers
hpc-rocket and pysqa (each in its own virtualenv, see ``peers/setup.sh``).

    python benchmarks/bench_submit.py                  # N = 50, 200; 3 repeats
    python benchmarks/bench_submit.py --full           # N = 50, 200, 1000
    python benchmarks/bench_submit.py --ns 50 --repeats 5 --contenders raw,hpcbridge

Every run's jobs are cancelled by job id afterwards and the benchmark waits until they have
left the queue before the next timed run (the lab is shared: never by user).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

RAW_SBATCH = "sbatch --parsable --output=/dev/null --wrap true"
HPCROCKET_PY = Path("/tmp/bench-hpcrocket/bin/python")
HPCROCKET_CLI = Path("/tmp/bench-hpcrocket/bin/hpc-rocket")
PYSQA_PY = Path("/tmp/bench-pysqa/bin/python")
SUBMITIT_PY = Path("/tmp/bench-submitit/bin/python")
PEERS = C.BENCH_DIR / "peers"

# contender -> (label, is a peer / slow one, max N it runs at by default)
CONTENDERS: dict[str, tuple[str, int]] = {
    "raw": ("(a) raw sbatch loop on the lab host", 10**9),
    "hpcbridge": ("(c) hpcbridge submit_many over SSH (job arrays), limits read by this call", 10**9),
    "hpcbridge-warm": ("(c) hpcbridge submit_many over SSH (job arrays), limits cached (read < 1 h ago)", 10**9),
    "hpcbridge-single": ("(c') hpcbridge submit_many over SSH, arrays = false", 10**9),
    "ssh-per-job": ("(b) one OpenSSH ssh process per sbatch", 200),
    "pysqa-raw-continuous": ("(d) pysqa 1.1.1 remote, continuous connection, raw sbatch", 50),
    "pysqa-raw-percall": ("(d) pysqa 1.1.1 remote, connection per call, raw sbatch", 50),
    "pysqa-remote-submit": ("(d) pysqa 1.1.1 remote, `python -m pysqa --submit` on the cluster", 50),
    "hpc-rocket-lib": ("(d) hpc-rocket 0.6.3 as a library, one connection", 50),
    "submitit-array": ("(e) submitit 1.5.4 map_array on the lab host (local sbatch, one job array)", 10**9),
    "hpc-rocket-cli": ("(d) hpc-rocket 0.6.3 CLI, `hpc-rocket launch` per job (via 127.0.0.2:22 relay)", 50),
}


def _job_ids(text: str) -> list[str]:
    return [line.split(";")[0].strip() for line in text.split() if line.strip().split(";")[0].isdigit()]


# ------------------------------------------------------------------------------ contenders
def run_raw(n: int) -> dict[str, Any]:
    script = f"for i in $(seq 1 {n}); do {RAW_SBATCH} || echo FAIL >&2; done"
    argv = ["runuser", "-u", C.LAB_USER, "--", "bash", "-c", f"cd ~ && {script}"]
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "job_ids": _job_ids(res.stdout), "errors": res.stderr.count("FAIL")}


def run_ssh_per_job(n: int) -> dict[str, Any]:
    ids: list[str] = []
    errors = 0
    argv = C.ssh_argv(*RAW_SBATCH.split())
    t0 = time.perf_counter()
    for _ in range(n):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        got = _job_ids(res.stdout)
        ids.extend(got)
        errors += not got
    return {"seconds": time.perf_counter() - t0, "job_ids": ids, "errors": errors}


def run_hpcbridge(n: int, *, profile: str | None = None, arrays: bool = True, warm: bool = False) -> dict[str, Any]:
    """``warm``: the cluster's limits are in the runtime's cache already (as after any other
    submission of the last hour: they are read once and kept for an hour); without, this
    submission reads them (MaxArraySize, MaxSubmitJobs: one script, two sacctmgr queries)."""
    from hpcbridge.service import Service

    tmp = C.tempdir("submit")
    cfg = C.bench_config(tmp, commands_per_minute=100000, arrays=arrays)
    if warm:  # another process of the same user, earlier: its own connection, closed
        first = Service.open(cfg, tmp / "registry.db", source="bench")
        first.runtime.cluster_limits("lab")
        first.close()
    svc = Service.open(cfg, tmp / "registry.db", source="bench")  # migrations outside the timed part
    # Module imports (paramiko's most of all, 0.2-0.3 s here) are process start-up, paid once
    # per process like the interpreter's own, which no contender's clock includes either.
    # Connecting, the cluster's limits (unless ``warm``) and everything else are inside.
    import hpcbridge.backends.slurm  # noqa: F401
    import hpcbridge.transport.ssh  # noqa: F401

    specs = [{"command": ["true"], "name": f"b{i}"} for i in range(n)]
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    c0, t0 = time.process_time(), time.perf_counter()
    tasks = svc.submit_many(specs)
    # The clock stops once every attempt has its job id in the registry (a count here; the
    # ids are read below, outside the clock).
    recorded = svc.registry.conn.execute("SELECT COUNT(*) FROM attempts WHERE job_id IS NOT NULL").fetchone()[0]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    attempts = svc.registry.current_attempts([t.id for t in tasks])
    ids = [a.job_id for a in attempts.values() if a.job_id]
    assert recorded == len(ids), (recorded, len(ids))
    backend = svc.backend("lab")
    # (TransportStats.as_dict() raises "cannot pickle '_thread.lock'": dataclasses.asdict
    # deep-copies its _lock field; read the counters directly.)
    st = backend.transport.stats  # type: ignore[attr-defined]
    stats = {k: getattr(st, k) for k in ("round_trips", "connects", "sftp_ops")}
    array_dirs = sorted({backend.array_dir(a.backend_ref["array"])  # type: ignore[attr-defined]
                         for a in attempts.values() if a.backend_ref.get("array")})  # fmt: skip
    work_dirs = [svc.get(t.id).work_dir or "" for t in tasks] + array_dirs
    svc.close()
    return {
        "seconds": elapsed, "local_cpu_s": cpu, "job_ids": ids, "errors": n - len(ids),
        "round_trips": stats["round_trips"], "connects": stats["connects"],
        "sftp_ops": stats["sftp_ops"], "scheduler_commands": backend.commands,
        # one sbatch per array (ids <array>_<index>) and one per single job
        "sbatch_calls": len({j.split("_")[0] for j in ids}),
        "_work_dirs": work_dirs,
    }  # fmt: skip


def _peer(argv: list[str]) -> dict[str, Any]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd="/tmp")
    if res.returncode != 0:
        raise RuntimeError(f"peer failed: {res.stderr.strip()[-800:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    data["errors"] = 0
    return data


def run_pysqa(mode: str, conn: str) -> Callable[[int], dict[str, Any]]:
    def go(n: int) -> dict[str, Any]:
        return _peer([str(PYSQA_PY), str(PEERS / "pysqa_driver.py"), str(n),
                      f"/tmp/bench-pysqa-config-{conn}", mode])  # fmt: skip

    return go


def run_submitit(n: int) -> dict[str, Any]:
    folder = f"/tmp/bench-submitit-work-{os.getpid()}-{n}"
    try:
        out = _peer(["runuser", "-u", C.LAB_USER, "--", str(SUBMITIT_PY), str(PEERS / "submitit_driver.py"),
                     str(n), folder])  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", "--", folder], check=False)
    # submitit names elements <array>_<i>; count ids like the raw loop does (one per task)
    return out


def run_hpcrocket_lib(n: int) -> dict[str, Any]:
    return _peer([str(HPCROCKET_PY), str(PEERS / "hpcrocket_driver.py"), str(n), str(C.LAB_PORT),
                  str(C.LAB_KEY), "bench-true.sh"])  # fmt: skip


@contextlib.contextmanager
def relay_port22() -> Iterator[None]:
    """hpc-rocket's CLI always dials port 22: relay 127.0.0.2:22 to the lab sshd meanwhile."""
    proc = subprocess.Popen(
        ["socat", "TCP-LISTEN:22,bind=127.0.0.2,fork,reuseaddr", f"TCP:127.0.0.1:{C.LAB_PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError("socat relay 127.0.0.2:22 could not start (port 22 taken?)")
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # our own socat and its forked children only
        proc.wait(timeout=10)


def run_hpcrocket_cli(n: int) -> dict[str, Any]:
    ids: list[str] = []
    errors = 0
    jobid_file = Path("/tmp/bench-hpcrocket/jobid")
    with relay_port22():
        t0 = time.perf_counter()
        for _ in range(n):
            res = subprocess.run([str(HPCROCKET_CLI), "launch", "--save-jobid", str(jobid_file),
                                  "/tmp/bench-hpcrocket/rocket.yml"],
                                 capture_output=True, text=True, timeout=120, cwd="/tmp")  # fmt: skip
            got = jobid_file.read_text().strip() if res.returncode == 0 and jobid_file.exists() else ""
            if got.isdigit():
                ids.append(got)
            else:
                errors += 1
            jobid_file.unlink(missing_ok=True)
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "job_ids": ids, "errors": errors}


RUNNERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "raw": run_raw,
    "hpcbridge": run_hpcbridge,
    "hpcbridge-warm": run_hpcbridge,
    "ssh-per-job": run_ssh_per_job,
    "pysqa-raw-continuous": run_pysqa("raw", "continuous"),
    "pysqa-raw-percall": run_pysqa("raw", "percall"),
    "pysqa-remote-submit": run_pysqa("remote", "continuous"),
    "hpc-rocket-lib": run_hpcrocket_lib,
    "hpc-rocket-cli": run_hpcrocket_cli,
    "submitit-array": run_submitit,
}


def peers_ready() -> str | None:
    missing = [str(p) for p in (HPCROCKET_PY, HPCROCKET_CLI, PYSQA_PY) if not p.exists()]
    if missing:
        return f"peer virtualenvs missing ({', '.join(missing)}): run benchmarks/peers/setup.sh"
    return None


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default=None, help="comma-separated N values (default 50,200; 1000 with --full)")
    ap.add_argument("--full", action="store_true", help="also N=1000")
    ap.add_argument("--repeats", "-r", type=int, default=3, help="timed runs per (contender, N)")
    ap.add_argument("--repeats-large", type=int, default=1,
                    help="timed runs at N >= 1000 (default 1: the lab is shared)")  # fmt: skip
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset")
    ap.add_argument("--peer-max-n", type=int, default=None,
                    help="largest N for the slow contenders (default: ssh-per-job 200, peers 50)")  # fmt: skip
    ap.add_argument("--profile", help="cProfile the largest hpcbridge run into this file")
    ap.add_argument("--json", dest="json_path", help="JSON output path (default results/submit-DATE.json)")
    args = ap.parse_args()

    C.check_lab()
    ns = C.parse_ns(args.ns) if args.ns else ([50, 200, 1000] if args.full else [50, 200])
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    for c in chosen:
        if c not in CONTENDERS:
            C.die(f"unknown contender {c!r}; known: {', '.join(CONTENDERS)}")
    peer_problem = peers_ready()
    if peer_problem and any(c.startswith(("pysqa", "hpc-rocket")) for c in chosen):
        print(f"skipping peers: {peer_problem}", file=sys.stderr)
        chosen = [c for c in chosen if not c.startswith(("pysqa", "hpc-rocket"))]
    if "submitit-array" in chosen and not SUBMITIT_PY.exists():
        print(f"skipping submitit: {SUBMITIT_PY} missing: run benchmarks/peers/setup.sh", file=sys.stderr)
        chosen = [c for c in chosen if c != "submitit-array"]
    maxjobs = C.max_job_count()
    if max(ns) > maxjobs // 2:
        C.die(f"N={max(ns)} too close to the lab's MaxJobCount={maxjobs} (jobs stay MinJobAge after cancel)")

    results: list[dict[str, Any]] = []
    for n in ns:
        # Interleaved: each repeat runs every contender once, the baseline first, so a ratio
        # compares runs made within seconds of each other (the lab is shared and noisy).
        names = [c for c in (["raw"] + [c for c in chosen if c != "raw"] if "raw" in chosen else chosen)
                 if n <= (CONTENDERS[c][1] if args.peer_max_n is None or CONTENDERS[c][1] > 10**6
                          else args.peer_max_n)]  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in names}
        repeats = args.repeats if n < 1000 else args.repeats_large
        for r in range(repeats):
            for name in names:
                if runs[name] and "failed" in runs[name][-1]:
                    continue
                C.wait_for_room(n, maxjobs)
                load = C.queue_load()
                prof = args.profile if (name == "hpcbridge" and n == max(ns) and r == 0) else None
                try:
                    if name.startswith("hpcbridge"):
                        out = run_hpcbridge(n, profile=prof, arrays=name != "hpcbridge-single",
                                            warm=name == "hpcbridge-warm")  # fmt: skip
                    else:
                        out = RUNNERS[name](n)
                except Exception as exc:  # noqa: BLE001 - a failing peer is reported, not fatal
                    print(f"  {name} N={n}: FAILED: {exc}", file=sys.stderr)
                    runs[name].append({"failed": str(exc)[:500]})
                    continue
                work_dirs = out.pop("_work_dirs", [])
                C.cleanup_jobs(out["job_ids"])
                C.remove_lab_dirs(work_dirs)
                out["n_jobs"] = len(out.pop("job_ids"))
                out["queue_before"] = load
                out["loadavg"] = os.getloadavg()[0]
                runs[name].append(out)
                print(f"  {name:<22} N={n:<5} run {r + 1}: {out['seconds']:.3f} s"
                      f" ({out['n_jobs']} ids, {out['errors']} errors, load {out['loadavg']:.1f})",
                      flush=True)  # fmt: skip
        raw_ok = [x.get("seconds") if x.get("errors") == 0 else None for x in runs.get("raw", [])]
        for name in names:
            ok = [x["seconds"] for x in runs[name] if "seconds" in x and x["errors"] == 0]
            med = C.median(ok)
            paired = [x["seconds"] / b for x, b in zip(runs[name], raw_ok, strict=False)
                      if b and "seconds" in x and x["errors"] == 0]  # fmt: skip
            row: dict[str, Any] = {
                "contender": name, "label": CONTENDERS[name][0], "n": n, "runs": runs[name],
                "median_s": med, "per_job_ms": med / n * 1000 if ok else float("nan"),
                "ratio_to_raw": C.median(paired),
            }  # fmt: skip
            if name.startswith("hpcbridge") and ok:
                for key in ("round_trips", "connects", "scheduler_commands", "sbatch_calls", "local_cpu_s"):
                    row[key] = C.median([x[key] for x in runs[name] if key in x])
            results.append(row)

    # speedup of hpcbridge over each other contender at the same N
    hb = {r["n"]: r for r in results if r["contender"] == "hpcbridge"}
    for r in results:
        h = hb.get(r["n"])
        r["hpcbridge_speedup"] = (r["median_s"] / h["median_s"]) if h else float("nan")

    print()
    table = C.print_table(
        ["contender", "N", "median s", "per-job ms", "x raw (a), paired", "hpcbridge faster by"],
        [[r["contender"], r["n"], r["median_s"], r["per_job_ms"], r["ratio_to_raw"], r["hpcbridge_speedup"]]
         for r in results],
        title=f"submit: median of {args.repeats} interleaved runs ({args.repeats_large} at N >= 1000)",
    )  # fmt: skip
    extra = [[r["contender"], r["n"], r.get("round_trips"), r.get("connects"), r.get("scheduler_commands"),
              r.get("sbatch_calls"), r.get("local_cpu_s")]
             for r in results if r["contender"].startswith("hpcbridge")]  # fmt: skip
    if extra:
        print()
        C.print_table(["contender", "N", "SSH round trips", "connects", "scheduler cmds", "sbatch calls",
                       "local CPU s"], extra,
                      title="hpcbridge submit_many: per call")  # fmt: skip
    targets = []
    for r in results:
        if r["contender"] in ("hpcbridge", "hpcbridge-warm") and r["n"] >= 1000:
            how = "limits read by the call" if r["contender"] == "hpcbridge" else "limits cached"
            targets.append({"target": f"N={r['n']}: hpcbridge (arrays, {how}) <= 0.05x raw",
                            "value": r["ratio_to_raw"], "met": r["ratio_to_raw"] <= 0.05})  # fmt: skip
            calls = r.get("sbatch_calls") or 0
            targets.append({"target": f"N={r['n']}: <= 2 sbatch per 1000 tasks", "value": calls,
                            "met": calls <= 2 * r["n"] / 1000})  # fmt: skip
        elif r["contender"] == "hpcbridge-single":
            targets.append({"target": f"N={r['n']}: hpcbridge (arrays = false) <= 1.3x raw",
                            "value": r["ratio_to_raw"], "met": r["ratio_to_raw"] <= 1.3})  # fmt: skip
        elif r["contender"] == "hpcbridge":
            targets.append({"target": f"N={r['n']}: hpcbridge (arrays) faster than raw", "value": r["ratio_to_raw"],
                            "met": r["ratio_to_raw"] < 1})  # fmt: skip
        elif r["contender"] != "raw":
            targets.append({"target": f"N={r['n']}: hpcbridge >= 5x faster than {r['contender']}",
                            "value": r["hpcbridge_speedup"], "met": r["hpcbridge_speedup"] >= 5})  # fmt: skip
    print()
    for t in targets:
        print(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']} ({t['value']:.2f})")
    C.write_json("submit", {"repeats": args.repeats, "ns": ns, "results": results,
                            "targets": targets, "table": table}, args.json_path)  # fmt: skip


if __name__ == "__main__":
    main()
