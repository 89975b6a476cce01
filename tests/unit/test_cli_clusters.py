"""The config-writing half of `clusters add` (append, keep every byte, validate, atomic) and
`clusters list`; the checks themselves: test_doctor.py, and against the lab
tests/integration/test_doctor.py."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge.cli import cli
from hpcbridge.cli_clusters import append_entry, cluster_entry, toml_string
from hpcbridge.config import load_config
from hpcbridge.errors import ConfigError

HOSTILE = ['a"b', "back\\slash", "line\nbreak", "tab\t", "ünïcødé ✓", "$(id) `x` 'q'", "#not a comment", "\x01"]


@pytest.mark.parametrize("value", HOSTILE)
def test_toml_string_round_trips(value: str) -> None:
    assert tomllib.loads(f"k = {toml_string(value)}")["k"] == value


def test_entry_appended_after_existing_content(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    original = '# mine\ndefault_cluster = "a"\n[clusters.a]\nbackend = "local"  # no newline at end'
    cfg.write_text(original)
    cfg.chmod(0o640)
    append_entry(cfg, cluster_entry("b", {"backend": "slurm", "transport": "ssh", "host": "x",
                                          "work_dir": "/scratch/it's \"here\"", "port": 2222,
                                          "partition": None}))  # fmt: skip
    text = cfg.read_text()
    assert text.startswith(original + "\n\n[clusters.b]\n")
    loaded = load_config(cfg)
    assert loaded.default_cluster == "a"
    b = loaded.cluster("b")
    assert (b.host, b.port, b.work_dir, b.defaults.partition) == ("x", 2222, "/scratch/it's \"here\"", None)
    assert cfg.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]  # no temporary file left


def test_a_new_file_gets_the_default_cluster(tmp_path: Path) -> None:
    cfg = tmp_path / "new" / "c.toml"
    append_entry(cfg, cluster_entry("hpc", {"backend": "slurm", "transport": "ssh", "host": "h"}), default="hpc")
    assert load_config(cfg).default_cluster == "hpc"


@pytest.mark.parametrize("content", [
    'clusters = { a = { backend = "local" } }\n',   # an inline table cannot be extended
    '[clusters.b]\nbackend = "local"\n',            # the name exists already
])  # fmt: skip
def test_an_entry_that_would_break_the_file_is_not_written(tmp_path: Path, content: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError):
        append_entry(cfg, cluster_entry("b", {"backend": "slurm", "transport": "ssh", "host": "x"}))
    assert cfg.read_text() == content


def test_clusters_list(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('default_cluster = "hpc"\n[clusters.hpc]\nbackend = "slurm"\ntransport = "ssh"\n'
                   'host = "login"\nuser = "me"\npartition = "short"\n')  # fmt: skip
    res = CliRunner().invoke(cli, ["--config", str(cfg), "clusters", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].split() == ["*hpc", "slurm/ssh", "me@login", "short", "~/hpcbridge"]
    assert lines[2].split() == ["local", "local/local", "this", "machine", "-", "~/hpcbridge"]
    data = json.loads(CliRunner().invoke(cli, ["--config", str(cfg), "clusters", "list", "--json"]).output)
    assert [(c["name"], c["default"], c["partition"]) for c in data] == [("hpc", True, "short"), ("local", False, None)]


def test_add_refuses_a_bad_name_or_an_existing_one_before_connecting(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clusters.hpc]\nbackend = "local"\n')
    res = CliRunner().invoke(cli, ["--config", str(cfg), "clusters", "add", "hpc", "--host", "x"])
    assert res.exit_code == 1 and "already exists" in res.output
    res = CliRunner().invoke(cli, ["--config", str(cfg), "clusters", "add", "b@d", "--host", "x"])
    assert res.exit_code == 1 and "error: " in res.output and "letters, digits" in res.output
    assert cfg.read_text() == '[clusters.hpc]\nbackend = "local"\n'


def test_check_of_a_broken_config_is_one_failed_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[clusters.x]\nbackend = 'pbs'\n")
    res = CliRunner().invoke(cli, ["--config", str(cfg), "clusters", "check"])
    assert res.exit_code == 1
    assert "FAIL  config" in res.output and "fix: allowed: ('local', 'slurm')" in res.output
    data = json.loads(CliRunner().invoke(cli, ["--config", str(cfg), "clusters", "check", "--json"]).stdout)
    assert data[0]["ok"] is False and data[0]["checks"][0]["status"] == "fail"
