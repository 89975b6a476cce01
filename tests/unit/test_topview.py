"""The pure view-model of ``hpcbridge top`` (hpcbridge/topview.py) and the progress lines
(hpcbridge/progress.py)."""

from __future__ import annotations

import json

import pytest

from hpcbridge import topview as tv
from hpcbridge.lifecycle import TaskState
from hpcbridge.progress import eta_of, eta_seconds, progress_line, transfer_line

S = TaskState
NOW = 1_000_000.0


def rec(tid: str, state: str, *, project: str | None = "p", started: float | None = None,
        ended: float | None = None, queue: dict | None = None, usage: dict | None = None,
        cluster: str = "lab", reason: str | None = None) -> tuple:  # fmt: skip
    return (tid, f"n-{tid}", cluster, project, state, 1, NOW - 100, started, ended, reason, "42",
            started, json.dumps(queue) if queue else None, json.dumps(usage) if usage else None)  # fmt: skip


def test_a_row_shows_the_queue_reason_of_a_waiting_task_and_the_run_time_of_a_running_one() -> None:
    waiting = tv.row_from_record(rec("a", "queued", queue={"reason": "Priority"}))
    running = tv.row_from_record(rec("b", "running", started=NOW - 125))
    done = tv.row_from_record(rec("c", "succeeded", started=NOW - 100, ended=NOW - 40,
                                  usage={"cpu_efficiency": 0.625, "mem_efficiency": 0.3}))  # fmt: skip
    assert tv.time_cell(waiting, NOW) == "Priority"
    assert tv.time_cell(running, NOW) == "2m05s"
    assert tv.cells(done, NOW)[3:6] == ["1m00s", "62%", "30%"]
    line = tv.line(done, NOW, 80)
    assert len(line) == 80 and line.startswith("c ")
    assert len(tv.heading(80)) == 80 and tv.heading(80).startswith("ID")


def test_a_line_fits_80_columns_whatever_the_cells_hold() -> None:
    row = tv.row_from_record(rec("x" * 13, "out_of_memory", project="a-very-long-project-name",
                                 queue={"reason": "ReqNodeNotAvail, UnavailableNodes:node[1-3]"}))  # fmt: skip
    row = tv.TopRow(**{**row.__dict__, "last_event": "running->out_of_memory " + "x" * 200})
    for width in (80, 100, 60):
        assert len(tv.line(row, NOW, width)) == width
    assert "a-very-lo~" in tv.line(row, NOW, 80)


def test_unparsable_json_or_an_unknown_state_never_breaks_a_row() -> None:
    bad = ("t", "n", "lab", None, "teleported", 1, NOW, None, None, None, None, None, "{not json", "[1]")
    row = tv.row_from_record(bad)
    assert row.state == S.LOST and row.wait_reason is None and row.cpu is None


def test_counts_by_cluster_and_project_and_the_header() -> None:
    rows = [tv.row_from_record(r) for r in (
        rec("a", "running", started=NOW - 5), rec("b", "queued"), rec("c", "succeeded", project="q"),
        rec("d", "failed", project=None, cluster="other"))]  # fmt: skip
    assert tv.counts(rows) == {("lab", "p"): {S.RUNNING: 1, S.QUEUED: 1}, ("lab", "q"): {S.SUCCEEDED: 1},
                               ("other", None): {S.FAILED: 1}}  # fmt: skip
    lines = tv.header_lines(rows, {"lab": NOW - 65}, NOW, max_lines=4)
    assert lines[0] == "4 tasks: 1 queued, 1 running, 1 succeeded, 1 failed"
    assert lines[1] == "last sync: lab 1m05s ago, other never"
    assert lines[2] == "lab/p: 1 queued, 1 running"
    assert lines[3] == "... 2 more cluster/project group(s)"
    assert len(tv.header_lines(rows, {}, NOW, max_lines=10)) == 5


@pytest.mark.parametrize("state, kept", [
    ("all", "abcd"), ("active", "ab"), ("finished", "cd"), ("failing", "d"), ("queued", "b"),
])  # fmt: skip
def test_filters_by_state(state: str, kept: str) -> None:
    rows = [tv.row_from_record(r) for r in (rec("a", "running", started=NOW - 5), rec("b", "queued"),
                                            rec("c", "succeeded"), rec("d", "failed"))]  # fmt: skip
    assert sorted(r.id for r in tv.order(rows, state=state)) == list(kept)


