"""``hpcbridge clusters ...``: list the configured clusters, check one end to end (the doctor),
and add one from an ``~/.ssh/config`` alias.

The doctor (and paramiko with it) is imported inside the commands: ``hpcbridge tasks list``
must not pay for it.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_common import EXIT_ERROR, Group
from .cli_complete import complete_clusters
from .config import ClusterConfig, default_config_path, load_config, parse_config
from .errors import ConfigError, UsageError

if TYPE_CHECKING:
    from .doctor import ClusterReport

MARK = {"ok": "ok", "fail": "FAIL", "skip": "skip"}


@click.group(cls=Group)
def clusters() -> None:
    """Configured clusters: list them, check one end to end, add one from ~/.ssh/config."""


def _config_path(ctx: click.Context) -> str | None:
    path: str | None = ctx.find_root().obj.get("config")
    return path


def _where(c: ClusterConfig) -> str:
    if c.transport != "ssh":
        return "this machine"
    return f"{c.user + '@' if c.user else ''}{c.host}{':' + str(c.port) if c.port else ''}"


@clusters.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the configured clusters (the default one marked with *)."""
    cfg = load_config(_config_path(ctx))
    rows = [(n, c) for n, c in sorted(cfg.clusters.items())]
    if as_json:
        click.echo(json.dumps([{
            "name": n, "default": n == cfg.default_cluster, "backend": c.backend,
            "transport": c.transport, "where": _where(c), "partition": c.defaults.partition,
            "work_dir": c.work_dir,
        } for n, c in rows], indent=2))  # fmt: skip
        return
    click.echo(f"config file: {cfg.path or '(none; built-in local cluster)'}")
    table = [("*" if n == cfg.default_cluster else " ") + n for n, _ in rows], \
        [f"{c.backend}/{c.transport}" for _, c in rows], [_where(c) for _, c in rows], \
        [c.defaults.partition or "-" for _, c in rows], [c.work_dir for _, c in rows]
    widths = [max(len(v) for v in col) for col in table]
    for cells in zip(*table, strict=True):
        click.echo("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip())


def _print_report(report: ClusterReport) -> None:
    head = f"cluster {report.cluster}" + (f" ({report.description})" if report.description else "")
    click.echo(head)
    for c in report.checks:
        click.echo(f"  {MARK[c.status]:<4}  {c.name:<12}  {c.detail}")
        if c.fix:
            click.echo(f"  {'':<4}  {'':<12}  fix: {c.fix}")


@clusters.command("check")
@click.argument("name", required=False, shell_complete=complete_clusters)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def check_cmd(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Check a cluster (default: every configured one) end to end: config, host name, TCP,
    host key, login, Slurm commands and version, accounting, partitions, limits
    (MaxArraySize, MaxSubmitJobs, associations), work dir, clock, command budget. Each check
    says ok, FAIL (with the fix) or skip (with why). Exit status 1 if any check failed."""
    from .doctor import check_config_file

    reports = check_config_file(_config_path(ctx), [name] if name else [])
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for i, r in enumerate(reports):
            if i:
                click.echo("")
            _print_report(r)
    failed = sum(len(r.failed) for r in reports)
    if failed:
        if not as_json:
            click.echo(f"{failed} check(s) failed", err=True)
        ctx.exit(EXIT_ERROR)


# ---------------------------------------------------------------------------- add


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes (\\" \\\\ \\n \\uXXXX) are all valid TOML ones."""
    return json.dumps(value, ensure_ascii=False)


def cluster_entry(name: str, values: dict[str, Any]) -> str:
    lines = [f"[clusters.{name}]"]
    for key, value in values.items():
        if value is None:
            continue
        rendered = toml_string(value) if isinstance(value, str) else (
            "true" if value is True else "false" if value is False else str(value))
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def append_entry(path: Path, entry: str, *, default: str | None = None) -> None:
    """Append ``entry`` to the config file (created with ``default_cluster = default`` when
    new), leaving every byte before it as it was; validated by parsing the result first and
    written atomically (temporary file + rename)."""
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old is None:
        new = (f"default_cluster = {toml_string(default)}\n\n" if default else "") + entry
    else:
        sep = "" if not old or old.endswith("\n\n") else "\n" if old.endswith("\n") else "\n\n"
        new = old + sep + entry
    try:
        parse_config(tomllib.loads(new), path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: adding the entry would make the file invalid TOML: {exc}",
                          hint="fix the file by hand (is [clusters] an inline table?)") from None  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new)
        if old is not None:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _choose_partition(report: ClusterReport, given: str | None, yes: bool) -> str | None:
    names = [p.name for p in report.partitions]
    if given:
        if names and given not in names:
            raise UsageError(f"partition {given!r} is not one of the cluster's: {', '.join(names)}")
        return given
    if not names:
        return None
    default = next((p.name for p in report.partitions if p.default), names[0])
    if yes:
        return default
    shown = ", ".join(f"{p.name}{'' if p.available else ' (down)'}" for p in report.partitions)
    click.echo(f"partitions: {shown}")
    choice: str = click.prompt("partition for this cluster's tasks", default=default,
                               type=click.Choice(names), show_choices=False)  # fmt: skip
    return choice


@clusters.command("add")
@click.argument("name")
@click.option("--host", "alias", required=True, help="Host alias from ~/.ssh/config (or a host name).")
@click.option("--partition", "-p", help="Partition for tasks (default: ask, offering those found).")
@click.option("--work-dir", help="Remote base directory of task work dirs (default: ~/hpcbridge).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask: take the cluster's default partition.")
@click.option("--force", is_flag=True, help="Write the entry even if some checks failed.")
@click.pass_context
def add_cmd(ctx: click.Context, name: str, alias: str, partition: str | None, work_dir: str | None,
            yes: bool, force: bool) -> None:  # fmt: skip
    """Add a Slurm cluster reached over SSH: reads ~/.ssh/config for ALIAS (HostName, User,
    Port, IdentityFile, ProxyJump), runs every check of `clusters check`, offers the
    partitions it found, and appends a [clusters.NAME] entry to the config file (other
    content is kept as it is; a new file gets default_cluster = NAME)."""
    from .doctor import check_cluster
    from .transport.sshconfig import load_ssh_config

    explicit = _config_path(ctx)
    path = Path(explicit).expanduser() if explicit else default_config_path()
    existing = load_config(path) if path.exists() else None
    if existing is not None and name in existing.clusters:
        raise UsageError(f"cluster {name!r} already exists in {path}",
                         hint="pick another name, or edit the file by hand")  # fmt: skip
    values: dict[str, Any] = {"backend": "slurm", "transport": "ssh", "host": alias}
    ssh_cfg = load_ssh_config(None)
    opts = dict(ssh_cfg.lookup(alias)) if ssh_cfg is not None else {}
    known = opts.get("userknownhostsfile")
    if isinstance(known, str) and known.split():
        values["known_hosts"] = known.split()[0]  # paramiko gives the option as one string
    if work_dir:
        values["work_dir"] = work_dir
    try:
        cluster = parse_config({"clusters": {name: values}}).cluster(name)
    except ConfigError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    report = check_cluster(cluster, config_path=str(path))
    _print_report(report)
    if report.failed and not force:
        raise UsageError(f"not added: {len(report.failed)} check(s) failed",
                         hint="fix what the checks say and run this again (or add --force)")  # fmt: skip
    values["partition"] = _choose_partition(report, partition, yes)
    append_entry(path, cluster_entry(name, values), default=name)
    load_config(path).cluster(name)  # what was written loads back
    click.echo(f"added cluster {name} to {path}")
