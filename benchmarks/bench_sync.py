#!/usr/bin/env python3
"""Sync cost against the number of tracked tasks: N = 100, 1,000, 10,000 tasks, 90% finished
and 10% in flight, and one ``sync_cluster`` cycle timed R times per N.

    python benchmarks/bench_sync.py                      # N = 100,1000,10000, 5 cycles each
    python benchmarks/bench_sync.py --ns 100,1000 --cycles 3 --profile /tmp/sync.prof

The registry is built directly (no 10,000 real jobs on a shared lab). The in-flight tasks'
attempts carry job ids of two kinds, measured as two variants:

* ``known``: a few real jobs submitted held (``sbatch --hold --wrap 'sleep 600'``: PENDING,
  no CPU taken from colleagues), shared round-robin by all in-flight tasks. squeue reports them
  every cycle, so each in-flight task goes through the normal path (poll request, apply, write
  ``last_seen_at``) -- the steady state of a big campaign;
* ``array``: one real held job array (``sbatch --hold --array=0-K``) whose elements are the
  in-flight tasks' jobs, one each (``<array>_<i>``), as a sweep submitted by hpcbridge has:
  ``squeue --array`` lists every element, so the commands per cycle must not grow with N;
* ``unknown``: syntactically valid ids Slurm has never seen (9000000+i). squeue does not list
  them, so every cycle asks sacct for all of them and then reads their marker files: the worst
  case (jobs purged from squeue). ``lost_grace_seconds`` is set huge so they stay in flight and
  every cycle is the same.

Reported per cycle: scheduler commands (``SlurmBackend.commands`` delta), SSH round trips
(``transport.stats.round_trips`` delta), local CPU (``time.process_time``), wall time and
registry rows changed. Baseline for ratios: N=100 of the same variant.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

HELD_JOBS = 8


def submit_held(k: int) -> list[str]:
    script = (f"for i in $(seq 1 {k}); do sbatch --parsable --hold --output=/dev/null "
              f"--job-name=hpcb-bench-held --wrap 'sleep 600'; done")  # fmt: skip
    res = C.as_lab_user(script)
    ids = [x.split(";")[0] for x in res.stdout.split() if x.split(";")[0].isdigit()]
    if len(ids) != k:
        C.die(f"could not submit {k} held jobs: {res.stderr.strip()}")
    return ids


def submit_held_array(k: int) -> str:
    res = C.as_lab_user(f"sbatch --parsable --hold --array=0-{k - 1} --output=/dev/null "
                        "--job-name=hpcb-bench-held-array --wrap 'sleep 600'")  # fmt: skip
    job = res.stdout.strip().split(";")[0]
    if not job.isdigit():
        C.die(f"could not submit a held array of {k}: {res.stderr.strip()}")
    return job


def build_registry(db: Path, cfg: Path, n: int, inflight_frac: float, variant: str,
                   held: list[str], array: str | None = None) -> dict[str, Any]:  # fmt: skip
    from hpcbridge.config import load_config
    from hpcbridge.lifecycle import TaskState as S
    from hpcbridge.models import Attempt, Task, new_task_id, new_token
    from hpcbridge.options import SubmitOptions, build_spec
    from hpcbridge.registry import Registry
    from hpcbridge.runtime import Runtime
    from hpcbridge.service import Service

    reg = Registry(db)
    svc = Service(Runtime(load_config(cfg), reg, source="bench"))
    spec, _ = build_spec(SubmitOptions(command=("true",)), svc.cluster("lab"))
    n_inflight = int(round(n * inflight_frac))
    now = time.time()
    t0 = time.perf_counter()
    for i in range(n):
        inflight = i >= n - n_inflight
        tid = new_task_id(now - n + i)
        state = S.QUEUED if inflight else (S.SUCCEEDED if i % 10 else S.FAILED)
        work = f"/home/{C.LAB_USER}/hpcbridge/bench-sync/{tid}"
        task = Task(id=tid, spec=spec, state=state, metadata={"i": str(i)}, created_at=now - 3600,
                    updated_at=now - 60, submitted_at=now - 3500, attempt_count=1, work_dir=work,
                    started_at=None if inflight else now - 3400,
                    ended_at=None if inflight else now - 3000,
                    exit_code=None if inflight else (0 if state == S.SUCCEEDED else 1),
                    output_dir=str(db.parent / "outputs" / tid))  # fmt: skip
        reg.insert_task(task, source="bench", detail="task registered")
        if inflight:
            k = i - (n - n_inflight)
            if variant == "array":
                job = f"{array}_{k}"
            else:
                job = held[k % len(held)] if variant == "known" else str(9_000_000 + k)
        else:
            job = str(8_000_000 + i)
        with reg.transaction():
            reg.add_attempt(Attempt(task_id=tid, number=1, token=new_token(), state=state,
                                    job_id=job, created_at=now - 3500))  # fmt: skip
            # A finished attempt was last seen when it ended (its usage window long past).
            reg.update_attempt(tid, 1, {"submitted_at": now - 3500,
                                        "last_seen_at": now - 30 if inflight else now - 3000})
    build_s = time.perf_counter() - t0
    reg.close()
    return {"inflight": n_inflight, "build_s": build_s}


def measure(db: Path, cfg: Path, cycles: int, profile: str | None) -> dict[str, Any]:
    from hpcbridge.config import load_config
    from hpcbridge.registry import Registry
    from hpcbridge.runtime import Runtime
    from hpcbridge.service import Service

    svc = Service(Runtime(load_config(cfg), Registry(db), source="bench"))
    backend = svc.backend("lab")
    transport = backend.transport  # type: ignore[attr-defined]
    conn = svc.registry.conn

    def one() -> dict[str, Any]:
        cmd0, rt0, ch0 = backend.commands, transport.stats.round_trips, conn.total_changes  # type: ignore[attr-defined]
        c0, t0 = time.process_time(), time.perf_counter()
        rep = svc.sync_cluster("lab")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {
            "wall_s": wall, "cpu_s": cpu, "polled": rep.polled, "changes": len(rep.changes),
            "errors": rep.errors, "unreachable": rep.unreachable,
            "commands": backend.commands - cmd0,  # type: ignore[attr-defined]
            "round_trips": transport.stats.round_trips - rt0, "rows_changed": conn.total_changes - ch0,
        }  # fmt: skip

    cold = one()  # connects, reads the cluster's time zone: reported apart
    runs = []
    prof = cProfile.Profile() if profile else None
    for i in range(cycles):
        if prof is not None and i == 0:
            prof.enable()
        runs.append(one())
        if prof is not None and i == 0:
            prof.disable()
    top = ""
    if prof is not None:
        prof.dump_stats(profile)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        top = buf.getvalue()
    svc.close()
    med = {k: C.median([r[k] for r in runs]) for k in ("wall_s", "cpu_s", "commands", "round_trips", "rows_changed", "polled")}
    return {"cold": cold, "runs": runs, "median": med, "profile_top": top}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="100,1000,10000")
    ap.add_argument("--cycles", type=int, default=5, help="timed cycles per N (after one cold cycle)")
    ap.add_argument("--inflight", type=float, default=0.10, help="fraction of tasks in flight")
    ap.add_argument("--variants", default="known,unknown")
    ap.add_argument("--profile", help="cProfile the first timed cycle at the largest N (known) into this file")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    C.check_lab()
    ns = C.parse_ns(args.ns)
    variants = [v for v in args.variants.split(",") if v]
    held = submit_held(HELD_JOBS)
    arrays: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        for variant in variants:
            for n in ns:
                tmp = C.tempdir(f"sync-{variant}-{n}")
                cfg = C.bench_config(tmp, lost_grace_seconds=10**9, commands_per_minute=10**6)
                array = None
                if variant == "array":
                    array = submit_held_array(max(1, int(round(n * args.inflight))))
                    arrays.append(array)
                built = build_registry(tmp / "registry.db", cfg, n, args.inflight, variant, held, array)
                prof = args.profile if (n == max(ns) and variant == variants[0]) else None
                m = measure(tmp / "registry.db", cfg, args.cycles, prof)
                row = {"variant": variant, "n": n, **built, **m}
                rows.append(row)
                md = m["median"]
                print(f"  {variant:<8} N={n:<6} in flight {built['inflight']:<5} cycle: "
                      f"{md['commands']:.0f} cmds, {md['round_trips']:.0f} round trips, "
                      f"{md['cpu_s']:.3f} s CPU, {md['wall_s']:.3f} s wall", flush=True)  # fmt: skip
            # the zero-in-flight reference: nothing to poll at all
        tmp = C.tempdir("sync-idle")
        cfg = C.bench_config(tmp, lost_grace_seconds=10**9, commands_per_minute=10**6)
        built = build_registry(tmp / "registry.db", cfg, min(ns), 0.0, "known", held)
        rows.append({"variant": "0-in-flight", "n": min(ns), **built,
                     **measure(tmp / "registry.db", cfg, args.cycles, None)})  # fmt: skip
    finally:
        C.cleanup_jobs(held + arrays)

    base = {r["variant"]: r["median"] for r in rows if r["n"] == min(ns)}
    table_rows = []
    for r in rows:
        md, b = r["median"], base[r["variant"]]
        r["cpu_ratio_to_n_min"] = md["cpu_s"] / b["cpu_s"] if b["cpu_s"] else float("nan")
        r["wall_ratio_to_n_min"] = md["wall_s"] / b["wall_s"] if b["wall_s"] else float("nan")
        table_rows.append([r["variant"], r["n"], r["inflight"], md["commands"], md["round_trips"],
                           md["cpu_s"], md["wall_s"], md["rows_changed"], r["cpu_ratio_to_n_min"],
                           r["wall_ratio_to_n_min"]])  # fmt: skip
    print()
    table = C.print_table(
        ["variant", "N", "in flight", "sched cmds/cycle", "SSH round trips", "local CPU s",
         "wall s", "rows written", f"CPU x N={min(ns)}", f"wall x N={min(ns)}"],
        table_rows, title=f"sync: median of {args.cycles} cycles (after one cold cycle)",
    )  # fmt: skip
    targets = []
    for variant in variants:
        cmds = {r["n"]: r["median"]["commands"] for r in rows if r["variant"] == variant}
        targets.append({"target": f"{variant}: scheduler commands per cycle constant in N",
                        "value": cmds, "met": len(set(cmds.values())) == 1})  # fmt: skip
        big = [r for r in rows if r["variant"] == variant and r["n"] == 10000]
        if big:
            cpu = big[0]["median"]["cpu_s"]
            targets.append({"target": f"{variant}: N=10000 < 1 s local CPU per cycle", "value": cpu,
                            "met": cpu < 1.0})  # fmt: skip
    print()
    for t in targets:
        print(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']} ({t['value']})")
    C.write_json("sync", {"ns": ns, "cycles": args.cycles, "inflight_fraction": args.inflight,
                          "held_jobs": HELD_JOBS, "results": rows, "targets": targets,
                          "table": table}, args.json_path)  # fmt: skip


if __name__ == "__main__":
    main()
