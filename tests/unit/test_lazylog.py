"""lazylog: a logger that imports logging on first use, and the CLI's deferred set-up (a
command that only reads the registry configures logging just before hpcbridge's first
record; every other command at once)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge import lazylog
from hpcbridge.registry import Registry
from hpcbridge.registry_file import MIGRATION_NAMES


@pytest.fixture(autouse=True)
def _no_pending_setup():
    yield
    lazylog.set_up_when_used(lambda: None)
    lazylog.set_up_now()


def test_the_set_up_runs_once_before_the_first_record(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    log = lazylog.get_logger("hpcbridge.test_lazylog")
    lazylog.set_up_when_used(lambda: calls.append("setup"))
    assert calls == []  # nothing logged yet: nothing configured
    with caplog.at_level(logging.INFO, logger="hpcbridge.test_lazylog"):
        log.info("one %s", "record")
        log.warning("two")
    assert calls == ["setup"]
    assert [r.getMessage() for r in caplog.records] == ["one record", "two"]
    assert log.name == "hpcbridge.test_lazylog" and log.isEnabledFor(logging.WARNING)
    lazylog.set_up_now()
    assert calls == ["setup"]  # once


def test_set_up_now_runs_the_pending_set_up() -> None:
    calls: list[int] = []
    lazylog.set_up_when_used(lambda: calls.append(1))
    lazylog.set_up_now()
    lazylog.set_up_now()
    assert calls == [1]


PROBE = """
import json, sys
from hpcbridge.cli import main
sys.argv = ["hpcbridge", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
handlers = []
if "logging" in sys.modules:
    import logging
    handlers = [type(h).__name__ for h in logging.getLogger().handlers]
print(json.dumps({"logging": "logging" in sys.modules, "handlers": handlers}), file=sys.stderr)
"""


def _run(tmp_path: Path, config: str, *args: str, older: bool = False) -> tuple[str, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    env["HPCBRIDGE_DB"] = str(tmp_path / "r.db")
    cfg = tmp_path / "c.toml"
    cfg.write_text(config, encoding="utf-8")
    env["HPCBRIDGE_CONFIG"] = str(cfg)
    # A registry that exists already (migrated), as for every command after the first; or
    # (older) one written before the last migration, which the next command applies.
    Registry(tmp_path / "r.db").close()
    if older:
        with sqlite3.connect(tmp_path / "r.db") as conn:
            conn.execute("DELETE FROM _migrations WHERE name = ?", (MIGRATION_NAMES[-1],))
            conn.execute("DROP TABLE outbox")
        conn.close()
    res = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True)
    *lines, last = res.stderr.strip().splitlines()
    return "\n".join(lines), json.loads(last)


def test_a_listing_that_logs_nothing_never_imports_logging(tmp_path: Path) -> None:
    _, got = _run(tmp_path, "", "tasks", "list")
    assert got == {"logging": False, "handlers": []}


def test_a_listing_that_logs_gets_the_cli_set_up(tmp_path: Path) -> None:
    # A listing reads neither the config nor (for a registry of the current schema) through
    # Registry, so nothing logs; an older registry goes through Registry, which migrates it
    # and logs that: the CLI's set-up runs before that first record.
    _, got = _run(tmp_path, "", "tasks", "list", older=True)
    assert got == {"logging": True, "handlers": ["StreamHandler"]}
    err, got = _run(tmp_path, "", "-vv", "tasks", "list", older=True)
    line = next(ln for ln in err.splitlines() if "applied migration" in ln)
    # basicConfig's format ("%(asctime)s %(levelname)s %(name)s: %(message)s"), not bare text
    assert " DEBUG hpcbridge.registry: " in line and line[:4].isdigit()
    assert MIGRATION_NAMES[-1] in line


def test_any_other_command_configures_logging_at_once(tmp_path: Path) -> None:
    _, got = _run(tmp_path, "", "config")
    assert got == {"logging": True, "handlers": ["StreamHandler"]}
