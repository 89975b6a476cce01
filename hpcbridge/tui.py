"""``hpcbridge top``: a full-screen view of every task, drawn from the registry.

Textual is an optional extra (``pip install 'hpcbridge[tui]'``) and only this module imports
it; ``cli.top`` imports this module inside the command, so no other command pays for it.

Each refresh reads the registry's narrow rows (one query over tasks and current attempts,
one over the events since the last refresh) and :class:`~hpcbridge.topview.TopModel` rebuilds
only the rows that changed. The table is a virtual list (:class:`TaskTable`): a redraw formats
only the lines on screen, so 10,000 tasks cost what 20 do (``benchmarks/bench_top.py``).
Nothing here runs a scheduler command, except a kill the user confirms and, with ``--sync``,
the sync cycles of a background thread (its own Service, through the command budget).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Size
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Label, Log, Static

from . import topview as tv
from .errors import HpcBridgeError
from .report import duration, usage_summary
from .service import Service

READ_MARGIN = 10.0  # seconds re-read before the last read (a writer's commit lags its timestamp)
FULL_EVERY = 60.0  # seconds between reads of every row
CURSOR = Style(reverse=True)
PLAIN = Style()


class TaskTable(ScrollView, can_focus=True):
    """The task list: one line per task, only the visible lines rendered."""

    BINDINGS: ClassVar[list[Any]] = [
        Binding("up", "move(-1)", "up", show=False), Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", show=False), Binding("pagedown", "page(1)", show=False),
        Binding("home", "move(-1000000000)", show=False), Binding("end", "move(1000000000)", show=False),
    ]  # fmt: skip

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.ids: list[str] = []
        self.rows: dict[str, tv.TopRow] = {}
        self.cursor = 0
        self.now = time.time()
        self.on_cursor: Callable[[str | None], None] = lambda tid: None

    @property
    def current(self) -> str | None:
        return self.ids[self.cursor] if 0 <= self.cursor < len(self.ids) else None

    def show(self, ids: list[str], rows: dict[str, tv.TopRow], now: float) -> None:
        """New order (keeping the cursor on the same task when it is still shown)."""
        keep = self.current
        self.ids, self.rows, self.now = ids, rows, now
        if keep is not None and keep in rows:
            try:
                self.cursor = ids.index(keep)
            except ValueError:
                self.cursor = min(self.cursor, max(0, len(ids) - 1))
        else:
            self.cursor = min(self.cursor, max(0, len(ids) - 1))
        self.virtual_size = Size(self.size.width, len(ids))
        self._follow_cursor()
        self.refresh()
        if self.current != keep:
            self.on_cursor(self.current)

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.size.width
        if index >= len(self.ids):
            return Strip.blank(width)
        row = self.rows[self.ids[index]]
        return Strip([Segment(tv.line(row, self.now, width), CURSOR if index == self.cursor else PLAIN)], width)

    def _follow_cursor(self) -> None:
        top, height = self.scroll_offset.y, max(1, self.size.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def action_move(self, delta: int) -> None:
        if not self.ids:
            return
        before = self.cursor
        self.cursor = max(0, min(len(self.ids) - 1, self.cursor + delta))
        self._follow_cursor()
        self.refresh()
        if self.cursor != before:
            self.on_cursor(self.current)

    def action_page(self, sign: int) -> None:
        self.action_move(sign * max(1, self.size.height - 1))


class ConfirmKill(ModalScreen[bool]):
    """Kill one task? y/n."""

    BINDINGS: ClassVar[list[Any]] = [Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
                                     Binding("escape", "answer(False)", "no")]  # fmt: skip
    DEFAULT_CSS = "ConfirmKill { align: center middle; } ConfirmKill > Label { border: round red; padding: 1 2; }"

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Label(self.text, id="question")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class LogScreen(Screen[None]):
    """A task's stdout (or stderr), followed while the task runs. Reads the log file where the
    job runs (one file read per refresh), never asks the scheduler."""

    BINDINGS: ClassVar[list[Any]] = [Binding("escape,q", "close", "back"), Binding("e", "other_stream", "stdout/stderr")]

    def __init__(self, svc: Service, task_id: str, interval: float) -> None:
        super().__init__()
        self.svc, self.task_id, self.interval = svc, task_id, interval
        self.stream = "stdout"
        self.seen = ""
        self.done = False

    def compose(self) -> ComposeResult:
        yield Static("", id="logtitle")
        yield Log(id="log", highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.read()
        self.set_interval(self.interval, self.read)

    def read(self) -> None:
        if self.done and self.seen:
            return
        try:
            self.done = self.svc.get(self.task_id).state.terminal
            text = self.svc.logs(self.task_id, stream=self.stream, tail=500)
        except HpcBridgeError as exc:
            self.query_one("#logtitle", Static).update(f"{self.task_id} {self.stream}: error: {exc.message}")
            return
        log = self.query_one("#log", Log)
        if not text.startswith(self.seen):
            log.clear()
            self.seen = ""
        log.write(text[len(self.seen):])
        self.seen = text
        state = "ended" if self.done else "following"
        self.query_one("#logtitle", Static).update(f"{self.task_id} {self.stream} ({state}; e: other stream, q: back)")

    def action_other_stream(self) -> None:
        self.stream = "stderr" if self.stream == "stdout" else "stdout"
        self.seen, self.done = "", False
        self.query_one("#log", Log).clear()
        self.read()

    def action_close(self) -> None:
        self.app.pop_screen()


class TopApp(App[None]):
    """The ``hpcbridge top`` app. ``sync_service`` (a factory: the thread opens its own
    Service) turns on background sync cycles every ``sync_interval`` seconds."""

    TITLE = "hpcbridge top"
    CSS = """
    #header { height: auto; max-height: 5; background: $boost; }
    #heading { height: 1; text-style: bold; }
    TaskTable { height: 1fr; min-height: 3; }
    #detail { height: 9; border-top: solid $accent; overflow-y: auto; }
    #status { height: 1; background: $boost; }
    """
    BINDINGS: ClassVar[list[Any]] = [
        Binding("q", "quit", "quit"), Binding("k", "kill", "kill"), Binding("l", "logs", "logs"),
        Binding("p", "project", "project"), Binding("s", "state", "state"), Binding("o", "sort", "sort"),
        Binding("r", "reverse", "reverse", show=False), Binding("d", "detail", "detail"),
    ]  # fmt: skip

    def __init__(self, svc: Service, *, interval: float = 2.0, project: str | None = None,
                 state: str = "all", sync_service: Callable[[], Service] | None = None,
                 sync_interval: float = 30.0, now: Callable[[], float] = time.time) -> None:  # fmt: skip
        super().__init__()
        self.svc = svc
        self.interval = interval
        self.model = tv.TopModel()
        self.project, self.state_filter = project, state
        self.sort: str = "newest"
        self.reverse: bool | None = None
        self.sync_service, self.sync_interval = sync_service, sync_interval
        self.clock = now
        self.stop = threading.Event()
        self.sync_note = ""
        self.refreshes = 0
        self.detail_for: str | None = None
        self.mark: tuple[int, int] | None = None
        self.read_at = self.full_at = 0.0
        self.last_seen: dict[str, float] | None = None
        self.counts: dict[tuple[str, str | None], dict[Any, int]] | None = None
        # Kept, not queried: the timer also fires while a kill question or the logs are on top.
        self.table = TaskTable(id="tasks")
        self.header = Static("", id="header")
        self.heading = Static("", id="heading")
        self.detail = Static("", id="detail")
        self.status = Static("", id="status")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield self.header
            yield self.heading
            yield self.table
            yield self.detail
            yield self.status
        yield Footer()

    def on_mount(self) -> None:
        self.table.on_cursor = self.show_detail
        self.table.focus()
        self.refresh_tasks()
        self.set_interval(self.interval, self.refresh_tasks)
        if self.sync_service is not None:
            self.run_worker(self.sync_loop, thread=True, exclusive=True, group="sync")

    def on_unmount(self) -> None:
        self.stop.set()

    def on_resize(self) -> None:
        self.heading.update(tv.heading(self.size.width))

    # -- refresh ---------------------------------------------------------------------------
    def refresh_tasks(self, force: bool = False) -> tv.Changes:
        """Re-read what changed and redraw. Nothing committed since the last read (SQLite's
        data version): no read at all. Else only the tasks written, or touched by a sync,
        since the last read (less a margin: a writer takes its timestamp before it commits),
        and the events after the last one seen; every FULL_EVERY seconds all rows, as a safety
        net (e.g. usage that accounting delivered late). ``force``: re-order and redraw even
        when nothing changed (a new filter or sort)."""
        reg = self.svc.registry
        wall = time.time()
        mark = reg.change_mark()
        changes = tv.Changes()
        full = not self.model.rows or wall - self.full_at >= FULL_EVERY
        if full or mark != self.mark:
            since = None if full else self.read_at - READ_MARGIN
            changes = self.model.apply(reg.top_rows(since), reg.top_events(self.model.last_event_id), full=full)
            self.mark, self.read_at = mark, wall
            if full:
                self.full_at = wall
            if changes or self.last_seen is None:
                self.last_seen = reg.last_seen()
        now = self.clock()
        rows = self.model.rows
        if force or changes:
            shown = tv.order(rows.values(), sort=self.sort, reverse=self.reverse, project=self.project,
                             state=self.state_filter, now=now)  # fmt: skip
            ids = [r.id for r in shown]
        else:
            ids = self.table.ids
        self.table.show(ids, rows, now)
        if changes or force or self.counts is None:
            self.counts = tv.counts(rows.values())
        self.header.update("\n".join(tv.header_lines_of(self.counts, self.last_seen or {}, now, max_lines=4)))
        self.update_status()
        if self.table.current is not None and (force or self.table.current in changes.changed
                                               or self.table.current != self.detail_for):  # fmt: skip
            self.show_detail(self.table.current)
        self.refreshes += 1
        return changes

    def update_status(self) -> None:
        rev = "" if self.reverse is None else (" desc" if self.reverse else " asc")
        text = (f"{len(self.table.ids)} shown | sort {self.sort}{rev} | state {self.state_filter} | "
                f"project {self.project or 'all'}")  # fmt: skip
        if self.sync_service is not None:
            text += f" | sync every {self.sync_interval:g}s{self.sync_note}"
        self.status.update(text)

    def show_detail(self, task_id: str | None) -> None:
        self.detail_for = task_id
        pane = self.detail
        if task_id is None:
            pane.update("no task selected" if self.model.rows else "no tasks in the registry")
            return
        try:
            info = self.svc.info(task_id, lines=5)
        except HpcBridgeError as exc:
            pane.update(f"{task_id}: {exc.message}")
            return
        pane.update(detail_text(info))

    # -- sync in the background ------------------------------------------------------------
    def sync_loop(self) -> None:
        assert self.sync_service is not None
        svc = self.sync_service()
        try:
            while not self.stop.is_set():
                try:
                    reports = svc.sync()
                    note = f", last {time.strftime('%H:%M:%S')}: {sum(len(r.changes) for r in reports)} change(s)"
                except HpcBridgeError as exc:
                    note = f", last failed: {exc.message}"
                self.sync_note = note
                self.stop.wait(self.sync_interval)
        finally:
            svc.runtime.stop.set()
            svc.close()

    # -- actions ---------------------------------------------------------------------------
    def action_project(self) -> None:
        projects = sorted({r.project for r in self.model.rows.values() if r.project})
        self.project = tv.next_in([None, *projects], self.project)
        self.refresh_tasks(force=True)

    def action_state(self) -> None:
        present = sorted({r.state for r in self.model.rows.values()}, key=lambda s: tv.STATE_ORDER[s])
        self.state_filter = tv.next_in([*tv.STATE_FILTERS, *(s.value for s in present)], self.state_filter)
        self.refresh_tasks(force=True)

    def action_sort(self) -> None:
        self.sort, self.reverse = tv.next_in(tv.SORTS, self.sort), None
        self.refresh_tasks(force=True)

    def action_reverse(self) -> None:
        desc = self.sort in ("newest", "time", "cpu", "mem") if self.reverse is None else self.reverse
        self.reverse = not desc
        self.refresh_tasks(force=True)

    def action_detail(self) -> None:
        pane = self.detail
        pane.display = not pane.display

    def action_logs(self) -> None:
        if self.table.current is not None:
            self.push_screen(LogScreen(self.svc, self.table.current, self.interval))

    def action_kill(self) -> None:
        tid = self.table.current
        if tid is None:
            return
        row = self.model.rows[tid]
        if row.state.terminal:
            self.notify(f"{tid} is already {row.state.value}")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                self.notify("not killed")
                return
            try:
                got = self.svc.kill([tid])[0]
            except HpcBridgeError as exc:
                self.notify(f"kill {tid}: {exc.message}", severity="error")
                return
            self.notify(f"{tid} {got.task.state.value}" + (f" ({got.note})" if got.note else ""))
            self.refresh_tasks()

        self.push_screen(ConfirmKill(f"Kill task {tid} ({row.name or 'unnamed'}, {row.state.value})?\n"
                                     "y = kill, n = keep"), answered)  # fmt: skip


def detail_text(info: dict[str, Any]) -> str:
    """The detail pane: state and why, attempts, usage, the failure's stderr tail, events."""
    lines = [f"{info['id']} {info['name'] or ''}  {info['state']}" + (f" ({info['reason']})" if info["reason"] else "")]
    for a in info["attempts"][-2:]:
        lines.append(f"  attempt {a['number']}: job {a['job_id'] or '?'} {a['state']} nodes={a['nodes'] or '-'} "
                     f"queued {duration(a['queue_seconds'])} ran {duration(a['run_seconds'])}")  # fmt: skip
    q = info.get("queue")
    if q:
        lines.append(f"  waiting: {q.get('reason')}: {q.get('explanation') or ''}".rstrip())
    use = info.get("usage")
    if use:
        lines.append(f"  usage: {use['summary'] or usage_summary(use)}")
    fail = info.get("failure")
    if fail:
        lines.append(f"  failure: {fail['summary']}")
        lines += [f"  | {t}" for t in fail["tail"]]
    lines.append("  events, newest first:")
    for e in reversed(info["events"][-8:]):
        move = f"{e['from'] or ''}->{e['to']}" if e["to"] else e["kind"]
        lines.append(f"  {(e['at'] or '')[11:19]} {move} {e['detail']}".rstrip())
    return "\n".join(lines)


__all__ = ["ConfirmKill", "LogScreen", "TaskTable", "TopApp", "detail_text"]
