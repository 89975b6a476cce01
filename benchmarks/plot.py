#!/usr/bin/env python3
"""Plot cost against task count from the newest JSON results:

* left: submit cost per job (ms, log scale) against N for every contender (results/submit-*.json);
* right: one sync cycle's local CPU and wall time against tracked tasks (results/sync-*.json).

    python benchmarks/plot.py [--submit FILE] [--sync FILE] [--out benchmarks/submit_cost.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def newest(pattern: str) -> Path | None:
    files = sorted((HERE / "results").glob(pattern), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submit", type=Path, nargs="*", default=None,
                    help="submit result files, merged in order (default: every results/submit-*.json)")
    ap.add_argument("--sync", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "submit_cost.png")
    args = ap.parse_args()
    submit_files = args.submit or sorted((HERE / "results").glob("submit-*.json"), key=lambda p: p.stat().st_mtime)
    sync_file = args.sync or newest("sync-*.json")
    if not submit_files:
        raise SystemExit("no results/submit-*.json: run bench_submit.py first")

    fig, axes = plt.subplots(1, 2 if sync_file else 1, figsize=(13 if sync_file else 7.5, 7.0), squeeze=False)
    ax = axes[0][0]
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    data: dict[str, Any] = {}
    for f in submit_files:  # later files win for the same (contender, N)
        data = json.loads(Path(f).read_text())
        for r in data["results"]:
            if r["per_job_ms"] == r["per_job_ms"]:  # not nan
                # By label too: a contender whose meaning changed (hpcbridge before job
                # arrays, one job per task) is a series of its own, not a line through both.
                merged[(r["contender"], r["label"], r["n"])] = r
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for (name, label, n), r in merged.items():
        series.setdefault((name, label), []).append((n, r["per_job_ms"]))
    for (name, label), pts in series.items():
        pts.sort()
        xs, ys = zip(*pts, strict=True)
        style = {"raw": dict(color="black", lw=2.5, marker="s"),
                 "hpcbridge": dict(color="tab:green", lw=2.5, marker="o"),
                 "hpcbridge-warm": dict(color="darkgreen", lw=2.5, marker="D")}.get(
                     name, dict(marker="^", ls="--"))  # fmt: skip
        ax.plot(xs, ys, label=label, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs submitted in one go (N)")
    ax.set_ylabel("wall time per job (ms, median)")
    ax.set_title(f"Submit cost per job vs N ({data['machine']['slurm']}, {data['machine']['date'][:10]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    if sync_file:
        ax2 = axes[0][1]
        sync = json.loads(sync_file.read_text())
        for variant, color in (("known", "tab:blue"), ("unknown", "tab:orange")):
            rows = sorted((r for r in sync["results"] if r["variant"] == variant), key=lambda r: r["n"])
            if not rows:
                continue
            ns = [r["n"] for r in rows]
            ax2.plot(ns, [r["median"]["cpu_s"] for r in rows], marker="o", color=color,
                     label=f"local CPU, in-flight jobs {variant} to squeue")  # fmt: skip
            ax2.plot(ns, [r["median"]["wall_s"] for r in rows], marker="x", ls="--", color=color,
                     label=f"wall, in-flight jobs {variant} to squeue")  # fmt: skip
        ax2.axhline(1.0, color="red", lw=1, ls=":", label="target: 1 s CPU at N=10,000")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("tracked tasks (10% in flight)")
        ax2.set_ylabel("seconds per sync cycle (median)")
        ax2.set_title("Sync cycle cost vs tracked tasks")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
