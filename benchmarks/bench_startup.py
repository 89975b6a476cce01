#!/usr/bin/env python3
"""CLI start-up: ``python -m hpcbridge tasks list`` as a process against the floor its
dependencies set, ``python -c 'import click, sqlite3'``, measured in the same run.

    python benchmarks/bench_startup.py               # 40 interleaved rounds
    python benchmarks/bench_startup.py --rounds 100 --json results/startup.json
    python benchmarks/bench_startup.py --before 24f1482   # also an earlier commit's tasks list
    python benchmarks/bench_startup.py --editable    # in this (development) venv instead

Each round runs the baseline and every contender once, in a shuffled order, with the same
interpreter, so load spikes hit both sides of a ratio alike; the ratio reported is the
median of the per-round ratios, next to each side's median wall time. The registry holds
20 tasks (pre-migrated, so no round pays for a migration) and a config file with one Slurm
cluster is in effect (``tomllib`` and the config's code are on the path, as for a real
user); nothing talks to a cluster. No lab needed.

What is measured, by default: a regular install, as ``pip install hpcbridge`` leaves it. A
fresh venv (``python -m venv --without-pip``, same base interpreter) gets the working
tree's ``hpcbridge/`` copied into its site-packages, where a wheel puts it, and one ``.pth``
line naming this venv's site-packages for the dependencies (click...). The ``.pth`` files
*in* that directory are not run from there, so neither side pays for the development
install's ``__editable__`` finder (it imports pathlib, urllib.parse, fnmatch... at every
interpreter start-up, the baseline's too) nor setuptools' distutils hack. Baseline and
contenders all run with that venv's python. ``--editable`` measures in this venv as it is
(``sys.executable``, the editable install, both sides paying for its finder).

``--before COMMIT`` adds that commit's ``tasks list`` as a contender (its ``hpcbridge/`` is
extracted with ``git archive``, installed the same way in a venv of its own, or with
``--editable`` put first on ``PYTHONPATH``), so a change is measured against what it
replaced in the same interleaved rounds.

Also printed: the modules the ``tasks list`` process imports beyond the baseline's, from
``python -X importtime`` (the heaviest first), which is where start-up time goes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

TARGET = 1.3

CONFIG = """\
default_cluster = "hpc"

[clusters.hpc]
backend = "slurm"
transport = "ssh"
host = "login.example.org"
user = "alice"
work_dir = "/scratch/alice/hpcbridge"
"""


CONSOLE_SCRIPT = """\
# -*- coding: utf-8 -*-
import re
import sys
from hpcbridge.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def prepare(tmp: Path) -> dict[str, str]:
    """A registry with 20 tasks and a config file; the environment that points at them."""
    # Without PYTHONDONTWRITEBYTECODE (set in some CI images): a real install has .pyc
    # files, and the warm-up round writes them here, so no round pays for compiling.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HPCBRIDGE_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    env.update(HPCBRIDGE_DB=str(tmp / "registry.db"), HPCBRIDGE_CONFIG=str(tmp / "config.toml"))
    (tmp / "config.toml").write_text(CONFIG, encoding="utf-8")
    from hpcbridge.lifecycle import TaskState
    from hpcbridge.models import Task, TaskSpec, new_task_id
    from hpcbridge.registry import Registry

    reg = Registry(tmp / "registry.db")
    now = time.time()
    tasks = [Task(id=new_task_id(now + i), spec=TaskSpec(command=("python3", "sim.py", str(i)),
                  name=f"sim-{i}", cluster="hpc"), state=TaskState.CREATED,
                  metadata={"alpha": str(i % 4)}, created_at=now + i, updated_at=now + i)
             for i in range(20)]  # fmt: skip
    reg.insert_tasks(tasks, source="bench")
    reg.close()
    return env


