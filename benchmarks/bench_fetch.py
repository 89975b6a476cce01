#!/usr/bin/env python3
"""Fetching the outputs of N finished tasks over SSH to the lab: the batched fetch (one remote
command streaming one tar for all N) against the per-task path it replaced (one ``find`` plus
one SFTP get per output file, per task), measured interleaved in the same run.

    python benchmarks/bench_fetch.py                     # N = 20,200,1000, 3 repeats
    python benchmarks/bench_fetch.py --ns 20,200 -r 5

No Slurm jobs: N work dirs are written on the lab host as the lab user (what N finished jobs
leave behind: two small outputs each, in a subdirectory too, plus a scratch file and
hpcbridge's marker dir that are not outputs), then both paths fetch them into fresh local
dirs through the same SSH connection. Reported per N (medians): wall time, command
executions (``transport.stats.round_trips``), SFTP requests, and the ratio per-task / batched.
Both paths must bring back exactly the same files with the same content, or the run fails.

Then the inputs (``--inputs-ns``): N tasks of one submission sharing one input file (256 KiB,
new content each repeat), staged by ``SlurmBackend.prepare`` (uploaded once to the
content-addressed store, hard-linked into each work dir) against the per-task upload it
replaced (one SFTP put per task), and a second sweep with the same file (nothing uploaded).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

from hpcbridge.backends.slurm import SlurmBackend  # noqa: E402
from hpcbridge.backends.slurm_inputs import sha256_file  # noqa: E402
from hpcbridge.config import load_config  # noqa: E402
from hpcbridge.lifecycle import TaskState  # noqa: E402
from hpcbridge.models import Task, TaskSpec  # noqa: E402
from hpcbridge.paths import match_outputs  # noqa: E402
from hpcbridge.transport import make_transport  # noqa: E402

OUTPUTS = ("result.json", "fields/*.csv")


def make_work_dirs(base: str, n: int) -> None:
    script = (f'b={base}; for i in $(seq 0 {n - 1}); do d="$b/t$i"; mkdir -p "$d/fields" "$d/.hpcbridge/1"; '
              'printf "{\\"task\\": %d}\\n" "$i" > "$d/result.json"; '
              'head -c 2000 /dev/urandom | base64 > "$d/fields/f.csv"; '
              'head -c 4000 /dev/urandom > "$d/scratch.bin"; echo 0 > "$d/.hpcbridge/1/exit_code"; done')  # fmt: skip
    C.as_lab_user(script)


def tasks_for(base: str, n: int) -> list[Task]:
    now = time.time()
    spec = TaskSpec(command=("true",), name="bench", cluster="lab", outputs=OUTPUTS)
    return [Task(id=f"t{i}", spec=spec, state=TaskState.FETCHING, metadata={}, created_at=now,
                 updated_at=now, attempt_count=1, work_dir=f"{base}/t{i}") for i in range(n)]  # fmt: skip


def per_task(backend: SlurmBackend, tasks: list[Task], dest: Path) -> None:
    """The fetch as it was: per task one find (list_files), then one SFTP get per file."""
    for task in tasks:
        work = backend.work_dir(task)
        for rel in match_outputs(backend.transport.list_files(work), task.spec.outputs):
            target = dest / task.id / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            backend.transport.get(f"{work}/{rel}", target)


def batched(backend: SlurmBackend, tasks: list[Task], dest: Path) -> None:
    got = backend.fetch_outputs_many(tasks, {t.id: dest / t.id for t in tasks})
    bad = {k: v for k, v in got.items() if not isinstance(v, list)}
    if bad:
        raise RuntimeError(f"batched fetch errors: {bad}")


def snapshot(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def measure(backend: SlurmBackend, fn: Any, tasks: list[Task], dest: Path) -> dict[str, float]:
    stats = backend.transport.stats
    stats.reset()
    started = time.perf_counter()
    fn(backend, tasks, dest)
    wall = time.perf_counter() - started
    d = stats.as_dict()
    return {"wall_s": wall, "round_trips": d["round_trips"], "sftp_ops": d["sftp_ops"],
            "bytes_down": d["bytes_down"]}  # fmt: skip


def bench_inputs(backend: SlurmBackend, base: str, n: int, repeats: int, tmp: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"per_task": [], "shared": [], "shared_again": []}
    stores: list[str] = []  # the store dirs this benchmark filled, removed afterwards
    for r in range(repeats):
        src = tmp / f"mesh-{n}-{r}.dat"
        src.write_bytes(os.urandom(256 * 1024))
        now = time.time()
        spec = TaskSpec(command=("true",), name="bench", cluster="lab", inputs=(str(src),))
        tasks = [Task(id=f"in{n}-{r}-{i}", spec=spec, state=TaskState.CREATED, metadata={},
                      created_at=now, updated_at=now, work_dir=f"{base}/in{n}-{r}-{i}")
                 for i in range(n)]  # fmt: skip

        def per_task(b: SlurmBackend, ts: list[Task], _d: Path) -> None:
            for t in ts:  # the old SlurmBackend.prepare: one put per task per input
                local = Path(t.spec.inputs[0])
                b.transport.put(local, f"{base}/old-{t.id}/{local.name}")

        def shared(b: SlurmBackend, ts: list[Task], _d: Path) -> None:
            bad = {k: v for k, v in b.prepare(ts).items() if not isinstance(v, str)}
            if bad:
                raise RuntimeError(f"prepare errors: {bad}")

        runs["per_task"].append(measure(backend, per_task, tasks, tmp))
        runs["shared"].append(measure(backend, shared, tasks, tmp))
        runs["shared_again"].append(measure(backend, shared, tasks, tmp))
        stores.append(f"{backend.base_dir()}/.inputs/{sha256_file(src)}")
        check = C.as_lab_user(f"cmp {base}/in{n}-{r}-{n - 1}/{src.name} {base}/old-in{n}-{r}-0/{src.name} && echo same")
        if "same" not in check.stdout:
            raise SystemExit(f"inputs N={n}: the placed input differs from the uploaded one")
    C.remove_lab_dirs(stores)
    med = {k: {f: C.median([x[f] for x in v]) for f in v[0]} for k, v in runs.items()}
    return {"runs": runs, "median": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="20,200,1000")
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("--inputs-ns", default="20,200")
    ap.add_argument("--name", default="fetch", help="results/<name>-<date>.json")
    args = ap.parse_args()
    C.check_lab()
    ns = C.parse_ns(args.ns)
    tmp = C.tempdir("fetch")
    cfg = C.bench_config(tmp, commands_per_minute=10**6)
    cluster = load_config(cfg).cluster("lab")
    backend = SlurmBackend(cluster, make_transport(cluster))
    base = f"{C.LAB_HOME}/hpcb-bench-fetch"
    results: dict[str, Any] = {}
    rows = []
    try:
        for n in ns:
            make_work_dirs(base + f"/n{n}", n)
            tasks = tasks_for(base + f"/n{n}", n)
            runs: dict[str, list[dict[str, float]]] = {"per_task": [], "batched": []}
            ratios = []
            for r in range(args.repeats):
                outs = {}
                for name, fn in (("per_task", per_task), ("batched", batched)):
                    dest = tmp / f"{name}-{n}-{r}"
                    runs[name].append(measure(backend, fn, tasks, dest))
                    outs[name] = snapshot(dest)
                    shutil.rmtree(dest)
                if outs["per_task"] != outs["batched"] or len(outs["batched"]) != 2 * n:
                    raise SystemExit(f"N={n}: the two paths fetched different files")
                ratios.append(runs["per_task"][-1]["wall_s"] / runs["batched"][-1]["wall_s"])
            med = {k: {f: C.median([x[f] for x in v]) for f in v[0]} for k, v in runs.items()}
            results[str(n)] = {"runs": runs, "median": med, "ratio_wall_median": C.median(ratios)}
            rows.append([n, C.fmt(med["per_task"]["wall_s"]), int(med["per_task"]["round_trips"]),
                         int(med["per_task"]["sftp_ops"]), C.fmt(med["batched"]["wall_s"]),
                         int(med["batched"]["round_trips"]), int(med["batched"]["sftp_ops"]),
                         f"{C.median(ratios):.1f}x"])  # fmt: skip
        inputs: dict[str, Any] = {}
        in_rows = []
        for n in C.parse_ns(args.inputs_ns):
            got = inputs[str(n)] = bench_inputs(backend, base + "/inputs", n, args.repeats, tmp)
            m = got["median"]
            in_rows.append([n, C.fmt(m["per_task"]["wall_s"]), int(m["per_task"]["sftp_ops"]),
                            C.fmt(m["shared"]["wall_s"]), int(m["shared"]["round_trips"]),
                            int(m["shared"]["sftp_ops"]), C.fmt(m["shared_again"]["wall_s"]),
                            int(m["shared_again"]["sftp_ops"]),
                            f"{m['per_task']['wall_s'] / m['shared']['wall_s']:.1f}x"])  # fmt: skip
    finally:
        C.remove_lab_dirs([base])
        backend.close()
        shutil.rmtree(tmp, ignore_errors=True)
    table = C.print_table(
        ["N", "per-task s", "execs", "sftp ops", "batched s", "execs", "sftp ops", "per-task/batched"],
        rows, title=f"fetch of N tasks' outputs (2 files each), median of {args.repeats}")  # fmt: skip
    in_table = C.print_table(
        ["N", "per-task put s", "sftp ops", "shared s", "execs", "sftp ops", "again s", "sftp ops",
         "per-task/shared"],
        in_rows, title=f"one 256 KiB input shared by N tasks, median of {args.repeats}")  # fmt: skip
    C.write_json(args.name, {"ns": ns, "repeats": args.repeats, "outputs": OUTPUTS,
                           "results": results, "table": table, "inputs": inputs,
                           "inputs_table": in_table})  # fmt: skip


if __name__ == "__main__":
    main()