def test_sorts_and_the_project_filter() -> None:
    rows = [tv.row_from_record(r) for r in (
        rec("a", "running", started=NOW - 5, project="x"),
        rec("b", "succeeded", started=NOW - 500, ended=NOW - 100, usage={"cpu_efficiency": 0.9}),
        rec("c", "queued", project="x"), rec("d", "failed", started=NOW - 50, ended=NOW - 40,
                                            usage={"cpu_efficiency": 0.1}))]  # fmt: skip
    ids = lambda **kw: [r.id for r in tv.order(rows, now=NOW, **kw)]  # noqa: E731
    assert ids() == ["d", "c", "b", "a"]
    assert ids(sort="state") == ["c", "a", "b", "d"]
    assert ids(sort="time") == ["b", "d", "a", "c"]
    assert ids(sort="cpu") == ["b", "d", "c", "a"]
    assert ids(sort="cpu", reverse=False)[-1] == "b"
    assert ids(project="x") == ["c", "a"]
    with pytest.raises(ValueError):
        ids(sort="colour")
    assert tv.next_in(tv.SORTS, "project") == "newest" and tv.next_in([None, "x"], "gone") is None


def test_the_model_rebuilds_only_rows_whose_record_or_last_event_changed() -> None:
    m = tv.TopModel()
    first = [rec("a", "running", started=NOW), rec("b", "queued")]
    ch = m.apply(first, [(1, "a", NOW, "state", "queued", "running", "job 42 RUNNING")])
    assert ch.added == {"a", "b"} and not ch.changed and m.last_event_id == 1
    assert m.rows["a"].last_event == "queued->running job 42 RUNNING"
    b_row = m.rows["b"]
    assert not m.apply(first, [])  # the same read again: nothing
    ch = m.apply([first[0], rec("b", "running", started=NOW)], [(5, "a", NOW, "info", None, None, "hi")])
    assert ch.changed == {"a", "b"} and m.rows["a"].last_event == "info: hi" and m.rows["b"] is not b_row
    ch = m.apply([rec("a", "succeeded", started=NOW, ended=NOW + 1)], [], full=False)  # a partial read
    assert ch.changed == {"a"} and not ch.removed and "b" in m.rows
    ch = m.apply([first[0]], [])  # a full read without b: b is gone
    assert ch.removed == {"b"} and "b" not in m.rows and ch.changed == {"a"}


# ------------------------------------------------------------------ progress (tasks/projects wait)
def test_eta_from_the_run_times_of_finished_tasks() -> None:
    assert eta_seconds([], [10.0], 3) is None  # nothing finished yet: nothing to go by
    assert eta_seconds([60.0, 120.0], [], 0) == 0.0
    # mean 90 s; two running for 30 and 80 s: 60 and 10 s left, 2 waiting use the 2 lanes
    assert eta_seconds([60.0, 120.0], [30.0, 80.0], 2) == pytest.approx((60 + 10 + 180) / 2)
    assert eta_seconds([100.0], [10.0], 0) == pytest.approx(90.0)


def test_the_progress_line_has_a_bar_counts_by_state_and_an_eta() -> None:
    counts = {S.SUCCEEDED: 8, S.RUNNING: 3, S.QUEUED: 9}
    line = progress_line(counts, 250.0, width=100)
    assert line == "[" + "#" * 12 + "-" * 18 + "] 8/20 done  9 queued, 3 running, 8 succeeded  ETA 4m10s"
    assert progress_line(counts, None, width=100).endswith("ETA ?")
    assert progress_line({S.SUCCEEDED: 2, S.FAILED: 1}, 0.0, width=80).endswith("3/3 done  2 succeeded, 1 failed  done")
    short = progress_line(counts, 250.0, width=60, label="sweep")
    assert len(short) <= 60 and short.startswith("sweep [----------") is False and short.startswith("sweep [#")


def test_eta_of_tasks(tmp_path) -> None:
    from hpcbridge.lifecycle import TaskState as St
    from hpcbridge.models import Task, TaskSpec

    spec = TaskSpec(command=("true",))

    def task(state: St, started: float | None = None, ended: float | None = None) -> Task:
        return Task(id="t", spec=spec, state=state, metadata={}, created_at=0.0, updated_at=0.0,
                    started_at=started, ended_at=ended)  # fmt: skip

    tasks = [task(St.SUCCEEDED, 0.0, 100.0), task(St.RUNNING, NOW - 40), task(St.QUEUED)]
    assert eta_of(tasks, NOW) == pytest.approx(60.0 + 100.0)
    assert eta_of([task(St.SUCCEEDED, 0.0, 1.0)], NOW) == 0.0


def test_the_transfer_line_shows_bytes_and_rate() -> None:
    assert transfer_line("upload in.dat", 12 * 2**20, 40 * 2**20, 2.0) == \
        "upload in.dat  12.0 MiB of 40.0 MiB (30%)  6.0 MiB/s"
    assert transfer_line("get out", 512, None, 0.0) == "get out  512 B"
