"""The report as one self-contained HTML page, and a task as an HTML card (Jupyter). Pure.

Everything the page needs is inside it: inline CSS, the timeline as inline SVG, no script,
no font, no image, no link to fetch; a Content-Security-Policy of ``default-src 'none'``
makes the browser refuse any load even if one slipped in. Every string that comes from a
task (names, metadata, reasons, stderr) is hostile input and goes through ``html.escape``
(quotes included) before it reaches the page, in text and in attributes alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from .report import duration

# Timeline phase colours (the headless-browser test looks for these in the screenshot).
PHASE_COLOURS = {
    "queue": "#f2a93b", "held": "#9b51e0", "run": "#2f80ed", "suspended": "#8a8a8a",
    "interrupted": "#eb5757",
}  # fmt: skip
REQUEUE_COLOUR = "#c0262d"
STATE_COLOURS = {
    "succeeded": "#219653", "failed": "#d64545", "out_of_memory": "#d64545", "timed_out": "#d64545",
    "lost": "#d64545", "cancelled": "#6b6b6b", "running": "#2f80ed", "queued": "#c98a1b",
    "held": "#9b51e0", "preempted": "#eb5757", "node_failed": "#eb5757", "retrying": "#c98a1b",
}  # fmt: skip

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px;min-width:80px}
.card b{display:block;font-size:20px}
.badge{display:inline-block;border-radius:10px;padding:0 8px;color:#fff;font-size:12px;white-space:nowrap}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.low{background:#fde2e2;color:#9b1c1c;font-weight:600}
pre{background:#f6f6f6;border:1px solid #e4e4e4;padding:6px 8px;overflow-x:auto;font-size:12px;margin:4px 0 12px;white-space:pre-wrap}
.failure{margin-bottom:14px}.hint{color:#555}
svg text{font:11px system-ui,sans-serif;fill:#333}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _badge(state: str) -> str:
    return f'<span class="badge" style="background:{STATE_COLOURS.get(state, "#6b6b6b")}">{_e(state)}</span>'


def _clock(ts: float, span: float) -> str:
    t = dt.datetime.fromtimestamp(ts).astimezone()
    return t.strftime("%H:%M:%S" if span < 86400 else "%m-%d %H:%M")


def timeline_svg(tl: Mapping[str, Any], *, width: int = 1100, row_height: int = 20) -> str:
    """The Gantt chart: one row per attempt, queue/held/run phases as bars, requeues as red
    marks, a time axis on top."""
    rows: Sequence[Mapping[str, Any]] = tl.get("rows") or []
    if not rows or tl.get("start") is None:
        return "<p>No attempt has reached the scheduler yet.</p>"
    label_w, top, pad = 260, 26, 8
    t0, t1 = float(tl["start"]), float(tl["end"])
    span = max(t1 - t0, 1.0)
    plot_w = width - label_w - pad

    def x(t: float) -> float:
        return label_w + (t - t0) / span * plot_w

    height = top + len(rows) * row_height + pad
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of every attempt">']  # fmt: skip
    for i in range(7):  # axis
        t = t0 + span * i / 6
        xi = x(t)
        out.append(f'<line x1="{xi:.1f}" y1="{top - 4}" x2="{xi:.1f}" y2="{height - pad}" stroke="#e6e6e6"/>')
        anchor = "start" if i == 0 else "end" if i == 6 else "middle"
        text = _clock(t, span) if i == 0 else "+" + duration(t - t0)
        out.append(f'<text x="{xi:.1f}" y="{top - 10}" text-anchor="{anchor}">{_e(text)}</text>')
    for n, r in enumerate(rows):
        y = top + n * row_height
        if n % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_height}" fill="#fafafa"/>')
        label = f"{r.get('name') or r['task']} #{r['attempt']}"
        out.append(f'<text x="4" y="{y + row_height - 6}"><title>{_e(r["task"])} attempt {_e(r["attempt"])}'
                   f' job {_e(r.get("job_id") or "?")} {_e(r["state"])}</title>{_e(label[:40])}</text>')  # fmt: skip
        for s in r["segments"]:
            x0, x1 = x(s["start"]), x(s["end"])
            colour = PHASE_COLOURS.get(s["phase"], "#8a8a8a")
            tip = f"{s['phase']} {s['end'] - s['start']:.0f}s" + (" (still going)" if s.get("open") else "")
            out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 2.0):.1f}" height="{row_height - 6}" '
                       f'fill="{colour}"><title>{_e(tip)}</title></rect>')  # fmt: skip
        for m in r["requeues"]:
            xm = x(m["at"])
            out.append(f'<line x1="{xm:.1f}" y1="{y + 1}" x2="{xm:.1f}" y2="{y + row_height - 1}" '
                       f'stroke="{REQUEUE_COLOUR}" stroke-width="3"><title>requeue: {_e(m["cause"])} '
                       f'{_e(m.get("detail"))}</title></line>')  # fmt: skip
            out.append(f'<path d="M{xm - 5:.1f},{y} L{xm + 5:.1f},{y} L{xm:.1f},{y + 6} Z" fill="{REQUEUE_COLOUR}"/>')
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(p)}</span>' for p, c in PHASE_COLOURS.items())
    legend += f'<span><i style="background:{REQUEUE_COLOUR}"></i>requeue</span>'
    return "\n".join(out) + f'\n<div class="legend">{legend}</div>'


def _summary(data: Mapping[str, Any]) -> str:
    s = data["summary"]
    cards = [("tasks", s["tasks"]), ("attempts", s["attempts"]), ("requeues", s["requeues"]),
             ("failures", s["failures"]), ("core-hours", f"{s['core_hours']:.3g}"),
             ("low efficiency", s["low_efficiency"])]  # fmt: skip
    html = ['<div class="cards">']
    html += [f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards]
    html.append("</div><p>")
    html += [f"{_badge(state)} {n} &nbsp; " for state, n in s["counts"].items()]
    html.append("</p>")
    if s.get("first"):
        html.append(f'<p class="meta">from {_e(s["first"])} to {_e(s["last"])}; clusters: {_e(", ".join(s["clusters"]))}</p>')
    return "".join(html)


def _tasks_table(data: Mapping[str, Any]) -> str:
    head = ("ID", "name", "state", "cluster", "att", "restarts", "queued", "ran", "CPU%", "MEM%",
            "core-h", "warnings")  # fmt: skip
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in data["tasks"]:
        e = r.get("efficiency") or {}
        cpu_cls = ' class="num low"' if e.get("low_cpu") else ' class="num"'
        mem_cls = ' class="num low"' if e.get("low_mem") or e.get("high_mem") else ' class="num"'
        ch = e.get("core_hours")
        out.append(
            f"<tr><td><code>{_e(r['id'])}</code></td><td>{_e(r['name'])}</td><td>{_badge(r['state'])}</td>"
            f"<td>{_e(r['cluster'])}</td><td class=\"num\">{_e(r['attempts'])}</td>"
            f"<td class=\"num\">{_e(r['restarts'])}</td><td class=\"num\">{_e(r['queue'])}</td>"
            f"<td class=\"num\">{_e(r['run'])}</td><td{cpu_cls}>{_pct(e.get('cpu_efficiency'))}</td>"
            f"<td{mem_cls}>{_pct(e.get('mem_efficiency'))}</td>"
            f"<td class=\"num\">{'-' if ch is None else f'{ch:.3g}'}</td>"
            f"<td>{'<br>'.join(_e(w) for w in e.get('warnings') or [])}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _failures(data: Mapping[str, Any]) -> str:
    if not data["failures"]:
        return "<p>No failures.</p>"
    out = []
    for f in data["failures"]:
        out.append(f'<div class="failure"><b><code>{_e(f["id"])}</code> {_e(f["name"])}</b> {_badge(f["state"])} '
                   f'attempt {_e(f["attempt"])}{" on " + _e(f["node"]) if f.get("node") else ""}<br>'
                   f'{_e(f["summary"])}' + (f' ({_e(f["exit"])})' if f.get("exit") and f["exit"] not in f["summary"] else ""))  # fmt: skip
        if f.get("reason"):
            out.append(f"<br>reason: {_e(f['reason'])}")
        if f.get("hint"):
            out.append(f'<br><span class="hint">hint: {_e(f["hint"])}</span>')
        if f.get("tail"):
            out.append(f"<br>last lines of {_e(f['stream'])}:<pre>{_e(chr(10).join(f['tail']))}</pre>")
        out.append("</div>")
    return "".join(out)


def _parameters(data: Mapping[str, Any]) -> str:
    cols = data["parameters"]["columns"]
    if not cols:
        return "<p>The tasks carry no metadata.</p>"
    out = ["<table><tr><th>ID</th><th>state</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"]
    for r in data["parameters"]["rows"]:
        vals = "".join(f"<td>{_e(r['values'].get(c))}</td>" for c in cols)
        out.append(f"<tr><td><code>{_e(r['id'])}</code></td><td>{_badge(r['state'])}</td>{vals}</tr>")
    out.append("</table>")
    return "".join(out)


def render_report(data: Mapping[str, Any]) -> str:
    """The whole page for ``report_data.build_report``'s data."""
    scope = data.get("scope") or {}
    where = "; ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in scope.items() if v)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data['title'])}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(data['title'])}</h1>",
        f'<div class="meta">generated {_e(data["generated_at"])} by hpcbridge{"; " + _e(where) if where else ""}</div>',
        _summary(data),
        "<h2>Timeline</h2>",
        timeline_svg(data["timeline"]),
        "<h2>Tasks and efficiency</h2>",
        _tasks_table(data),
        "<h2>Failures</h2>",
        _failures(data),
        "<h2>Parameters</h2>",
        _parameters(data),
        "</body></html>",
        "",
    ])  # fmt: skip


