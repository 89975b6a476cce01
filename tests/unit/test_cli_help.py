"""Every CLI command documents itself, and the README documents every command and API name."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import hpcbridge
from hpcbridge.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _walk(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, group)]
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            out.extend(_walk(group.commands[name], (*path, name)))
    return out


COMMANDS = _walk(cli)
COMMAND_PATHS = [p for p, _ in COMMANDS if p]


def test_the_walk_finds_the_known_commands():
    paths = {" ".join(p) for p in COMMAND_PATHS}
    assert {"submit", "tasks", "tasks list", "tasks info", "tasks kill", "tasks wait",
            "tasks meta", "tasks download", "logs", "sync", "daemon", "config"} <= paths  # fmt: skip


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "hpcbridge")
def test_help_exits_0_with_text(path, monkeypatch, tmp_path):
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    cmd = dict(COMMANDS)[path]
    assert (cmd.help or "").strip(), f"`{' '.join(path)}` has no help text"
    assert cmd.get_short_help_str().strip()
    res = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output
    assert cmd.help.strip().splitlines()[0].strip()[:30] in " ".join(res.output.split())
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden and param.name != "help":
            assert (param.help or "").strip(), f"option {param.opts} of `{' '.join(path)}` has no help"
    # -h works too
    assert CliRunner().invoke(cli, [*path, "-h"]).exit_code == 0


def test_no_stray_files_from_help(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    for path, _ in COMMANDS:
        CliRunner().invoke(cli, [*path, "--help"])
    assert not (tmp_path / "r.db").exists(), "--help must not open the registry"


def _readme() -> str:
    if not README.exists():
        pytest.fail(f"{README} does not exist")
    return README.read_text(encoding="utf-8")


_README_MISSING = not README.exists()


def test_readme_mentions_every_command_path():
    text = " ".join(_readme().split())
    missing = [" ".join(p) for p in COMMAND_PATHS if not re.search(r"\b" + re.escape(" ".join(p)) + r"\b", text)]
    assert not missing, f"README.md does not mention: {missing}"


def test_readme_mentions_every_public_name():
    text = _readme()
    missing = [n for n in hpcbridge.__all__ if not re.search(r"\b" + re.escape(n) + r"\b", text)]
    assert not missing, f"README.md does not mention: {missing}"
