"""Shell completion through the real CLI in a subprocess, as a shell calls it
(``_HPCBRIDGE_COMPLETE=bash_complete COMP_WORDS=... COMP_CWORD=...``, and zsh/fish), against
a registry with tasks; and bash itself running the script ``bash_source`` prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge.service import Service

HPCB = [sys.executable, "-m", "hpcbridge"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config with two clusters and a registry with tasks in projects 'demo' and 'other'."""
    root = tmp_path_factory.mktemp("complete")
    (root / "config.toml").write_text(
        'default_cluster = "here"\n[clusters.here]\nbackend = "local"\n'
        '[clusters.hpc]\nbackend = "slurm"\ntransport = "ssh"\nhost = "login.example.org"\n'
    )
    svc = Service.open(root / "config.toml", root / "registry.db", source="test")
    try:
        ids = [svc.submit(command=["true"], project="demo", name=f"run{i}").id for i in range(3)]
        ids.append(svc.submit(command=["true"], project="other", name="x").id)
        svc.wait(ids, timeout=60)
    finally:
        svc.close()
    (root / "ids").write_text("\n".join(ids))
    return root


def ids_of(home: Path) -> list[str]:
    return (home / "ids").read_text().split()


def complete(home: Path, shell: str, words: str, cword: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    e.update(HPCBRIDGE_CONFIG=str(home / "config.toml"), HPCBRIDGE_DB=str(home / "registry.db"),
             _HPCBRIDGE_COMPLETE=f"{shell}_complete", COMP_WORDS=words,
             COMP_CWORD=cword if cword is not None else str(len(words.split(" ")) - 1))  # fmt: skip
    e.update(env)
    res = subprocess.run(HPCB, capture_output=True, text=True, env=e, timeout=30)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return res


def bash_values(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split(",", 1)[1] for line in res.stdout.splitlines() if line]


def test_task_ids_newest_first_and_unique_prefixes(home: Path) -> None:
    ids = ids_of(home)
    everything = bash_values(complete(home, "bash", "hpcbridge tasks info "))
    assert everything == sorted(ids, reverse=True)
    # the shortest prefix that singles out each id completes to exactly that id
    for tid in (ids[0], ids[-1]):  # the oldest and the newest (each call is a CLI start)
        n = next(n for n in range(1, len(tid) + 1) if sum(o.startswith(tid[:n]) for o in ids) == 1)
        assert bash_values(complete(home, "bash", f"hpcbridge tasks info {tid[:n]}")) == [tid]
    assert bash_values(complete(home, "bash", "hpcbridge logs zzz")) == []
    assert bash_values(complete(home, "bash", "hpcbridge logs la")) == ["last"]
    # nargs=-1 arguments complete every word
    assert set(bash_values(complete(home, "bash", f"hpcbridge tasks kill {ids[0]} "))) == set(ids)


def test_projects_clusters_and_states(home: Path) -> None:
    assert bash_values(complete(home, "bash", "hpcbridge projects show ")) == ["demo", "other"]
    assert bash_values(complete(home, "bash", "hpcbridge tasks list --project d")) == ["demo"]
    assert bash_values(complete(home, "bash", "hpcbridge tasks list -c ")) == ["here", "hpc", "local"]
    assert bash_values(complete(home, "bash", "hpcbridge submit --cluster h")) == ["here", "hpc"]
    assert bash_values(complete(home, "bash", "hpcbridge submit --project o")) == ["other"]
    assert bash_values(complete(home, "bash", "hpcbridge clusters check hp")) == ["hpc"]
    assert bash_values(complete(home, "bash", "hpcbridge sync --cluster l")) == ["local"]
    assert bash_values(complete(home, "bash", "hpcbridge tasks list --state ru")) == ["running"]


def test_zsh_and_fish_get_help_text(home: Path) -> None:
    ids = ids_of(home)
    zsh = complete(home, "zsh", f"hpcbridge tasks info {ids[0]}").stdout.splitlines()
    assert zsh[:2] == ["plain", ids[0]] and zsh[2].startswith("succeeded run0")
    fish = complete(home, "fish", "hpcbridge tasks list -c ", cword="").stdout.splitlines()
    assert fish[0] == "plain,here\tlocal/local (default)" and "plain,hpc\tslurm/ssh" in fish
    # fish passes the line up to the cursor and, apart, the token being completed
    fish_ids = complete(home, "fish", f"hpcbridge logs {ids[-1][:-1]}", cword=ids[-1][:-1]).stdout.splitlines()
    assert fish_ids == [f"plain,{ids[-1]}\tsucceeded x"]


def test_broken_config_or_registry_completes_nothing_and_prints_nothing(home: Path, tmp_path: Path) -> None:
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("this is [not toml")
    res = complete(home, "bash", "hpcbridge tasks list -c ", HPCBRIDGE_CONFIG=str(bad_cfg))
    assert bash_values(res) == ["here"]  # the one cluster the registry has tasks on; no traceback
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    for words in ("hpcbridge tasks info ", "hpcbridge projects show ", "hpcbridge tasks list -c x"):
        assert bash_values(complete(home, "bash", words, HPCBRIDGE_DB=str(garbage),
                                    HPCBRIDGE_CONFIG=str(bad_cfg))) == []  # fmt: skip
    missing = tmp_path / "none" / "registry.db"
    assert bash_values(complete(home, "bash", "hpcbridge tasks info ", HPCBRIDGE_DB=str(missing))) == []
    assert not missing.parent.exists()  # completion never creates a registry


def test_the_db_option_on_the_command_line_is_used(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    words = f"hpcbridge --db {empty} tasks info "
    assert bash_values(complete(home, "bash", words)) == []
    words = f"hpcbridge --db {home / 'registry.db'} tasks info "
    assert len(bash_values(complete(home, "bash", words, HPCBRIDGE_DB=str(empty)))) == 4


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _hpcbridge_completion hpcbridge"),
    ("zsh", "#compdef hpcbridge"),
    ("fish", "complete --no-files --command hpcbridge"),
])  # fmt: skip
def test_source_scripts(shell: str, marker: str) -> None:
    env = dict(os.environ, _HPCBRIDGE_COMPLETE=f"{shell}_source")
    res = subprocess.run(HPCB, capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0 and marker in res.stdout, res.stdout + res.stderr


def in_shell(home: Path, tmp_path: Path, argv: list[str], script: str) -> list[str]:
    """Run ``script`` in a real shell with ``hpcbridge`` on PATH; its output lines."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (scripts/test installs it)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "hpcbridge"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m hpcbridge \"$@\"\n")
    exe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCBRIDGE_")}
    env.update(PATH=f"{bindir}:{env.get('PATH', '')}", HPCBRIDGE_CONFIG=str(home / "config.toml"),
               HPCBRIDGE_DB=str(home / "registry.db"), HOME=str(tmp_path))  # fmt: skip
    res = subprocess.run([*argv, script], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout + res.stderr
    return res.stdout.splitlines()


def test_bash_itself_completes_a_prefix(home: Path, tmp_path: Path) -> None:
    # The rc-file line of the README, then what bash does on TAB: call the function.
    tid = ids_of(home)[0]
    script = ('eval "$(_HPCBRIDGE_COMPLETE=bash_source hpcbridge)"\n'
              f"COMP_WORDS=(hpcbridge tasks info {tid[:-1]}); COMP_CWORD=3\n"
              '_hpcbridge_completion hpcbridge\nprintf "%s\\n" "${COMPREPLY[@]}"\n')  # fmt: skip
    assert in_shell(home, tmp_path, ["bash", "--norc", "-c"], script) == [tid]


def test_fish_itself_completes(home: Path, tmp_path: Path) -> None:
    # The README's config.fish line, then fish's own `complete -C` (what TAB shows).
    tid = ids_of(home)[1]
    script = ("_HPCBRIDGE_COMPLETE=fish_source hpcbridge | source\n"
              f'complete -C "hpcbridge tasks info {tid[:-1]}"\ncomplete -C "hpcbridge projects show "\n')  # fmt: skip
    assert in_shell(home, tmp_path, ["fish", "--no-config", "-c"], script) == [
        f"{tid}\tsucceeded run1", "demo", "other"]


def test_zsh_itself_runs_the_completion_function(home: Path, tmp_path: Path) -> None:
    # The README's .zshrc line after compinit, then the function zsh calls on TAB, with
    # words/CURRENT set as zsh sets them; only the display builtins print instead.
    tid = ids_of(home)[2]
    script = ('autoload -U compinit && compinit -u -D\n'
              'eval "$(_HPCBRIDGE_COMPLETE=zsh_source hpcbridge)"\n'
              '_describe() { print -rl -- "${(@P)3}"; }\n'
              'compadd() { print -rl -- "${(@P)${@[-1]}}"; }\n'
              f"words=(hpcbridge tasks info {tid[:-1]}); CURRENT=4; _hpcbridge_completion\n"
              'words=(hpcbridge projects show ""); CURRENT=4; _hpcbridge_completion\n')  # fmt: skip
    assert in_shell(home, tmp_path, ["zsh", "-f", "-c"], script) == [f"{tid}:succeeded run2", "demo", "other"]
