"""The names of the events a task records and a notification rule may name: pure constants,
apart from ``events`` (rules, messages) so that the registry, which writes the outbox, does
not import the notification code (``events`` re-exports them)."""

from __future__ import annotations

from .lifecycle import TaskState

# Events that are not state changes, recorded by the sync cycle's watch.
NOTICE_KINDS = ("stalled", "walltime_near", "file_appeared", "file_matched")
# What a rule may name in ``on``: every state a task can move to, and the notices.
EVENT_NAMES = frozenset({s.value for s in TaskState} | set(NOTICE_KINDS))
# States whose transitions go into the outbox (what a task moving through its submission
# passes on the way is left out: nobody is told "submitting").
OUTBOX_STATES = frozenset(EVENT_NAMES - {"created", "staging", "submitting"})
