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

Metadata filters (issue 11): every task carries ``i`` (unique), ``alpha`` (10 values) and
``nx`` (4 values) and 1% a ``tag``; each filter runs through the indexed ``task_meta``
(``Registry.list_tasks(metadata=...)``) and, in the same run, as the unindexed baseline: a
scan of the metadata JSON with ``json_extract``; both for ids only and for whole Task
records. Also ``tasks list --meta`` (in-process and subprocess) and ``projects list`` over
10 projects of 10,000 tasks.
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


ALPHAS = ["0.01", "0.02", "0.05", "0.1", "0.2", "0.3", "0.4", "0.5", "0.7", "0.9"]
NXS = ["16", "32", "64", "128"]
PROJECTS = 10


def meta_for(i: int) -> dict[str, str]:
    meta = {"i": str(i), "alpha": ALPHAS[i % 10], "nx": NXS[(i // 10) % 4]}
    if i % 100 == 7:
        meta["tag"] = "checked"
    return meta


def build(db: Path, cfg: Path, n: int, batch: int = 5000) -> dict[str, Any]:
    from hpcbridge.config import load_config
    from hpcbridge.models import Task, new_task_id, new_token
    from hpcbridge.options import SubmitOptions, build_spec
    from hpcbridge.registry import Registry
    from hpcbridge.runtime import Runtime
    from hpcbridge.schema import TASK_COLUMN_COUNT as _TASK_COLUMN_COUNT
    from hpcbridge.schema import TASK_COLUMNS as _TASK_COLUMNS
    from hpcbridge.service import Service

    reg = Registry(db)
    svc = Service(Runtime(load_config(cfg), reg, source="bench"))
    spec, _ = build_spec(SubmitOptions(command=("python3", "heat2d.py", "--nx", "16"),
                                        outputs=("result.json",)), svc.cluster("lab"))  # fmt: skip
    spec_json = {p: json.dumps({**spec.to_dict(), "project": f"study-{p}"}) for p in range(PROJECTS)}
    now = time.time()
    t0 = time.perf_counter()
    n_events = 0
    for start in range(0, n, batch):
        tasks, attempts, events, metas = [], [], [], []
        for i in range(start, min(n, start + batch)):
            st = state_for(i)
            created = now - 86400 + i * 0.5
            tid = new_task_id(created)
            done = st not in ("running", "queued")
            meta = meta_for(i)
            metas.extend((tid, k, v) for k, v in meta.items())
            tasks.append((tid, f"sim-{i}", "lab", st, spec_json[i % PROJECTS], json.dumps(meta), created,
                          created + 60, created + 1, None if st == "queued" else created + 2,
                          created + 50 if done else None, created + 51 if st == "succeeded" else None,
                          1, (0 if st == "succeeded" else 1) if done else None, None, None,
                          f"/home/{C.LAB_USER}/hpcbridge/bench-reg/{tid}", str(db.parent / "o" / tid),
                          "[]", 0, None, None, f"study-{i % PROJECTS}"))  # fmt: skip
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
            c.executemany(f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * _TASK_COLUMN_COUNT)})", tasks)
            c.executemany("INSERT INTO task_meta (task_id, key, value) VALUES (?, ?, ?)", metas)
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


META_CASES: dict[str, dict[str, str | None]] = {
    "i=54321 (1 match)": {"i": "54321"},
    "tag (has key, 1%)": {"tag": None},
    "alpha=0.1 nx=64 (2.5%)": {"alpha": "0.1", "nx": "64"},
    "alpha=0.1 (10%)": {"alpha": "0.1"},
}


def _json_where(meta: dict[str, str | None]) -> tuple[str, list[Any]]:
    """The unindexed baseline: the same filter as a scan of the metadata JSON."""
    parts, params = [], []
    for k, v in meta.items():
        path = '$."' + k + '"'
        if v is None:
            parts.append("json_type(metadata, ?) IS NOT NULL")
            params.append(path)
        else:
            parts.append("json_extract(metadata, ?) = ?")
            params += [path, v]
    return " WHERE " + " AND ".join(parts), params


def metadata_filters(db: Path, cfg: Path, repeats: int) -> dict[str, Any]:
    from click.testing import CliRunner

    import hpcbridge
    from hpcbridge.cli import cli
    from hpcbridge.registry import Registry
    from hpcbridge.registry_queries import task_filter
    from hpcbridge.schema import TASK_COLUMNS, row_to_task

    hpcbridge.configure(config=cfg, db=db)
    reg = Registry(db)
    cases: dict[str, Any] = {}
    for label, meta in META_CASES.items():
        found = task_filter(metadata=meta)
        assert found is not None
        iwhere, iparams = found
        jwhere, jparams = _json_where(meta)

        def ids(where: str, params: list[Any]) -> list[str]:
            return [r[0] for r in reg.conn.execute(f"SELECT id FROM tasks{where} ORDER BY id DESC", params)]

        def records(where: str, params: list[Any]) -> list[Any]:
            return [row_to_task(r) for r in reg.conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks{where} ORDER BY id DESC", params)]

        got_i, got_j = ids(iwhere, iparams), ids(jwhere, jparams)
        assert got_i == got_j, f"{label}: indexed and JSON scan disagree ({len(got_i)} vs {len(got_j)})"
        assert [t.id for t in reg.list_tasks(metadata=meta)] == got_i
        # interleaved: baseline and indexed alternate, each repeat
        xi, xj, ri, rj = [], [], [], []
        for _ in range(repeats):
            for fn, where, params, out in ((ids, iwhere, iparams, xi), (ids, jwhere, jparams, xj),
                                           (records, iwhere, iparams, ri), (records, jwhere, jparams, rj)):  # fmt: skip
                t0 = time.perf_counter()
                fn(where, params)
                out.append(time.perf_counter() - t0)
        lt = _median_time(lambda m=meta: reg.list_tasks(metadata=m), repeats)[0]
        tid = _median_time(lambda m=meta: reg.task_ids(metadata=m), repeats)[0]
        api = _median_time(lambda m=meta: hpcbridge.list_tasks(metadata=m), repeats)[0]
        plan = [r[3] for r in reg.conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM tasks{iwhere} ORDER BY id DESC", iparams)]
        cases[label] = {
            "matches": len(got_i), "indexed_ids_s": C.median(xi), "json_scan_ids_s": C.median(xj),
            "ids_ratio": C.median(xj) / C.median(xi), "indexed_records_s": C.median(ri),
            "json_scan_records_s": C.median(rj), "records_ratio": C.median(rj) / C.median(ri),
            "list_tasks_s": lt, "task_ids_s": tid, "api_list_tasks_s": api, "plan": plan,
            "runs": {"indexed_ids": xi, "json_ids": xj, "indexed_records": ri, "json_records": rj},
        }  # fmt: skip
    reg.close()
    runner = CliRunner()
    base = ["--config", str(cfg), "--db", str(db)]
    cli_cases = {
        "tasks list --meta alpha=0.1 --meta nx=64 --limit 50": ["tasks", "list", "--meta", "alpha=0.1", "--meta", "nx=64", "--limit", "50"],
        "tasks list --meta i=54321": ["tasks", "list", "--meta", "i=54321"],
        "tasks list --project study-3 --meta tag --limit 50": ["tasks", "list", "--project", "study-3", "--meta", "tag", "--limit", "50"],
        "projects list": ["projects", "list"],
    }  # fmt: skip
    cli_out: dict[str, Any] = {}
    for label, argv in cli_cases.items():
        res = runner.invoke(cli, base + argv)
        if res.exit_code != 0:
            raise RuntimeError(f"{label}: exit {res.exit_code}: {res.output[-500:]}")
        med, xs = _median_time(lambda a=argv: runner.invoke(cli, base + a), repeats)
        sub_argv = [sys.executable, "-m", "hpcbridge", *base, *argv]
        smed, sxs = _median_time(lambda a=sub_argv: subprocess.run(a, capture_output=True, check=True), repeats)
        cli_out[label] = {"in_process_s": med, "in_process_runs": xs, "subprocess_s": smed, "subprocess_runs": sxs,
                          "output_lines": len(res.output.splitlines()),
                          "output_head": res.output.splitlines()[:4]}  # fmt: skip
    return {"cases": cases, "cli": cli_out}


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
    meta = metadata_filters(db, cfg, args.repeats)
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
    print()
    t3 = C.print_table(
        ["metadata filter", "matches", "indexed ids s", "JSON scan ids s", "x faster",
         "hpcbridge.list_tasks s", "indexed records s", "JSON scan records s", "x faster"],
        [[k, d["matches"], d["indexed_ids_s"], d["json_scan_ids_s"], f"{d['ids_ratio']:.0f}",
          d["api_list_tasks_s"], d["indexed_records_s"], d["json_scan_records_s"], f"{d['records_ratio']:.1f}"]
         for k, d in meta["cases"].items()],
        title=f"metadata filters over {sum(counts.values())} tasks: median of {args.repeats}, interleaved",
    )  # fmt: skip
    for k, d in meta["cases"].items():
        print(f"  plan {k}: {' / '.join(d['plan'])}")
    print()
    t4 = C.print_table(["command", "in-process s (CliRunner)", "subprocess s"],
                       [[k, d["in_process_s"], d["subprocess_s"]] for k, d in meta["cli"].items()])  # fmt: skip
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
    for what, key in (("the filter itself (ids)", "task_ids_s"), ("hpcbridge.list_tasks(metadata=...)", "api_list_tasks_s")):
        slowest = max(d[key] for d in meta["cases"].values())
        targets.append({"target": f"metadata filter < 0.3 s: {what}, worst case", "value": slowest,
                        "met": slowest < 0.3})  # fmt: skip
    for label, d in meta["cli"].items():
        targets.append({"target": f"{label} < 0.3 s (in-process)", "value": d["in_process_s"],
                        "met": d["in_process_s"] < 0.3})  # fmt: skip
    if rss:
        targets.append({"target": "daemon peak RSS < 80 MB", "value": rss["daemon_peak_rss_mb"],
                        "met": rss["daemon_peak_rss_mb"] < 80})  # fmt: skip
    print()
    for t in targets:
        print(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']} ({t['value']:.4f})")
    C.write_json("registry", {"build": built, "state_counts": counts, "events": n_events,
                              "cli": cli, "sync_registry_work": work, "metadata": meta, "daemon": rss,
                              "targets": targets, "tables": [t1, t2, t3, t4], "cpu_count": os.cpu_count()},
                 args.json_path)  # fmt: skip


if __name__ == "__main__":
    main()
