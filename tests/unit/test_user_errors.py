"""User mistakes are one ``error:`` line with a hint, never a traceback, and nothing is lost
(issue "truth", item 14): bad types in --from-file, an empty from-file, a config that is not
UTF-8, retry keys of the wrong type, unknown options in the Python API."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import hpcbridge
from hpcbridge.cli import cli
from hpcbridge.config import load_config
from hpcbridge.errors import ConfigError, UsageError
from hpcbridge.options import SubmitOptions


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


def assert_one_error_line(out: str, *needles: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), out
    assert all(not line.startswith("error: ") for line in lines[1:]), out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in lines[0], (needle, out)


@pytest.mark.parametrize("line, needle", [
    ('{"command": ["true"], "cpus": "4"}', "option 'cpus' must be an integer"),
    ('{"command": ["true"], "outputs": "a.txt"}', "option 'outputs' must be a list of strings"),
    ('{"command": ["true"], "metadata": {"a": 1}}', "option 'metadata' must be a mapping of strings"),
    ('{"command": ["true"], "requeue": "no"}', "option 'requeue' must be true or false"),
    ('{"command": ["true", 3]}', "option 'command' must be a list of strings"),
    ('{"command": ["true"], "colour": "red"}', "unknown task option(s) ['colour']"),
    ('["true"]', "a task must be a mapping of options"),
    ('{"command": ["true"], "retry_on": ["sometimes"]}', "unknown retry outcome(s) ['sometimes']"),
])  # fmt: skip
def test_from_file_wrong_types_are_one_line_naming_the_line(env: Path, line: str, needle: str) -> None:
    f = env / "t.jsonl"
    f.write_text('{"command": ["true"]}\n' + line + "\n", encoding="utf-8")
    code, out = run("submit", "--from-file", str(f))
    assert code == 1
    assert_one_error_line(out, needle, "t.jsonl:2")
    code, out = run("tasks", "list", "--json")
    assert out.strip() == "[]", "nothing is registered when one line is bad"


def test_an_empty_from_file_is_an_error(env: Path) -> None:
    f = env / "empty.jsonl"
    f.write_text("\n  \n", encoding="utf-8")
    code, out = run("submit", "--from-file", str(f))
    assert code == 1
    assert_one_error_line(out, "no tasks in the file")


def test_a_config_that_is_not_utf8_is_one_line(env: Path) -> None:
    cfg = env / "c.toml"
    cfg.write_bytes(b'default_cluster = "caf\xe9"\n')
    # `config` loads it (`tasks list` reads only the registry: test_listing_read)
    code, out = run("--config", str(cfg), "config")
    assert code == 1
    assert_one_error_line(out, "not UTF-8")


@pytest.mark.parametrize("key, value, needle", [
    ("slurm_requeue", '"no"', "slurm_requeue must be true or false"),
    ("max_attempts", "2.5", "max_attempts must be a whole number"),
    ("max_attempts", "true", "max_attempts must be a whole number"),
    ("backoff_seconds", '"5"', "backoff_seconds must be a number"),
    ("exclude_failed_nodes", "1", "exclude_failed_nodes must be true or false"),
])  # fmt: skip
def test_retry_keys_of_the_wrong_type(env: Path, key: str, value: str, needle: str) -> None:
    cfg = env / "c.toml"
    cfg.write_text(f'default_cluster = "local"\n[clusters.local]\n[clusters.local.retry]\n{key} = {value}\n',
                   encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError, match=needle):
        load_config(cfg)
    code, out = run("--config", str(cfg), "config")
    assert code == 1
    assert_one_error_line(out, needle)


def test_the_api_refuses_unknown_or_mistyped_options(env: Path) -> None:
    with pytest.raises(UsageError, match="unknown task option"):
        hpcbridge.submit(["true"], colour="red")
    with pytest.raises(UsageError, match="must be a list of strings"):
        hpcbridge.submit(["true"], outputs="a.txt")
    assert hpcbridge.list_tasks() == []


def test_every_submit_option_is_a_cli_option_and_an_api_keyword() -> None:
    """One source of truth: a field of SubmitOptions is reachable from the CLI and the API."""
    import dataclasses

    params = {p.name for p in cli.commands["submit"].params}
    for f in dataclasses.fields(SubmitOptions):
        if f.name in ("command", "script"):
            continue
        assert f.name in params, f"SubmitOptions.{f.name} has no `submit` option"
    SubmitOptions.from_mapping({f.name: None for f in dataclasses.fields(SubmitOptions)})