def task_html(info: Mapping[str, Any]) -> str:
    """A compact card for one task (``Task._repr_html_``): ``info`` is ``tasks info``'s data."""
    t = info.get("timings") or {}
    rows = [("cluster", info.get("cluster")), ("project", (info.get("spec") or {}).get("project")),
            ("attempts", info.get("attempts") and len(info["attempts"])),
            ("created", t.get("created")), ("queued", _dur(t.get("queue_seconds"))),
            ("ran", _dur(t.get("run_seconds"))), ("exit code", info.get("exit_code")),
            ("reason", info.get("reason")), ("usage", (info.get("usage") or {}).get("summary"))]  # fmt: skip
    cell = 'style="padding:1px 8px 1px 0;text-align:left;vertical-align:top"'
    body = "".join(f"<tr><th {cell}>{_e(k)}</th><td {cell}>{_e(v)}</td></tr>" for k, v in rows
                   if v not in (None, "", 0) or k == "exit code" and v == 0)  # fmt: skip
    meta = info.get("metadata") or {}
    if meta:
        pairs = ", ".join(f"{_e(k)}={_e(v)}" for k, v in sorted(meta.items()))
        body += f"<tr><th {cell}>metadata</th><td {cell}>{pairs}</td></tr>"
    fail = info.get("failure")
    if fail:
        body += f"<tr><th {cell}>failure</th><td {cell}>{_e(fail.get('summary'))}"
        if fail.get("tail"):
            body += ('<pre style="margin:2px 0;padding:2px 4px;background:#f6f6f6;white-space:pre-wrap">'
                     f"{_e(chr(10).join(fail['tail'][-3:]))}</pre>")  # fmt: skip
        body += "</td></tr>"
    return (f'<div style="font-family:system-ui,sans-serif;font-size:13px">'
            f'<b>Task <code>{_e(info.get("id"))}</code></b> {_e(info.get("name"))} {_badge(str(info.get("state")))}'
            f'<table style="border-collapse:collapse;margin-top:4px">{body}</table></div>')  # fmt: skip


def _dur(seconds: float | None) -> str | None:
    return None if seconds is None else duration(seconds)
