"""Config parsing: defaults, every error names the file, key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcbridge.config import load_config
from hpcbridge.errors import ConfigError
from hpcbridge.lifecycle import TaskState


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HPCBRIDGE_CONFIG", raising=False)
    monkeypatch.delenv("HPCBRIDGE_CLUSTER", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hpcbridge.toml"
    p.write_text(text)
    return p


def test_no_file_means_builtin_local() -> None:
    cfg = load_config()
    assert cfg.default_cluster == "local"
    assert cfg.cluster(None).backend == "local"
    assert cfg.path is None


def test_example_config_parses() -> None:
    example = Path(__file__).parents[2] / "configs" / "hpcbridge.example.toml"
    cfg = load_config(example)
    assert "mycluster" in cfg.clusters
    c = cfg.clusters["mycluster"]
    assert c.backend == "slurm" and c.transport == "ssh"
    assert c.retry.max_attempts >= 1


def test_full_cluster(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
default_cluster = "hpc"
[clusters.hpc]
backend = "slurm"
transport = "ssh"
host = "login.example.org"
port = 2222
user = "me"
partition = "short"
time = "01:00:00"
cpus = 4
sbatch_options = ["--constraint=fast"]
setup = ["module load gcc"]
env = { OMP_NUM_THREADS = "4" }
[clusters.hpc.retry]
max_attempts = 5
retry_on = ["preempted", "node_failed", "timed_out"]
"""))
    c = cfg.cluster(None)
    assert c.name == "hpc" and c.port == 2222
    assert c.defaults.partition == "short" and c.defaults.cpus == 4
    assert c.defaults.sbatch_options == ("--constraint=fast",)
    assert c.setup == ("module load gcc",)
    assert c.retry.max_attempts == 5
    assert TaskState.TIMED_OUT in c.retry.retry_on
    assert "local" in cfg.clusters  # the built-in stays available


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[clusters.x]\nbackend = 'pbs'\n", "backend = 'pbs'"),
        ("[clusters.x]\nhots = 'a'\n", "unknown key 'hots'"),
        ("[clusters.x]\nbackend='slurm'\ntransport='ssh'\n", "needs host"),
        ("[clusters.x]\nport = 'twenty'\n", "port must be int"),
        ("[clusters.x]\nport = true\n", "port must be int"),
        ("default_cluster = 'nope'\n", "default_cluster = 'nope' names no cluster"),
        ("frobnicate = 1\n", "unknown top-level key"),
        ("[clusters.x]\n[clusters.x.retry]\nmax_attempts = 0\n", "max_attempts must be >= 1"),
        ("[clusters.x]\n[clusters.x.retry]\nretry_on = ['bad']\n", "unknown retry outcome 'bad'"),
        ("[clusters.x]\ncommand_timeout = -1\n", "command_timeout must be > 0"),
        ("[clusters.'a b']\n", "cluster names may use"),
        ("[clusters\n", "not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert needle in message
    assert str(path) in message


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_env_var_selects_file_and_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[clusters.a]\n[clusters.b]\n")
    monkeypatch.setenv("HPCBRIDGE_CONFIG", str(path))
    monkeypatch.setenv("HPCBRIDGE_CLUSTER", "b")
    cfg = load_config()
    assert cfg.path == path and cfg.default_cluster == "b"
    monkeypatch.setenv("HPCBRIDGE_CLUSTER", "zzz")
    with pytest.raises(ConfigError, match="HPCBRIDGE_CLUSTER='zzz'"):
        load_config()


def test_unknown_cluster_lists_known(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[clusters.a]\n"))
    with pytest.raises(ConfigError, match="known clusters: a, local"):
        cfg.cluster("b")


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(AttributeError):
        cfg.cluster(None).host = "x"  # type: ignore[misc]
