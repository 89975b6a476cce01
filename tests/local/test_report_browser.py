"""`hpcbridge report --html` in a real headless browser (Debian's chromium), on tasks run by
the local backend: the page renders, its screenshot shows the timeline bars where the
timeline is, the DOM holds no script however hostile the task names, and the page loads
nothing from the network (a recording proxy sees no request of the page's; a control page
that does load proves the proxy would see one). The same check on the real Slurm lab, with
a requeue, is tests/integration/test_report.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from hpcbridge.report_html import PHASE_COLOURS
from tests import browser

HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


def test_the_report_renders_its_timeline_and_loads_nothing(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    ok = run_cli("submit", "--name", HOSTILE, "--meta", f"alpha={HOSTILE}", "--", "sh", "-c", "sleep 1")
    bad = run_cli("submit", "--name", "broken", "--meta", "alpha=0.2", "--", "sh", "-c",
                  "echo '</pre><script>alert(3)</script>' >&2; exit 3")  # fmt: skip
    ids = [ok.output.split()[-1], bad.output.split()[-1]]
    run_cli("tasks", "wait", *ids, "--timeout", "60")  # exits 1: one failed, as intended
    page = tmp_path / "report.html"
    res = run_cli("report", "--html", str(page))
    assert res.exit_code == 0, res.output
    html = page.read_text(encoding="utf-8")
    assert browser.outside_references(html) == []

    shot = browser.render(page, tmp_path)
    assert browser.page_requests(shot.requests) == [], shot.requests
    assert "<svg" in shot.dom and "<script" not in shot.dom.lower()  # the DOM as chromium built it
    assert HOSTILE not in shot.dom and "onerror=alert" not in shot.dom.replace("onerror=alert(1)&gt;", "")
    width, height, rows = browser.decode_png(shot.png)
    assert (width, height) == (1200, 1000)
    runs, run_box = browser.find_colour(rows, PHASE_COLOURS["run"])
    queued, queue_box = browser.find_colour(rows, PHASE_COLOURS["queue"])
    # The bars: many pixels, right of the 260 px label column (24 px body margin), wide.
    assert runs > 1000 and run_box is not None and run_box[2] - run_box[0] > 300, (runs, run_box)
    assert run_box[2] > 24 + 260 and 150 < run_box[1] < 600, run_box
    assert queued > 100 and queue_box is not None, (queued, queue_box)


def test_the_proxy_sees_a_page_that_does_load(tmp_path: Path) -> None:
    # The control: without it, "no request" could mean the proxy was never used.
    page = tmp_path / "loads.html"
    page.write_text('<html><body><img src="http://example.invalid/x.png">'
                    '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
                    "</body></html>", encoding="utf-8")  # fmt: skip
    shot = browser.render(page, tmp_path)
    hosts = {browser.request_host(r) for r in browser.page_requests(shot.requests)}
    assert {"example.invalid", "fonts.googleapis.com"} <= hosts, shot.requests
    assert len(browser.outside_references(page.read_text(encoding="utf-8"))) == 2
