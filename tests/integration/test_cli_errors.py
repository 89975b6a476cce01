"""Bad SSH situations seen from the CLI: a clean error, nothing lost, nothing submitted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcbridge", *args], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip


def _config(lab_config: Path, tmp_path: Path, **overrides: str) -> Path:
    text = lab_config.read_text()
    for key, value in overrides.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} ")]
        text = "\n".join(lines) + f"\n{key} = {value}\n"
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def _env(cfg: Path, tmp_path: Path) -> dict[str, str]:
    return {"HPCBRIDGE_CONFIG": str(cfg), "HPCBRIDGE_DB": str(tmp_path / "r.db"), "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path)}  # fmt: skip


def test_unknown_host_key_refused_clearly(lab_config: Path, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    env = _env(_config(lab_config, tmp_path, known_hosts=json.dumps(str(empty))), tmp_path)
    res = _run(env, "submit", "--cluster", "lab", "--", "true")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("error: ") and "host key" in first.lower()
    assert "127.0.0.1" in res.stderr and "hint:" in res.stderr
    assert empty.read_text() == ""  # nothing accepted behind the user's back
    listed = json.loads(_run(env, "tasks", "list", "--json").stdout)
    assert [t["state"] for t in listed] == ["created"]  # registered, not lost, not submitted
    assert json.loads(_run(env, "tasks", "info", listed[0]["id"], "--json").stdout)["attempts"] == []


def test_wrong_key_is_an_auth_error(lab_config: Path, tmp_path: Path) -> None:
    key = tmp_path / "id_other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = _env(_config(lab_config, tmp_path, identity_file=json.dumps(str(key))), tmp_path)
    res = _run(env, "submit", "--cluster", "lab", "--", "true")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "authenticat" in res.stderr.lower()


def test_connection_refused_keeps_task_for_later(lab_config: Path, tmp_path: Path) -> None:
    env = _env(_config(lab_config, tmp_path, port="1", connect_timeout="3"), tmp_path)
    res = _run(env, "submit", "--cluster", "lab", "--", "true")
    assert res.returncode == 0, res.stderr
    task_id = res.stdout.strip().splitlines()[-1]
    assert "not yet submitted" in res.stderr
    sync = _run(env, "sync")
    assert sync.returncode == 1 and "unreachable" in sync.stderr and "Traceback" not in sync.stderr
    info = json.loads(_run(env, "tasks", "info", task_id, "--json").stdout)
    assert info["state"] == "created"
    assert any("unreachable" in e["detail"] for e in info["events"])
