"""Delivery of the outbox: after the sync cycle's commits, at least once, deduplicable.

Each due outbox event is matched against the config's ``[[notify]]`` rules and the task's
own ``--notify`` rule; each rule target (one URL, or the command) gets the event once
recorded as delivered, right after it took it. A target that fails is retried on a later
cycle with exponential backoff, then given up after the rule's ``max_tries`` (shown by
``hpcbridge events list``). Every message carries the stable event id(s) in its body and,
where the channel has headers (webhooks, email), in ``X-Hpcbridge-Event-Ids``: a process
killed between a send and its record sends again, and the receiver drops the duplicate.

Channels are apprise's (Slack, Teams, Matrix, ntfy, Discord, JSON webhooks, SMTP email, ...,
each from one URL), imported only when a URL is sent to: it is an optional extra
(``pip install 'hpcbridge[notify]'``). A ``command`` rule runs an argv, never a shell, with
the message on stdin. URLs are shown masked in every log line and error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import outbox
from .errors import ConfigError, UsageError
from .events import (
    FAILURE_NAMES,
    Notice,
    NotifyRule,
    backoff,
    command_argv,
    mask_secrets,
    mask_url,
    render,
    task_rule,
)
from .leases import try_lock
from .runtime import Runtime

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Hpcbridge-Event-Ids"
KEEP_SECONDS = 30 * 86400.0  # finished outbox rows are forgotten after this
COMMAND_TIMEOUT = 60.0
MISSING_APPRISE = ("notification URLs need apprise, which is not installed",
                   "pip install 'hpcbridge[notify]' (or pip install apprise)")  # fmt: skip


@dataclass
class DeliveryReport:
    """What one delivery round did."""

    skipped: bool = False  # another process is delivering
    messages: int = 0  # messages sent (a digest is one)
    delivered: int = 0  # events every matching rule target now has
    retrying: int = 0
    given_up: int = 0
    errors: list[str] = field(default_factory=list)


@contextmanager
def delivery_lock(data_dir: Path) -> Iterator[bool]:
    """One deliverer at a time per registry (flock: released by the kernel on kill -9)."""
    with try_lock(data_dir / "locks" / "notify.lock") as got:
        yield got


def deliver(rt: Runtime, now: float | None = None) -> DeliveryReport:
    """One delivery round over the due outbox entries."""
    report = DeliveryReport()
    with delivery_lock(rt.data_dir) as got:
        if not got:
            report.skipped = True
            return report
        _deliver(rt, time.time() if now is None else now, report)
    return report


def _deliver(rt: Runtime, now: float, report: DeliveryReport) -> None:
    reg = rt.registry
    outbox.prune(reg, now - KEEP_SECONDS)
    entries = outbox.due(reg, now)
    if not entries:
        return
    matched: dict[int, list[NotifyRule]] = {}
    groups: list[tuple[NotifyRule, list[Notice]]] = []
    per_rule: dict[str, list[Notice]] = {}
    quiet: list[int] = []
    for e in entries:
        rules = [r for r in rt.config.notify if r.matches(e.notice)]
        own = task_rule(e.task_urls) if e.task_urls else None
        if own is not None and own.matches(e.notice):
            rules.append(own)
            groups.append((own, [e.notice]))
        if not rules:
            quiet.append(e.notice.event_id)
            continue
        matched[e.notice.event_id] = rules
        for r in rules:
            if r is not own:
                per_rule.setdefault(r.name, []).append(e.notice)
    if quiet:
        outbox.finish_quietly(reg, quiet)
    for rule in rt.config.notify:
        notices = per_rule.get(rule.name, [])
        if rule.digest and notices:
            groups.append((rule, notices))
        else:
            groups.extend((rule, [n]) for n in notices)
    done: dict[int, set[str]] = {e.notice.event_id: set(e.notice.done) for e in entries}
    errors: dict[int, str] = {}
    for rule, notices in groups:
        for target in rule.targets():
            todo = [n for n in notices if target not in done[n.event_id]]
            if not todo:
                continue
            error = send(rule, target, todo)
            if error is None:
                report.messages += 1
                outbox.mark_delivered(reg, [n.event_id for n in todo], target)
                for n in todo:
                    done[n.event_id].add(target)
            else:
                log.warning("notify rule %s: %s", rule.name, error)
                report.errors.append(f"rule {rule.name}: {error}")
                for n in todo:
                    errors[n.event_id] = f"rule {rule.name}: {error}"
    by_id = {e.notice.event_id: e.notice for e in entries}
    for eid, rules in matched.items():
        n = by_id[eid]
        if all(t in done[eid] for r in rules for t in r.targets()):
            outbox.finish(reg, eid, outbox.DONE, tries=n.tries + 1, next_try_at=now, error=None)
            report.delivered += 1
            continue
        tries = n.tries + 1
        if tries >= max(r.max_tries for r in rules):
            outbox.finish(reg, eid, outbox.GIVEN_UP, tries=tries, next_try_at=now, error=errors.get(eid))
            report.given_up += 1
            log.error("event %s of task %s given up after %d tries: %s", n.key, n.task_id, tries, errors.get(eid))
            continue
        wait = backoff(tries, min(r.backoff_seconds for r in rules))
        outbox.finish(reg, eid, outbox.PENDING, tries=tries, next_try_at=now + wait, error=errors.get(eid))
        report.retrying += 1


def send(rule: NotifyRule, target: str, notices: Sequence[Notice]) -> str | None:
    """Send ``notices`` (one message) to one target of ``rule``; None, or why it failed
    (secrets masked)."""
    title, body = render(notices)
    keys = [n.key for n in notices]
    index = target.rpartition("#")[2]
    try:
        if index == "cmd":
            return _run_command(command_argv(rule, notices), body, keys)
        url = rule.urls[int(index)]
        return mask_secrets(_send_url(url, title, body, keys, _kind(notices)) or "", rule.urls) or None
    except ConfigError as exc:
        return f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    except Exception as exc:  # noqa: BLE001 - a channel's failure is retried, never a crash
        return mask_secrets(f"{type(exc).__name__}: {exc}", rule.urls)


def _kind(notices: Sequence[Notice]) -> str:
    kinds = {n.kind for n in notices}
    if kinds & FAILURE_NAMES:
        return "failure"
    if kinds & {"stalled", "walltime_near"}:
        return "warning"
    return "success" if kinds == {"succeeded"} else "info"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _apprise() -> Any:
    try:
        import apprise
    except ImportError:
        raise ConfigError(MISSING_APPRISE[0], hint=MISSING_APPRISE[1]) from None
    return apprise


def _send_url(url: str, title: str, body: str, keys: Sequence[str], kind: str) -> str | None:
    apprise = _apprise()
    collect = _Collect()
    logger = logging.getLogger("apprise")
    # apprise's own lines are caught here and reported once, masked, by our caller.
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False
    try:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            return f"{mask_url(url)}: not a notification URL apprise understands" + (
                f" ({collect.lines[-1]})" if collect.lines else "")
        # The ids receivers deduplicate on, where the channel carries headers (webhooks,
        # email) and, for JSON webhooks, in the payload too.
        if isinstance(getattr(plugin, "headers", None), dict):
            plugin.headers[EVENT_HEADER] = ",".join(keys)
        if isinstance(getattr(plugin, "payload_extras", None), dict):
            plugin.payload_extras["event_ids"] = ",".join(keys)
        ok = plugin.notify(body=body, title=title, notify_type=apprise.NotifyType(kind),
                           body_format=apprise.NotifyFormat.TEXT)
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    if ok:
        return None
    return f"{mask_url(url)}: " + (collect.lines[-1] if collect.lines else "delivery failed")


def _run_command(argv: list[str], body: str, keys: Sequence[str]) -> str | None:
    env = {**os.environ, "HPCBRIDGE_EVENT_IDS": ",".join(keys)}
    try:
        done = subprocess.run(argv, input=body, text=True, capture_output=True, env=env,
                              timeout=COMMAND_TIMEOUT, check=False)  # fmt: skip
    except FileNotFoundError:
        return f"command {argv[0]!r} not found"
    except subprocess.TimeoutExpired:
        return f"command {argv[0]!r} did not finish in {COMMAND_TIMEOUT:.0f} s"
    except OSError as exc:
        return f"command {argv[0]!r}: {exc.strerror}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return f"command {argv[0]!r} exited {done.returncode}: {tail[0][:200]}"
    return None


def send_test(rt: Runtime, rule_name: str) -> list[tuple[str, str | None]]:
    """Send a test message through every target of the named rule: ``[(target, error)]``."""
    rules = {r.name: r for r in rt.config.notify}
    if rule_name not in rules:
        raise UsageError(f"no notify rule named {rule_name!r}",
                         hint=f"rules in the config: {', '.join(sorted(rules)) or '(none)'}")  # fmt: skip
    rule = rules[rule_name]
    notice = Notice(event_id=0, task_id="test", kind="test", at=time.time(), name="hpcbridge test message",
                    cluster="-", detail=f"a test of notify rule {rule_name}")  # fmt: skip
    out = []
    for i, target in enumerate(rule.targets()):
        shown = "command " + " ".join(rule.command) if target.endswith("#cmd") else mask_url(rule.urls[i])
        out.append((shown, send(rule, target, [notice])))
    return out


__all__ = ["DeliveryReport", "deliver", "send_test"]
