"""`hpcbridge tasks list` starts without the libraries it does not use: a correctness check of
what the process imports (the start-up *time* is measured in benchmarks/bench_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Drawing, notification, plotting and SSH libraries, the registry's migration library and
# what it drags in, and hpcbridge's own sync/submission machinery. Then what a listing
# reads without (it opens config + registry through Runtime, cli_common.runtime): the
# service and the use cases over it, the slurm package, the notification rules' code, the
# backends' records, the other task subcommands, logging (lazylog: imported when something
# logs), click's completion machinery and shutil.
FORBIDDEN = ("textual", "apprise", "rich", "matplotlib", "paramiko", "numpy", "sqlite_utils",
             "psutil", "hpcbridge.cycle", "hpcbridge.submission", "hpcbridge.options",
             "hpcbridge.transport", "hpcbridge.backends.slurm", "hpcbridge.api",
             "hpcbridge.service", "hpcbridge.projects", "hpcbridge.slurm", "hpcbridge.backends",
             "hpcbridge.events", "hpcbridge.records", "hpcbridge.cli_task_actions", "logging",
             "click.shell_completion", "shutil")  # fmt: skip

PROBE = """
import json, sys
from hpcbridge.cli import main
sys.argv = ["hpcbridge", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    env["HPCBRIDGE_DB"] = str(tmp_path / "r.db")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clusters.hpc]\nbackend = "slurm"\ntransport = "ssh"\nhost = "h"\n'
                   'work_dir = "/w"\n', encoding="utf-8")  # fmt: skip
    env["HPCBRIDGE_CONFIG"] = str(cfg)
    # A registry that exists already (migrated), as for every command after the first.
    subprocess.run([sys.executable, "-m", "hpcbridge", "tasks", "list"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    res = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True)
    report = json.loads(res.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def _hits(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


@pytest.mark.parametrize("args", [("tasks", "list"), ("tasks", "list", "--usage", "--format", "csv")],
                         ids=" ".join)  # fmt: skip
def test_tasks_list_imports_no_heavy_library(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, modules = _imported(tmp_path, *args)
    assert code in (0, None)
    assert "hpcbridge.cli_tasks" in modules  # the probe really ran the command
    assert _hits(modules) == []


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    # The check can fail: `submit --help` needs the option checks, which it must report.
    code, modules = _imported(tmp_path, "submit", "--help")
    assert code in (0, None)
    assert "hpcbridge.options" in _hits(modules)
