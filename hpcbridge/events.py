"""Notification rules and messages: pure (no I/O, no notification library).

A rule (``[[notify]]`` in the config, or a task's ``--notify URL``) says which events it
wants (``on``: lifecycle states such as ``failed``, and the notices ``stalled``,
``walltime_near``, ``file_appeared``, ``file_matched``), which tasks (projects, clusters,
metadata) and where the message goes (notification URLs, or a local command run without a
shell). ``Notice`` is one outbox event with the task context a message needs; ``render``
turns one notice, or a digest of many, into a title and a body. Notification URLs carry
secrets (webhook tokens, SMTP passwords): ``mask_url`` is how every one of them is shown.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .event_names import EVENT_NAMES, NOTICE_KINDS, OUTBOX_STATES  # noqa: F401 - their home was here

# What a task's ``--notify URL`` rule listens to.
DEFAULT_ON = ("failed", "lost", "out_of_memory", "timed_out", "succeeded", "preempted",
              "stalled", "walltime_near", "file_appeared", "file_matched")  # fmt: skip
ON_STALL = ("notify", "cancel", "requeue")
# Fields a command rule's arguments may use, e.g. ["notify-send", "{task}", "{state}"].
COMMAND_FIELDS = frozenset({"task", "id", "name", "state", "event", "project", "cluster",
                            "reason", "attempt", "node", "event_id", "count", "detail"})  # fmt: skip
DIGEST_LINES = 50  # a digest lists this many events, then counts the rest
TAIL_LINES = 15  # lines of stderr a failure's message carries


@dataclass(frozen=True)
class NotifyRule:
    """Which events go where. ``name`` identifies the rule in the outbox (deliveries done)."""

    name: str
    on: tuple[str, ...] = DEFAULT_ON
    urls: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    digest: bool = False  # one message per cycle for all its events
    max_tries: int = 10  # then the event is given up for this rule, and shown as such
    backoff_seconds: float = 30.0  # first retry after this, doubling each time (1 h at most)

    def matches(self, n: Notice) -> bool:
        if n.kind not in self.on:
            return False
        if self.projects and n.project not in self.projects:
            return False
        if self.clusters and n.cluster not in self.clusters:
            return False
        return all(n.metadata.get(k) == v for k, v in self.metadata.items())

    def targets(self) -> list[str]:
        """The delivery units of this rule, each tracked on its own in the outbox: one
        failing URL is retried without sending again through the ones that worked."""
        out = [f"{self.name}#{i}" for i in range(len(self.urls))]
        return out + ([f"{self.name}#cmd"] if self.command else [])

    def describe(self) -> dict[str, Any]:
        """The rule as ``hpcbridge config`` shows it: URLs masked."""
        return {"name": self.name, "on": list(self.on), "urls": [mask_url(u) for u in self.urls],
                "command": list(self.command), "projects": list(self.projects),
                "clusters": list(self.clusters), "metadata": dict(self.metadata),
                "digest": self.digest, "max_tries": self.max_tries}  # fmt: skip


@dataclass(frozen=True)
class Notice:
    """One event waiting in the outbox, with what a message about it says."""

    event_id: int
    task_id: str
    kind: str  # the new state, or a notice kind
    at: float
    name: str = ""
    project: str | None = None
    cluster: str = ""
    from_state: str | None = None
    reason: str | None = None
    attempt: int | None = None
    node: str | None = None
    detail: str = ""
    stderr_tail: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tries: int = 0
    done: tuple[str, ...] = ()  # rule targets already delivered

    @property
    def key(self) -> str:
        """The stable id receivers deduplicate on (sent as a header and in the body)."""
        return f"{self.task_id}-{self.event_id}"


def mask_url(url: str) -> str:
    """A notification URL safe to print: the scheme, and the host for URLs that have one,
    with passwords, tokens, paths and query values replaced by ``****``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "****"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, host = authority.rpartition("@")
    hostpart = rest[len(authority):]
    if scheme.rstrip("s") in ("json", "xml", "form", "mailto", "ntfy", "http", "https", "mailtos"):
        user = ""
        if at:
            name = userinfo.split(":", 1)[0]
            user = f"{name[:2]}****@" if name else "****@"
        tail = "/****" if hostpart else ""
        if scheme.startswith("ntfy") and "." not in host and not at:
            host = "****"  # ntfy://TOPIC: the topic is the secret
        return f"{scheme}://{user}{host}{tail}"
    return f"{scheme}://{rest[:3]}****" if len(rest) > 6 else f"{scheme}://****"


