"""Everything ``submit`` accepts, in one frozen dataclass: the single source of truth.

The Python API's keywords, each line of ``submit --from-file`` and the CLI's ``submit``
options are all derived from ``SubmitOptions``' fields (their ``metadata`` says the kind of
value and the help text), so a new option is added here and nowhere else. ``from_mapping``
is where unknown keys, wrong types and strings where lists belong fail, with one clear
message; ``build_spec`` turns valid options plus the cluster's defaults into a ``TaskSpec``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ClusterConfig, check_project_name
from .deps import format_after, parse_after
from .errors import ConfigError, UsageError
from .events import ON_STALL, parse_duration, parse_watch
from .lifecycle import RETRYABLE_NAMES, parse_retry_on
from .models import Resources, TaskSpec
from .paths import check_output_pattern
from .slurm import check_sbatch_options, check_signal

# Kinds of option value, and how they are checked.
STR, INT, BOOL, STR_LIST, STR_MAP = "str", "int", "bool", "list of str", "map of str to str"


_EMPTY = object()


def _opt(kind: str, help: str, default: Any = _EMPTY) -> Any:
    if default is not _EMPTY:
        return field(default=default, metadata={"kind": kind, "help": help})
    if kind == STR_LIST:
        return field(default=(), metadata={"kind": kind, "help": help})
    if kind == STR_MAP:
        return field(default_factory=dict, metadata={"kind": kind, "help": help})
    return field(default=None, metadata={"kind": kind, "help": help})


@dataclass(frozen=True)
class SubmitOptions:
    """One task as the user asks for it (before the cluster's defaults are applied)."""

    command: tuple[str, ...] = _opt(STR_LIST, "argv, run without a shell")
    script: str | None = _opt(STR, "a bash script body, instead of a command")
    cluster: str | None = _opt(STR, "Cluster name from the config (default: its default_cluster).")
    name: str | None = _opt(STR, "A name for the task.")
    project: str | None = _opt(STR, "Project the task belongs to (default: the config's default_project).")
    inputs: tuple[str, ...] = _opt(STR_LIST, "File or directory copied into the task's work dir (repeatable).")
    outputs: tuple[str, ...] = _opt(STR_LIST, "Glob (relative to the work dir) of outputs to bring back (repeatable).")
    metadata: Mapping[str, str] = _opt(STR_MAP, "Metadata key=value (repeatable).")
    env: Mapping[str, str] = _opt(STR_MAP, "Environment variable NAME=value for the job (repeatable).")
    time: str | None = _opt(STR, "Time limit, Slurm syntax (e.g. 10, 01:00:00).")
    cpus: int | None = _opt(INT, "CPUs per task.")
    mem: str | None = _opt(STR, "Memory, e.g. 500M or 4G.")
    partition: str | None = _opt(STR, "Slurm partition.")
    account: str | None = _opt(STR, "Slurm account.")
    qos: str | None = _opt(STR, "Slurm QOS.")
    gres: str | None = _opt(STR, "Generic resources, e.g. gpu:1.")
    signal: str | None = _opt(STR, "Checkpoint signal before the time limit, e.g. B:USR1@60.")
    sbatch_options: tuple[str, ...] = _opt(STR_LIST, "Extra sbatch option, e.g. --constraint=fast (repeatable).")
    max_attempts: int | None = _opt(INT, "Attempts allowed (resubmissions after preemption/node failure).")
    retry_on: tuple[str, ...] | None = _opt(
        STR_LIST, "Outcome that earns a new attempt (repeatable; default preempted + node_failed).",
        default=None,  # None: the cluster's policy; () retries nothing
    )
    requeue: bool | None = _opt(BOOL, "Let Slurm requeue the job itself.")
    exclude_failed_nodes: bool | None = _opt(BOOL, "Exclude a failed node from the next attempt.")
    require_outputs: bool | None = _opt(BOOL, "Fail the task when an output pattern matches no file.")
    array: bool | None = _opt(BOOL, "Let tasks asking for the same resources share a Slurm job array (default: yes).")
    max_running: int | None = _opt(INT, "At most this many tasks of the submission's array(s) run at once.")
    after: tuple[str, ...] = _opt(STR_LIST, "Start only after task ID ended: ID[:ok|any|notok] (repeatable; ok by default).")
    notify: tuple[str, ...] = _opt(STR_LIST, "Notification URL for this task's events, e.g. ntfy://topic (repeatable; needs hpcbridge[notify]).")
    stall_after: str | None = _opt(STR, "Stalled when the newest file in the work dir is older than this, e.g. 30m.")
    on_stall: str | None = _opt(STR, "What a stall does: notify (default), cancel or requeue.")
    watch_file: tuple[str, ...] = _opt(STR_LIST, "PATH[:REGEX]: an event when PATH appears in the work dir (or REGEX matches in it) (repeatable).")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "") -> SubmitOptions:
        """Check every key and value; ``where`` (e.g. ``tasks.jsonl:3``) is named in errors."""
        at = f" ({where})" if where else ""
        if not isinstance(data, Mapping):
            raise UsageError(f"a task must be a mapping of options, got {type(data).__name__}{at}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UsageError(f"unknown task option(s) {unknown}{at}", hint=f"allowed: {sorted(known)}")
        if isinstance(data.get("command"), str):
            raise UsageError(
                f"command must be a list of arguments, not a string{at}",
                hint="pass ['python3', 'sim.py', '--n', '10'], or script='...' to use a shell",
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue
            values[key] = _check(at, key, known[key].metadata["kind"], value)
        if "retry_on" in values:
            bad = sorted(set(values["retry_on"]) - set(RETRYABLE_NAMES))
            if bad:
                raise UsageError(f"unknown retry outcome(s) {bad}{at}",
                                 hint=f"allowed: {', '.join(sorted(RETRYABLE_NAMES))}")  # fmt: skip
        return cls(**values)

    def with_defaults(self, **defaults: Any) -> SubmitOptions:
        """These options, with ``defaults`` filling the fields left unset."""
        unset = {k: v for k, v in defaults.items() if getattr(self, k) in (None, (), {})}
        return dataclasses.replace(self, **unset) if unset else self


def option_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of SubmitOptions, in order (what the CLI builds its options from)."""
    return dataclasses.fields(SubmitOptions)


def _check(at: str, key: str, kind: str, value: Any) -> Any:
    def bad(expected: str) -> UsageError:
        return UsageError(f"option {key!r} must be {expected}, got {type(value).__name__} {value!r}{at}")

    if kind == STR:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == BOOL:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == STR_LIST:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
            raise bad("a list of strings")
        items = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
        if not all(isinstance(v, str) for v in items):
            raise bad("a list of strings")
        return tuple(items)
    if kind == STR_MAP:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad("a mapping of strings to strings")
        return dict(value)
    raise AssertionError(kind)


def build_spec(opts: SubmitOptions, cfg: ClusterConfig) -> tuple[TaskSpec, dict[str, str]]:
    """Valid options + the cluster's config -> (TaskSpec, metadata). Nothing is written."""
    inputs = []
    for item in opts.inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise UsageError(f"input {item!r} does not exist")
        inputs.append(str(path.resolve()))
    for pattern in opts.outputs:
        check_output_pattern(pattern)
    policy = cfg.retry
    changes: dict[str, Any] = {}
    if opts.max_attempts is not None:
        changes["max_attempts"] = opts.max_attempts
    if opts.requeue is not None:
        changes["slurm_requeue"] = opts.requeue
    if opts.exclude_failed_nodes is not None:
        changes["exclude_failed_nodes"] = opts.exclude_failed_nodes
    try:
        if changes:
            policy = dataclasses.replace(policy, **changes)
        if opts.retry_on is not None:
            policy = dataclasses.replace(policy, retry_on=parse_retry_on(opts.retry_on))
    except ConfigError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    if opts.cpus is not None and opts.cpus < 1:
        raise UsageError(f"cpus must be >= 1, got {opts.cpus}")
    if opts.max_running is not None and opts.max_running < 1:
        raise UsageError(f"max_running must be >= 1, got {opts.max_running}")
    after = tuple(format_after(*parse_after(a)) for a in opts.after)
    # Refused here, before anything is registered: options that would override what
    # hpcbridge relies on (--comment, --output, ...), and signal specs the wrapper can't honour.
    # (--exclude values are kept in the options; the renderer merges them.)
    check_sbatch_options(opts.sbatch_options)
    if opts.signal:
        check_signal(opts.signal)
    try:
        stall_after = parse_duration(opts.stall_after, "--stall-after") if opts.stall_after else None
        for item in opts.watch_file:
            parse_watch(item)
    except ConfigError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    if opts.on_stall is not None and opts.on_stall not in ON_STALL:
        raise UsageError(f"on_stall {opts.on_stall!r} is not one of {', '.join(ON_STALL)}")
    for url in opts.notify:
        if "://" not in url:
            raise UsageError("--notify takes a notification URL", hint="e.g. ntfy://my-topic, mailto://..., json://host:port/path")
    project = opts.project or cfg.default_project
    if project is not None:
        try:
            check_project_name(project)
        except ConfigError as exc:
            raise UsageError(exc.message, hint="e.g. --project heat-study") from None
    resources = Resources(
        time=opts.time or None, cpus=opts.cpus, mem=opts.mem or None, gres=opts.gres or None,
        partition=opts.partition or None, account=opts.account or None, qos=opts.qos or None,
        sbatch_options=tuple(opts.sbatch_options), signal=opts.signal or None,
    )  # fmt: skip
    spec = TaskSpec(
        command=tuple(opts.command), script=opts.script, name=opts.name or "",
        cluster=cfg.name, inputs=tuple(inputs), outputs=tuple(opts.outputs), env=dict(opts.env),
        resources=resources, retry=policy,
        require_outputs=cfg.require_outputs if opts.require_outputs is None else opts.require_outputs,
        project=project, array=cfg.arrays if opts.array is None else opts.array,
        max_running=opts.max_running, after=after, notify=tuple(opts.notify),
        stall_after=stall_after, on_stall=opts.on_stall, watch_files=tuple(opts.watch_file),
    )  # fmt: skip
    return spec, dict(opts.metadata)


__all__ = ["SubmitOptions", "build_spec", "option_fields"]