def regular_install(venv: Path, tree: Path) -> str:
    """A venv whose site-packages holds ``tree/hpcbridge`` as a wheel lays it out, and the
    dependencies through one ``.pth`` path line; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    shutil.copytree(tree / "hpcbridge", site / "hpcbridge", ignore=shutil.ignore_patterns("__pycache__"))
    # The console script, as pip writes it for `[project.scripts] hpcbridge = hpcbridge.cli:main`.
    script = venv / "bin" / "hpcbridge"
    script.write_text(f"#!{py}\n{CONSOLE_SCRIPT}", encoding="utf-8")
    script.chmod(0o755)
    return str(py)


def run_once(argv: list[str], env: dict[str, str], extra_env: dict[str, str] | None = None) -> float:
    if extra_env:
        env = {**env, **extra_env}
    t0 = time.perf_counter()
    # cwd: the registry's dir, not the checkout: `python -m` puts the cwd first on sys.path.
    res = subprocess.run(argv, env=env, cwd=Path(env["HPCBRIDGE_DB"]).parent, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        C.die(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return dt


def imports(argv: list[str], env: dict[str, str]) -> dict[str, int]:
    """Module -> cumulative import time (us) of the top-level imports, from -X importtime."""
    res = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True,
                         cwd=Path(env["HPCBRIDGE_DB"]).parent)  # fmt: skip
    out: dict[str, int] = {}
    for line in res.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line, or a warning
        out[parts[2].strip()] = int(parts[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    ap.add_argument("--json", dest="json_path", help="write the results here too")
    ap.add_argument("--before", metavar="COMMIT", help="also time this commit's tasks list")
    ap.add_argument("--editable", action="store_true",
                    help="measure in this venv (the editable install) instead of a regular install")  # fmt: skip
    args = ap.parse_args()
    extra: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="hb-startup-") as d:
        env = prepare(Path(d))
        py = sys.executable if args.editable else regular_install(Path(d) / "venv", C.ROOT)
        contenders: dict[str, list[str]] = {
            "baseline: python -c 'import click, sqlite3'": [py, "-c", "import click, sqlite3"],
            "python -m hpcbridge tasks list": [py, "-m", "hpcbridge", "tasks", "list"],
            "python -m hpcbridge --version": [py, "-m", "hpcbridge", "--version"],
        }
        if not args.editable:  # what a user types: the installed script (no runpy, unlike -m)
            contenders["hpcbridge tasks list (console script)"] = [str(Path(py).parent / "hpcbridge"), "tasks", "list"]
        base_name = next(iter(contenders))
        if args.before:
            tree = Path(d) / "before"
            tree.mkdir()
            archive = subprocess.run(["git", "-C", str(C.ROOT), "archive", args.before, "hpcbridge"],
                                     capture_output=True, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            name = f"python -m hpcbridge tasks list at {args.before}"
            if args.editable:
                contenders[name] = [py, "-m", "hpcbridge", "tasks", "list"]
                extra[name] = {"PYTHONPATH": str(tree)}
            else:
                contenders[name] = [regular_install(Path(d) / "venv-before", tree), "-m", "hpcbridge", "tasks", "list"]
        for name, argv in contenders.items():  # warm the page cache and the .pyc files
            run_once(argv, env, extra.get(name))
        times: dict[str, list[float]] = {k: [] for k in contenders}
        ratios: dict[str, list[float]] = {k: [] for k in contenders}
        load = os.getloadavg()
        for _ in range(args.rounds):
            order = list(contenders)
            random.shuffle(order)
            got = {name: run_once(contenders[name], env, extra.get(name)) for name in order}
            for name, t in got.items():
                times[name].append(t)
                ratios[name].append(t / got[base_name])
        base_mods = imports(contenders[base_name], env)
        list_mods = imports(contenders["python -m hpcbridge tasks list"], env)
    rows = [[name, f"{1000 * statistics.median(times[name]):.1f}", f"{statistics.median(ratios[name]):.2f}"]
            for name in contenders]  # fmt: skip
    C.print_table(["process", "median ms", "x baseline (median of paired ratios)"], rows,
                  title=f"{'editable (this venv)' if args.editable else 'regular install'}, {args.rounds} "
                        "interleaved rounds, load average before: "
                        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    ratio = statistics.median(ratios["python -m hpcbridge tasks list"])
    print(f"\ntasks list / baseline = {ratio:.2f} (target <= {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}")
    extra_mods = {m: us for m, us in list_mods.items() if m not in base_mods}
    heavy = sorted(extra_mods.items(), key=lambda kv: -kv[1])[:15]
    print(f"\n{len(extra_mods)} modules beyond the baseline's; heaviest (cumulative, one -X importtime run):")
    for m, us in heavy:
        print(f"  {us / 1000:7.1f} ms  {m}")
    result: dict[str, Any] = {
        "machine": C.machine_info(), "rounds": args.rounds, "load_before": load,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
        "times": times, "extra_modules": sorted(extra_mods), "before": args.before,
        "install": "editable" if args.editable else "regular",
    }  # fmt: skip
    C.write_json("startup", result, args.json_path)


if __name__ == "__main__":
    main()