def mask_secrets(text: str, urls: Iterable[str]) -> str:
    """``text`` with each of ``urls`` (and any other URL-looking word) masked."""
    for url in sorted(set(urls), key=len, reverse=True):
        if url:
            text = text.replace(url, mask_url(url))
    return re.sub(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]*:[^\s'\"@]*@[^\s'\"]+",
                  lambda m: mask_url(m.group(0)), text)  # fmt: skip


def parse_duration(value: Any, what: str) -> float:
    """Seconds from ``30m``, ``2h``, ``90s``, ``1d`` or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration such as 30m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if not m:
            raise ConfigError(f"{what}: {value!r} is not a duration", hint="e.g. 90s, 30m, 2h, 1d")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{what}: a duration must be > 0, got {value!r}")
    return seconds


def parse_watch(item: str) -> tuple[str, str | None]:
    """``PATH[:REGEX]`` -> (path relative to the work dir, regex or None), checked."""
    path, sep, regex = item.partition(":")
    if not path or path.startswith("/") or ".." in path.split("/") or "\x00" in item:
        raise ConfigError(f"watch file {item!r}: the path must be relative to the work dir, without '..'",
                          hint="e.g. --watch-file results/done.txt or --watch-file log.txt:'converged'")  # fmt: skip
    if sep:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"watch file {item!r}: bad regex: {exc}") from None
        if not regex:
            raise ConfigError(f"watch file {item!r}: empty regex after ':'")
    return path, (regex if sep else None)


def _strs(where: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings, got {value!r}")
    return tuple(value)


RULE_KEYS = ("name", "on", "urls", "urls_env", "urls_file", "command", "projects", "clusters",
             "metadata", "digest", "max_tries", "backoff")  # fmt: skip


def parse_rule(table: Any, index: int, where: str, urls_from_file: Sequence[str] = (),
               env: Mapping[str, str] | None = None) -> NotifyRule:  # fmt: skip
    """One ``[[notify]]`` table -> a rule. ``urls_env`` names environment variables that
    hold URLs, ``urls_file`` URLs already read by the caller (``urls_from_file``)."""
    at = f"{where}: [[notify]] #{index + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{at} must be a table")
    unknown = sorted(set(table) - set(RULE_KEYS))
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {unknown}", hint=f"allowed: {', '.join(RULE_KEYS)}")
    name = table.get("name", f"notify{index + 1}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(f"{at}: name {name!r} must be 1-64 letters, digits, '.', '-', '_'")
    on = _strs(at, "on", table.get("on", list(DEFAULT_ON)))
    bad = sorted(set(on) - OUTBOX_STATES)
    if bad:
        raise ConfigError(f"{at}: unknown event(s) {bad} in 'on'", hint=f"allowed: {', '.join(sorted(OUTBOX_STATES))}")
    urls = list(_strs(at, "urls", table.get("urls", [])))
    for var in _strs(at, "urls_env", table.get("urls_env", [])):
        value = (env or {}).get(var)
        if not value:
            raise ConfigError(f"{at}: environment variable {var} (urls_env) is not set",
                              hint=f"export {var}='slack://...' or drop it from urls_env")  # fmt: skip
        urls.extend(u for u in value.split() if u)
    urls.extend(urls_from_file)
    for url in urls:
        if "://" not in url:
            raise ConfigError(f"{at}: {mask_url(url)} is not a notification URL",
                              hint="e.g. slack://..., mailto://..., json://host/path, ntfy://topic")  # fmt: skip
    command = _strs(at, "command", table.get("command", []))
    for arg in command:
        check_command_arg(arg, at)
    if not urls and not command:
        raise ConfigError(f"{at}: needs urls (or urls_env / urls_file) or a command")
    meta = table.get("metadata", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ConfigError(f"{at}: metadata must map keys to string values")
    digest = table.get("digest", False)
    if not isinstance(digest, bool):
        raise ConfigError(f"{at}: digest must be true or false")
    tries = table.get("max_tries", 10)
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise ConfigError(f"{at}: max_tries must be an integer >= 1")
    backoff = parse_duration(table.get("backoff", 30), f"{at}: backoff") if table.get("backoff") != 0 else 0.0
    return NotifyRule(name=name, on=on, urls=tuple(urls), command=command,
                      projects=_strs(at, "projects", table.get("projects", [])),
                      clusters=_strs(at, "clusters", table.get("clusters", [])),
                      metadata=dict(meta), digest=digest, max_tries=tries,
                      backoff_seconds=backoff)  # fmt: skip


def check_command_arg(arg: str, at: str) -> None:
    for _text, name, _spec, _conv in string.Formatter().parse(arg):
        if name is not None and name not in COMMAND_FIELDS:
            raise ConfigError(f"{at}: command argument {arg!r} uses unknown field {{{name}}}",
                              hint=f"fields: {', '.join(sorted(COMMAND_FIELDS))}")  # fmt: skip


def task_rule(urls: Sequence[str]) -> NotifyRule:
    """The one-off rule of a task submitted with ``--notify URL``."""
    return NotifyRule(name="task", urls=tuple(urls))


def backoff(tries: int, base: float) -> float:
    """Seconds before try ``tries + 1``: ``base`` doubling, at most an hour."""
    return min(base * 2 ** max(0, tries - 1), 3600.0)


def fields_of(n: Notice, count: int = 1) -> dict[str, str]:
    return {"task": n.task_id, "id": n.task_id, "name": n.name or n.task_id, "state": n.kind,
            "event": n.kind, "project": n.project or "", "cluster": n.cluster,
            "reason": n.reason or "", "attempt": "" if n.attempt is None else str(n.attempt),
            "node": n.node or "", "event_id": n.key, "count": str(count), "detail": n.detail}  # fmt: skip


def command_argv(rule: NotifyRule, notices: Sequence[Notice]) -> list[str]:
    """The argv of a command rule for one notice (or a digest: the first, with {count})."""
    f = fields_of(notices[0], len(notices))
    return [arg.format_map(f) for arg in rule.command]


def render(notices: Sequence[Notice]) -> tuple[str, str]:
    """(title, body) of one notice, or of a digest when there are several."""
    if len(notices) == 1:
        n = notices[0]
        title = f"hpcbridge: {n.name or n.task_id} {n.kind}"
        return title, "\n".join(_lines(n, tail=True))
    counts: dict[str, int] = {}
    for n in notices:
        counts[n.kind] = counts.get(n.kind, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    title = f"hpcbridge: {len(notices)} events ({summary})"
    body = []
    for n in notices[:DIGEST_LINES]:
        why = f": {n.reason}" if n.reason else ""
        body.append(f"- {n.task_id} {n.name} {n.kind}{why} (event {n.key})")
    if len(notices) > DIGEST_LINES:
        body.append(f"... and {len(notices) - DIGEST_LINES} more (hpcbridge events list)")
    return title, "\n".join(body)


def _lines(n: Notice, tail: bool) -> list[str]:
    out = [f"task: {n.task_id}" + (f" ({n.name})" if n.name else "")]
    if n.project:
        out.append(f"project: {n.project}")
    out.append(f"cluster: {n.cluster}")
    out.append(f"event: {n.from_state} -> {n.kind}" if n.from_state else f"event: {n.kind}")
    if n.attempt is not None:
        out.append(f"attempt: {n.attempt}")
    if n.node:
        out.append(f"node: {n.node}")
    if n.reason:
        out.append(f"reason: {n.reason}")
    if n.detail and n.detail != n.reason:
        out.append(f"detail: {n.detail}")
    out.append(f"event id: {n.key}")
    if tail and n.stderr_tail and n.kind in FAILURE_NAMES:
        lines = n.stderr_tail.rstrip("\n").splitlines()[-TAIL_LINES:]
        out += ["", "stderr (last lines):", *lines]
    return out


FAILURE_NAMES = frozenset({"failed", "lost", "out_of_memory", "timed_out", "node_failed",
                           "preempted", "cancelled"})  # fmt: skip


__all__ = ["NotifyRule", "Notice", "mask_url", "parse_duration", "render"]
