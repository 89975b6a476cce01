"""``hpcbridge top`` through Textual's own test pilot, on a registry in a tmp dir with
``hpcbridge.testing.FakeBackend`` as the scheduler."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from hpcbridge.config import parse_config  # noqa: E402
from hpcbridge.lifecycle import TaskState  # noqa: E402
from hpcbridge.registry import Registry  # noqa: E402
from hpcbridge.runtime import Runtime  # noqa: E402
from hpcbridge.service import Service  # noqa: E402
from hpcbridge.testing import FakeBackend  # noqa: E402
from hpcbridge.tui import ConfirmKill, LogScreen, TopApp  # noqa: E402

S = TaskState


def make_service(tmp_path: Path, backend: FakeBackend) -> Service:
    table = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000,
             "submit_grace_seconds": 0, "lost_grace_seconds": 60}  # fmt: skip
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": table}})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": backend}, source="test"))


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(script={"runner": [S.RUNNING], "waiter": [S.QUEUED], "done": [S.RUNNING, S.SUCCEEDED]})


@pytest.fixture
def svc(tmp_path: Path, fake: FakeBackend):
    s = make_service(tmp_path, fake)
    s.submit(command=["sleep", "100"], name="runner", project="alpha")
    s.submit(command=["sleep", "100"], name="waiter", project="beta")
    s.submit(command=["true"], name="done", project="alpha")
    s.sync_cluster("lab")
    s.sync_cluster("lab")
    yield s
    s.close()


def run(coro) -> None:
    asyncio.run(coro)


def by_name(svc: Service) -> dict[str, str]:
    return {t.name: t.id for t in svc.list_tasks()}


def screen_text(app: TopApp) -> str:
    table = app.table
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def test_the_table_shows_every_task_with_its_state_and_the_header_counts(svc) -> None:
    ids = by_name(svc)

    async def go() -> None:
        app = TopApp(svc, interval=60)
        async with app.run_test(size=(80, 24)):
            text = screen_text(app)
            for name, state in (("runner", "running"), ("waiter", "queued"), ("done", "succeeded")):
                line = next(ln for ln in text.splitlines() if ids[name] in ln)
                assert state in line, line
            assert app.table.ids == sorted(ids.values(), reverse=True)  # newest first
            header = str(app.header.render())
            assert "3 tasks: 1 queued, 1 running, 1 succeeded" in header
            assert "lab/alpha: 1 running, 1 succeeded" in header
            assert "last sync: lab " in header and "ago" in header

    run(go())


def test_filters_by_state_and_project_and_sort_keys(svc) -> None:
    ids = by_name(svc)

    async def go() -> None:
        app = TopApp(svc, interval=60)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("s")  # all -> active
            assert app.state_filter == "active"
            assert set(app.table.ids) == {ids["runner"], ids["waiter"]}
            await pilot.press("s", "s")  # -> finished -> failing
            assert app.state_filter == "failing" and app.table.ids == []
            await pilot.press("s")  # -> queued (the first state present)
            assert app.state_filter == "queued" and app.table.ids == [ids["waiter"]]
            await pilot.press("s", "s", "s")  # running, succeeded, back to all
            assert app.state_filter == "all" and len(app.table.ids) == 3
            await pilot.press("p")  # project alpha
            assert app.project == "alpha"
            assert set(app.table.ids) == {ids["runner"], ids["done"]}
            await pilot.press("p", "p")  # beta, then all
            assert app.project is None and len(app.table.ids) == 3
            await pilot.press("o")  # sort by state: queued < running < succeeded
            assert app.sort == "state"
            assert app.table.ids == [ids["waiter"], ids["runner"], ids["done"]]
            await pilot.press("r")
            assert app.table.ids == [ids["done"], ids["runner"], ids["waiter"]]

    run(go())


def test_kill_asks_first_and_kills_only_after_yes(svc, fake) -> None:
    ids = by_name(svc)

    async def go() -> None:
        app = TopApp(svc, interval=60)
        async with app.run_test(size=(80, 24)) as pilot:
            while app.table.current != ids["runner"]:
                await pilot.press("down")
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmKill)
            assert ids["runner"] in str(app.screen.query_one("#question").render())
            await pilot.press("n")
            assert not isinstance(app.screen, ConfirmKill)
            assert fake.calls_to("cancel") == [] and svc.get(ids["runner"]).state == S.RUNNING
            fake.script("runner", None, S.CANCELLED)  # what Slurm reports after the scancel
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmKill)
            await pilot.press("y")
            await pilot.pause()
            assert len(fake.calls_to("cancel")) == 1
            assert svc.get(ids["runner"]).state == S.CANCELLED
            line = next(ln for ln in screen_text(app).splitlines() if ids["runner"] in ln)
            assert "cancelled" in line

    run(go())


def test_the_detail_pane_shows_the_events_of_the_task_under_the_cursor(svc) -> None:
    ids = by_name(svc)

    async def go() -> None:
        app = TopApp(svc, interval=60)
        async with app.run_test(size=(80, 24)) as pilot:
            while app.table.current != ids["done"]:
                await pilot.press("down")
            detail = str(app.detail.render())
            assert ids["done"] in detail and "succeeded" in detail
            assert "events, newest first:" in detail and "fetching->succeeded" in detail
            await pilot.press("down")
            detail = str(app.detail.render())
            assert ids["waiter"] in detail and "queued" in detail
            await pilot.press("d")
            assert not app.detail.display

    run(go())


def test_refresh_rebuilds_only_changed_rows_and_runs_no_scheduler_command(svc, fake) -> None:
    ids = by_name(svc)

    async def go() -> None:
        app = TopApp(svc, interval=0.05)
        async with app.run_test(size=(80, 24)) as pilot:
            calls = len(fake.calls)
            before = app.refreshes
            while app.refreshes < before + 5:  # the timer redraws from the registry
                await pilot.pause(0.05)
            assert len(fake.calls) == calls, [c.method for c in fake.calls[calls:]]
            assert not app.refresh_tasks()  # nothing changed since the last read
            svc.set_metadata(ids["waiter"], {"k": "v"})  # an event, no row change
            svc.runtime.registry.update_task(ids["runner"], {"reason": "x"})
            ch = app.refresh_tasks()
            assert ch.changed == {ids["runner"], ids["waiter"]} and not ch.added and not ch.removed

    run(go())


def test_the_log_screen_shows_the_task_log(svc, fake) -> None:
    ids = by_name(svc)
    fake.set_log("runner", 1, "stdout", "step 1\nstep 2\n")

    async def go() -> None:
        app = TopApp(svc, interval=60)
        async with app.run_test(size=(80, 24)) as pilot:
            while app.table.current != ids["runner"]:
                await pilot.press("down")
            await pilot.press("l")
            assert isinstance(app.screen, LogScreen)
            log = app.screen.query_one("#log")
            assert "step 2" in "\n".join(log.lines)
            await pilot.press("q")
            assert not isinstance(app.screen, LogScreen)

    run(go())


def test_sync_mode_runs_cycles_in_a_background_thread(tmp_path, svc, fake) -> None:
    opened: list[Service] = []

    def factory() -> Service:
        s = Service(Runtime(svc.config, Registry(tmp_path / "r.db"), backends={"lab": fake}, source="top"))
        opened.append(s)
        return s

    async def go() -> None:
        app = TopApp(svc, interval=0.05, sync_service=factory, sync_interval=0.05)
        async with app.run_test(size=(80, 24)) as pilot:
            polls = len(fake.calls_to("poll"))
            for _ in range(100):
                if len(fake.calls_to("poll")) >= polls + 2:
                    break
                await pilot.pause(0.05)
            assert len(fake.calls_to("poll")) >= polls + 2
        assert opened and app.stop.is_set()

    run(go())
