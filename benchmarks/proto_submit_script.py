#!/usr/bin/env python3
"""Prototype of a cheaper remote submission script, measured against the current one.

The current ``SlurmBackend.submit_script`` (hpcbridge/backends/slurm.py) spends, per job, a
``mkdir -p`` exec, a ``printf | base64 -d`` pipeline (a subshell + an exec), the ``sbatch``
command substitution and a ``$(printf | tr)`` pipeline (a subshell, a pipe, an exec): about
four extra fork/execs per job on the login node, where the raw loop has one. The prototype
(monkeypatched here, hpcbridge/ is not edited) creates every attempt dir with one ``mkdir -p``
per chunk, writes the job script with the ``printf`` builtin from a single-quoted literal
(shlex.quote: no expansion inside), and flattens sbatch's output with ``${o//$'\\n'/ }``. The
output protocol (HPCB / HPCBERR lines) is unchanged.

    python benchmarks/proto_submit_script.py --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import posixpath
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_submit as B  # noqa: E402
import common as C  # noqa: E402

from hpcbridge import slurm  # noqa: E402
from hpcbridge.backends.base import SubmitRequest  # noqa: E402
from hpcbridge.backends.slurm import SlurmBackend  # noqa: E402

ORIGINAL = SlurmBackend.submit_script


def submit_script_fewer_forks(self: SlurmBackend, reqs: Sequence[tuple[SubmitRequest, str]]) -> str:
    sbatch = shlex.join(slurm.sbatch_argv(bin_dir=self._bin()))
    dirs = [posixpath.join(self.work_dir(req.task), ".hpcbridge", str(req.attempt)) for req, _ in reqs]
    lines = ["set -u", "umask 077", "mkdir -p -- " + " ".join(shlex.quote(d) for d in dirs) + " 2>/dev/null"]
    for (req, text), d in zip(reqs, dirs, strict=True):
        tok = shlex.quote(req.token)
        lines.append(
            f"d={shlex.quote(d)}; "
            f"if printf '%s' {shlex.quote(text)} > \"$d/job.sh\"; then "
            f"o=$({sbatch} < \"$d/job.sh\" 2>\"$d/sbatch.err\"); r=$?; "
            f"else o=; r=255; echo 'cannot write job script' > \"$d/sbatch.err\" 2>/dev/null; fi; "
            f"printf 'HPCB %s %s %s\\n' {tok} \"$r\" \"${{o//$'\\n'/ }}\"; "
            f"if [ \"$r\" -ne 0 ]; then printf 'HPCBERR %s %s\\n' {tok} "
            f"\"$(head -c 4000 \"$d/sbatch.err\" 2>/dev/null | base64 | tr -d '\\n')\"; fi"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    C.check_lab()
    rows: dict[str, list[float]] = {"raw": [], "hpcbridge (current script)": [], "hpcbridge (prototype)": []}
    for r in range(args.repeats):
        for name in rows:
            if name == "raw":
                out: dict[str, Any] = B.run_raw(args.n)
            else:
                SlurmBackend.submit_script = (  # type: ignore[method-assign]
                    submit_script_fewer_forks if "prototype" in name else ORIGINAL
                )
                out = B.run_hpcbridge(args.n)
            SlurmBackend.submit_script = ORIGINAL  # type: ignore[method-assign]
            C.cleanup_jobs(out["job_ids"])
            C.remove_lab_dirs(out.get("_work_dirs", []))
            if out["errors"]:
                C.die(f"{name}: {out['errors']} submission errors")
            rows[name].append(out["seconds"])
            print(f"  {name:<28} run {r + 1}: {out['seconds']:.3f} s", flush=True)
    raw = rows["raw"]
    table = C.print_table(
        ["contender", "N", "median s", "per-job ms", "x raw (paired median)"],
        [[k, args.n, C.median(v), C.median(v) / args.n * 1000,
          C.median([x / b for x, b in zip(v, raw, strict=True)])] for k, v in rows.items()],
        title=f"submission script prototype: median of {args.repeats} interleaved runs",
    )  # fmt: skip
    C.write_json("proto-submit-script", {"n": args.n, "runs": rows, "table": table}, args.json_path)


if __name__ == "__main__":
    main()
