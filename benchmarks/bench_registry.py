#!/usr/bin/env python3
"""Registry scale: 100,000 tasks with their attempts and events, then the queries users and the
sync loop make at that size, and the daemon's peak RSS over that registry.

    python benchmarks/bench_registry.py                 # 100,000 tasks
    python benchmarks/bench_registry.py --tasks 20000 --repeats 3

Reported: bulk insert rate (batched SQL, one transaction per 5,000 tasks) and the per-call rate
of ``Registry.insert_task`` (one transaction per task, what ``submit`` does); ``hpcbridge tasks
list --state running --limit 50`` and ``tasks info ID`` both in-process (click's CliRunner)
and as a subprocess (interpreter start and imports included); one sync cycle's registry work
(list active tasks, current attempts, 20 transitions); ``EXPLAIN QUERY PLAN`` of each query;
peak RSS of ``python -m hpcbridge daemon --max-cycles 3 --interval 1`` (``/usr/bin/time -v``).
The in-flight tasks (2%) carry job ids Slurm does not know, with a huge ``lost_grace_seconds``,
so the daemon's cycles poll them (sacct + marker read) without changing them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

EVENTS = [("created", None, "task registered"), ("created", "staging", "staging inputs"),
          ("staging", "submitting", "attempt 1: submitting"),
          ("submitting", "queued", "attempt 1: job submitted"),
          ("queued", "running", "attempt 1: job RUNNING on node1"),
          ("running", "succeeded", "attempt 1: job COMPLETED, exit code 0")]  # fmt: skip


def state_for(i: int) -> str:
    r = i % 100
    if r == 0:
        return "running"
    if r == 1:
        return "queued"
    if r in (2, 3):
        return "failed"
    if r == 4:
        return "cancelled"
    return "succeeded"


def build(db: Path, cfg: Path, n: int, batch: int = 5000) -> dict[str, Any]:
    from hpcbridge.config import load_config
    from hpcbridge.models import Task, new_task_id, new_token
    from hpcbridge.options import SubmitOptions, build_spec
    from hpcbridge.registry import Registry
    from hpcbridge.runtime import Runtime
    from hpcbridge.schema import TASK_COLUMNS as _TASK_COLUMNS
    from hpcbridge.service import Service

    reg = Registry(db)
    svc = Service(Runtime(load_config(cfg), reg, source="bench"))
    spec, _ = build_spec(SubmitOptions(command=("python3", "heat2d.py", "--nx", "16"),
                                        outputs=("result.json",)), svc.cluster("lab"))  # fmt: skip
    spec_json = json.dumps(spec.to_dict())
    now = time.time()
    t0 = time.perf_counter()
    n_events = 0
    for start in range(0, n, batch):
        tasks, attempts, events = [], [], []
        for i in range(start, min(n, start + batch)):
            st = state_for(i)
            created = now - 86400 + i * 0.5
            tid = new_task_id(created)
            done = st not in ("running", "queued")
            tasks.append((tid, f"sim-{i}", "lab", st, spec_json, json.dumps({"i": str(i)}), created,
                          created + 60, created + 1, None if st == "queued" else created + 2,
                          created + 50 if done else None, created + 51 if st == "succeeded" else None,
                          1, (0 if st == "succeeded" else 1) if done else None, None, None,
                          f"/home/{C.LAB_USER}/hpcbridge/bench-reg/{tid}", str(db.parent / "o" / tid),
                          "[]", 0, None, None))  # fmt: skip
            attempts.append((tid, 1, new_token(), st, str(9_000_000 + i), created + 1, created + 1,
                             now - 10))  # fmt: skip
            upto = {"queued": 4, "running": 5}.get(st, 6)
            for k, (frm, to, detail) in enumerate(EVENTS[:upto]):
                to_state = to if to else frm
                if k == 5 and st != "succeeded":
                    to_state, detail = st, f"attempt 1: job ended ({st})"
                events.append((tid, created + k, "state", "api" if k < 4 else "daemon",
                               frm if to else None, to_state, 1 if k >= 2 else None, detail))  # fmt: skip
        with reg.transaction() as c:
            c.executemany(f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 22)})", tasks)
            c.executemany("INSERT INTO attempts (task_id, number, token, state, job_id, created_at,"
                          " submitted_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", attempts)  # fmt: skip
            c.executemany("INSERT INTO events (task_id, at, kind, source, from_state, to_state,"
                          " attempt, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events)  # fmt: skip
        n_events += len(events)
    bulk_s = time.perf_counter() - t0

    # the API path: one transaction per task (what submit() does before staging)
    from hpcbridge.lifecycle import TaskState

    sample = 2000
    t0 = time.perf_counter()
    for i in range(sample):
        tid = new_task_id(now - 7200 + i * 0.001)
        reg.insert_task(Task(id=tid, spec=spec, state=TaskState.CREATED, metadata={}, created_at=now,
                             updated_at=now), source="bench", detail="task registered")  # fmt: skip
        reg.transition(tid, TaskState.CREATED, TaskState.CANCELLED, source="bench", detail="bench")
    api_s = time.perf_counter() - t0
    reg.conn.execute("ANALYZE")
    reg.close()
    return {
        "tasks": n + sample, "events": n_events + 2 * sample, "bulk_s": bulk_s,
        "bulk_tasks_per_s": n / bulk_s, "bulk_events_per_s": n_events / bulk_s,
        "api_insert_sample": sample, "api_insert_plus_transition_per_s": sample / api_s,
        "db_mb": round(db.stat().st_size / 1e6, 1),
    }  # fmt: skip


def _median_time(fn: Any, repeats: int) -> tuple[float, list[float]]:
    xs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    return C.median(xs), xs


def cli_timings(db: Path, cfg: Path, task_id: str, repeats: int) -> dict[str, Any]:
    from click.testing import CliRunner

    from hpcbridge.cli import cli

    runner = CliRunner()
    base = ["--config", str(cfg), "--db", str(db)]
    out: dict[str, Any] = {}
    cases = {"tasks list --state running --limit 50": ["tasks", "list", "--state", "running", "--limit", "50"],
             f"tasks info {task_id}": ["tasks", "info", task_id]}  # fmt: skip
    for label, argv in cases.items():
        res = runner.invoke(cli, base + argv)
        if res.exit_code != 0:
            raise RuntimeError(f"{label}: exit {res.exit_code}: {res.output[-500:]}")
        med, xs = _median_time(lambda a=argv: runner.invoke(cli, base + a), repeats)
        lines = len(res.output.splitlines())
        sub_argv = [sys.executable, "-m", "hpcbridge", *base, *argv]
        smed, sxs = _median_time(lambda a=sub_argv: subprocess.run(a, capture_output=True, check=True), repeats)
        out[label] = {"in_process_s": med, "in_process_runs": xs, "subprocess_s": smed,
                      "subprocess_runs": sxs, "output_lines": lines}  # fmt: skip
    floor, _ = _median_time(lambda: subprocess.run([sys.executable, "-m", "hpcbridge", "--version"],
                                                   capture_output=True, check=True), repeats)  # fmt: skip
    out["python -m hpcbridge --version (startup floor)"] = {"subprocess_s": floor}
    return out


def sync_registry_work(db: Path, repeats: int) -> dict[str, Any]:
    from hpcbridge.lifecycle import TERMINAL
    from hpcbridge.lifecycle import TaskState as S
    from hpcbridge.registry import Registry

    reg = Registry(db)
    active = set(S) - TERMINAL
    lt = _median_time(lambda: reg.list_tasks(states=active, cluster="lab", newest_first=False), repeats)
    tasks = reg.list_tasks(states=active, cluster="lab", newest_first=False)
    ids = [t.id for t in tasks]
    ca = _median_time(lambda: reg.current_attempts(ids), repeats)
    queued = [t.id for t in tasks if t.state == S.QUEUED][:20]
    t0 = time.perf_counter()
    for tid in queued:
        with reg.transaction():
            reg.update_attempt(tid, 1, {"last_seen_at": time.time(), "state": S.RUNNING})
            reg.transition(tid, S.QUEUED, S.RUNNING, source="bench", attempt=1,
                           detail="attempt 1: job RUNNING", fields={"started_at": time.time()})  # fmt: skip
    tr = (time.perf_counter() - t0) / max(1, len(queued))
    gets = _median_time(lambda: [reg.get_task(t) for t in ids[:1000]], repeats)
    plans = {}
    queries = {
        "tasks list --state running --limit 50":
            ("SELECT id FROM tasks WHERE state IN (?) ORDER BY id DESC LIMIT 50", ["running"]),
        "sync: active tasks of a cluster":
            (f"SELECT id FROM tasks WHERE state IN ({', '.join('?' * len(active))}) AND cluster = ?"
             " ORDER BY id ASC", [s.value for s in active] + ["lab"]),
        "current_attempts":
            ("SELECT a.* FROM attempts a JOIN tasks t ON t.id = a.task_id AND a.number = t.attempt_count"
             " WHERE a.task_id IN (?, ?)", ids[:2]),
        "tasks info: events": ("SELECT * FROM events WHERE task_id = ? ORDER BY id", ids[:1]),
        "tasks info: attempts": ("SELECT * FROM attempts WHERE task_id = ? ORDER BY number", ids[:1]),
    }  # fmt: skip
    for label, (sql, params) in queries.items():
        plans[label] = [r[3] for r in reg.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    reg.close()
    return {
        "active_tasks": len(ids),
        "list_active_s": lt[0], "current_attempts_s": ca[0], "transition_s_each": tr,
        "get_task_x1000_s": gets[0], "query_plans": plans,
    }  # fmt: skip


def daemon_rss(db: Path, cfg: Path) -> dict[str, Any]:
    def peak(argv: list[str]) -> tuple[int, float, str]:
        t0 = time.perf_counter()
        res = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True, timeout=900)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
        return (int(m[1]) if m else -1), time.perf_counter() - t0, res.stderr[-3000:]

    base = [sys.executable, "-m", "hpcbridge", "--config", str(cfg), "--db", str(db)]
    floor_kb, _, _ = peak([*base, "--version"])
    kb, secs, log = peak([*base, "daemon", "--max-cycles", "3", "--interval", "1"])
    polled = re.findall(r"polled|sacct|error", log, re.I)
    return {"daemon_peak_rss_mb": kb / 1024, "daemon_seconds": secs,
            "startup_peak_rss_mb": floor_kb / 1024, "daemon_log_tail": log[-1500:],
            "log_mentions": len(polled)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--db", help="reuse/build the registry here (default: a fresh temp dir)")
    ap.add_argument("--no-daemon", action="store_true", help="skip the daemon RSS run (no lab needed)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    if not args.no_daemon:
        C.check_lab()
    tmp = C.tempdir("registry")
    cfg = C.bench_config(tmp, lost_grace_seconds=10**9, commands_per_minute=10**6) if C.LAB_CONFIG.exists() \
        else None
    if cfg is None:
        C.die(f"{C.LAB_CONFIG} not found: start the lab with `scripts/slurm-lab up`")
    db = Path(args.db) if args.db else tmp / "registry.db"
    built: dict[str, Any] = {}
    if not db.exists() or db.stat().st_size == 0:
        print(f"building {args.tasks} tasks in {db} ...", flush=True)
        built = build(db, cfg, args.tasks)
        print(f"  bulk: {built['bulk_tasks_per_s']:.0f} tasks/s ({built['bulk_events_per_s']:.0f} events/s);"
              f" insert_task+transition: {built['api_insert_plus_transition_per_s']:.0f}/s", flush=True)  # fmt: skip
    import sqlite3

    con = sqlite3.connect(db)
    info_id = con.execute("SELECT id FROM tasks WHERE state = 'succeeded' ORDER BY id LIMIT 1"
                          " OFFSET (SELECT COUNT(*) / 2 FROM tasks WHERE state = 'succeeded')").fetchone()[0]
    counts = dict(con.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
    n_events = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    con.close()
    cli = cli_timings(db, cfg, info_id, args.repeats)
    work = sync_registry_work(db, args.repeats)
    rss = {} if args.no_daemon else daemon_rss(db, cfg)

    rows = []
    for label, d in cli.items():
        rows.append([label, d.get("in_process_s", float("nan")), d["subprocess_s"]])
    print()
    t1 = C.print_table(["command", "in-process s (CliRunner)", "subprocess s"], rows,
                       title=f"registry with {sum(counts.values())} tasks, {n_events} events: median of {args.repeats}")  # fmt: skip
    print()
    t2 = C.print_table(
        ["sync-cycle registry work", "seconds"],
        [[f"list active tasks ({work['active_tasks']})", work["list_active_s"]],
         ["current_attempts of all of them", work["current_attempts_s"]],
         ["one transition (attempt update + CAS + event)", work["transition_s_each"]],
         ["get_task x 1000 (the per-task re-read in the poll loop)", work["get_task_x1000_s"]]],
    )  # fmt: skip
    print()
    for label, plan in work["query_plans"].items():
        print(f"  plan {label}: {' / '.join(plan)}")
    if rss:
        print(f"\n  daemon peak RSS: {rss['daemon_peak_rss_mb']:.1f} MB (interpreter + imports alone:"
              f" {rss['startup_peak_rss_mb']:.1f} MB), 3 cycles in {rss['daemon_seconds']:.1f} s")  # fmt: skip
    list_s = cli["tasks list --state running --limit 50"]
    info_s = cli[f"tasks info {info_id}"]
    targets = [
        {"target": "tasks list < 0.3 s (in-process)", "value": list_s["in_process_s"], "met": list_s["in_process_s"] < 0.3},
        {"target": "tasks list < 0.3 s (subprocess)", "value": list_s["subprocess_s"], "met": list_s["subprocess_s"] < 0.3},
        {"target": "tasks info < 20 ms (in-process)", "value": info_s["in_process_s"], "met": info_s["in_process_s"] < 0.02},
        {"target": "tasks info < 20 ms (subprocess)", "value": info_s["subprocess_s"], "met": info_s["subprocess_s"] < 0.02},
    ]  # fmt: skip
    if rss:
        targets.append({"target": "daemon peak RSS < 80 MB", "value": rss["daemon_peak_rss_mb"],
                        "met": rss["daemon_peak_rss_mb"] < 80})  # fmt: skip
    print()
    for t in targets:
        print(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']} ({t['value']:.4f})")
    C.write_json("registry", {"build": built, "state_counts": counts, "events": n_events,
                              "cli": cli, "sync_registry_work": work, "daemon": rss,
                              "targets": targets, "tables": [t1, t2], "cpu_count": os.cpu_count()},
                 args.json_path)  # fmt: skip


if __name__ == "__main__":
    main()
