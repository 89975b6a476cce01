"""`hpcbridge tasks list` starts without the libraries it does not use: a correctness check of
what the process imports (the start-up *time* is measured in benchmarks/bench_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.models import Attempt, Task, TaskSpec, new_task_id
from hpcbridge.registry import Registry

# Drawing, notification, plotting and SSH libraries, the registry's migration library and
# what it drags in, and hpcbridge's own sync/submission machinery. Then what a listing
# reads without (a registry file of the current schema is read by listing.open_source into
# TaskRows): the service and the use cases over it, the slurm package, the notification
# rules' code, the backends' records, the other task subcommands, logging (lazylog:
# imported when something logs), click's completion machinery and shutil; the config (and
# tomllib), the runtime, the full registry with its schema and batch writes, the model's
# and the lifecycle's dataclasses (and the dataclasses module itself).
FORBIDDEN = ("textual", "apprise", "rich", "matplotlib", "paramiko", "numpy", "sqlite_utils",
             "psutil", "hpcbridge.cycle", "hpcbridge.submission", "hpcbridge.options",
             "hpcbridge.transport", "hpcbridge.backends.slurm", "hpcbridge.api",
             "hpcbridge.service", "hpcbridge.projects", "hpcbridge.slurm", "hpcbridge.backends",
             "hpcbridge.events", "hpcbridge.records", "hpcbridge.cli_task_actions", "logging",
             "click.shell_completion", "shutil", "tomllib", "hpcbridge.config", "hpcbridge.runtime",
             "hpcbridge.registry", "hpcbridge.registry_batch", "hpcbridge.schema", "hpcbridge.models",
             "hpcbridge.lifecycle", "dataclasses")  # fmt: skip
# The plain table reads no metadata or usage JSON: not even json is imported for it.
FORBIDDEN_IN_TABLE = ("json",)

PROBE = """
import sys
from hpcbridge.cli import main
sys.argv = ["hpcbridge", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
modules = sorted(sys.modules)  # before the probe's own json
import json
print(json.dumps({"code": code, "modules": modules}), file=sys.stderr)
"""


def _imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    env["HPCBRIDGE_DB"] = str(tmp_path / "r.db")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clusters.hpc]\nbackend = "slurm"\ntransport = "ssh"\nhost = "h"\n'
                   'work_dir = "/w"\n', encoding="utf-8")  # fmt: skip
    env["HPCBRIDGE_CONFIG"] = str(cfg)
    # A registry that exists already (migrated), as for every command after the first,
    # holding a task with metadata and the recorded usage of its attempt.
    reg = Registry(tmp_path / "r.db")
    now = time.time()
    task = Task(id=new_task_id(now), spec=TaskSpec(command=("true",), name="t", cluster="hpc", project="p"),
                state=TaskState.SUCCEEDED, metadata={"alpha": "1"}, created_at=now, updated_at=now,
                attempt_count=1, started_at=now, ended_at=now + 5)  # fmt: skip
    reg.insert_tasks([task], source="test")
    reg.add_attempt(Attempt(task_id=task.id, number=1, token="tok", state=TaskState.SUCCEEDED))
    reg.update_attempt(task.id, 1, {"usage": {"cpu_efficiency": 0.5, "mem_efficiency": 0.25, "core_hours": 1.0}})
    reg.close()
    res = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True)
    report = json.loads(res.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def _hits(modules: set[str], forbidden: tuple[str, ...] = FORBIDDEN) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("args", [("tasks", "list"), ("tasks", "list", "--usage", "--format", "csv"),
                                  ("tasks", "list", "--json", "--meta", "alpha=1", "--active")],
                         ids=" ".join)  # fmt: skip
def test_tasks_list_imports_no_heavy_library(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, modules = _imported(tmp_path, *args)
    assert code in (0, None)
    assert "hpcbridge.cli_tasks" in modules  # the probe really ran the command
    assert "hpcbridge.registry_read" in modules  # ... and read the registry file
    assert _hits(modules) == []
    if args == ("tasks", "list"):
        assert _hits(modules, FORBIDDEN_IN_TABLE) == []
    if "--usage" in args:
        assert "json" in modules  # the usage was decoded: the probe read it


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    # The check can fail: `submit --help` needs the option checks, which it must report.
    code, modules = _imported(tmp_path, "submit", "--help")
    assert code in (0, None)
    assert "hpcbridge.options" in _hits(modules)
