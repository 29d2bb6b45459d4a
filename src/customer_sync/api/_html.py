"""HTML building blocks for the dashboard's pages: escaping, cells that keep a right-to-left
value right to left, the page shell (inline CSS, security headers), tables, bar charts drawn
as inline SVG, and change-log diffs.

Everything that puts text into markup goes through `e` (`html.escape`); callers build the rest
from these pieces and never interpolate a value unescaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import HTMLResponse

from customer_sync._cli_render import ARROW, format_value
from customer_sync.store.tables import stored_utc

if TYPE_CHECKING:
    from customer_sync.api.auth import AdminAuth

__all__ = ["CSS", "HEADERS", "bar_chart", "cell", "csrf_field", "diff_html", "duration", "e", "page", "show",
           "table", "when"]

HEADERS = {
    # personal data: never cached; no scripts at all; forms post to this origin only
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{display:flex;gap:1rem;align-items:center;padding:.6rem 1.2rem;background:#1d2330;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin:0}
main{padding:1rem 1.2rem;max-width:78rem}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:.5rem}
th,td{border:1px solid #d9dde5;padding:.3rem .5rem;text-align:start;vertical-align:top}
th{background:#eceff4;font-weight:600}
.state{display:inline-block;padding:.05rem .5rem;border-radius:.7rem;color:#fff;font-weight:600}
.ok{background:#2a9d5b}.warn{background:#d08a00}.bad{background:#c9344d}.off{background:#7a8190}
.muted{color:#7a8190}.error{background:#fde8eb;border:1px solid #c9344d;padding:.5rem;margin:.5rem 0}
.note{background:#e8f4ec;border:1px solid #2a9d5b;padding:.5rem;margin:.5rem 0}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{background:#fff;border:1px solid #d9dde5;padding:.5rem}
.legend span{margin-inline-end:1rem}.swatch{display:inline-block;width:.8rem;height:.8rem;margin-inline-end:.3rem}
button{cursor:pointer;padding:.2rem .6rem}form.inline{display:inline;margin:0 .3rem 0 0}
input[type=search],input[type=password]{padding:.25rem .4rem;min-width:18rem}
"""


def e(value: Any) -> str:
    """Text escaped for HTML (element content and quoted attribute values)."""
    return html.escape(str(value), quote=True)


def show(value: Any) -> str:
    """A canonical value as text: lists joined, objects as JSON, nothing as an empty string."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(show(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def cell(value: Any) -> str:
    """A table cell holding data. `dir="auto"` gives the cell the direction of its own first
    strong character and isolates it from its neighbours: a Persian or Arabic value reads and
    aligns right to left inside the LTR table. (A `<bdi>` inside would hide the text from the
    cell's own `auto`, leaving it LTR-aligned; `<bdi>` is for values inside running text.)"""
    text = show(value)
    if not text:
        return '<td class="muted">—</td>'
    return f'<td dir="auto">{e(text)}</td>'


def when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return f"{stored_utc(value):%Y-%m-%d %H:%M:%S} UTC"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def page(title: str, body: str, *, auth: AdminAuth | None = None, status_code: int = 200,
          search: str = "") -> HTMLResponse:
    nav = ""
    if auth is not None:
        nav = (f'<form method="get" action="/customers" role="search">'
               f'<input type="search" name="q" value="{e(search)}" aria-label="Find a customer" '
               f'placeholder="customer id, email, phone or APP:RECORD_ID"> <button>Find</button></form>'
               f'<form method="post" action="/logout">{csrf_field(auth)}<button>Log out</button></form>')
    doc = (f'<!doctype html><html lang="en" dir="ltr"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>{e(title)} · customer-sync</title><style>{CSS}</style></head>'
           f'<body><header><a href="/">customer-sync</a>{nav}</header><main>{body}</main></body></html>')
    return HTMLResponse(doc, status_code=status_code, headers=HEADERS)


def csrf_field(auth: AdminAuth) -> str:
    return f'<input type="hidden" name="csrf" value="{e(auth.csrf_value)}">'


def table(headers: Sequence[str], rows: Iterable[str], *, empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def bar_chart(title: str, starts: Sequence[datetime], series: Mapping[str, Sequence[int]],
               colours: Mapping[str, str]) -> str:
    """Stacked bars, one per bucket, as inline SVG (drawn on the server; no script)."""
    width, height, left, bottom, top = 560, 170, 34, 22, 8
    n = len(starts)
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    peak = max(totals, default=0) or 1
    slot = (width - left - 4) / max(n, 1)
    plot_h = height - bottom - top
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 4}" y2="{height - bottom}" stroke="#9aa1ad"/>',
             f'<text x="{left - 4}" y="{top + 9}" font-size="10" text-anchor="end">{peak}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">0</text>']
    for i, start in enumerate(starts):
        x = left + i * slot + 1
        y = float(height - bottom)
        for name, counts in series.items():
            if not counts[i]:
                continue
            h = counts[i] / peak * plot_h
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{colours[name]}"><title>{e(name)}: {counts[i]} in the hour from '
                         f'{start:%H:%M} UTC</title></rect>')
        if i % 6 == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10">{start:%H:%M}</text>')
    legend = "".join(f'<span><i class="swatch" style="background:{colours[name]}"></i>{e(name)}: '
                     f'{sum(counts)}</span>' for name, counts in series.items())
    return (f'<figure class="chart"><figcaption><strong>{e(title)}</strong> '
            f'<span class="legend">{legend}</span></figcaption>'
            f'<svg role="img" aria-label="{e(title)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg></figure>')


def diff_html(diff: Any) -> str:
    """A change-log diff, one line per field, each value isolated (a Persian value beside an
    English field name keeps its own direction). The shapes are those `_cli_render.diff_lines`
    reads: `{field: [old, new]}`, or `{"fields": [name, ...]}` alone."""
    if not isinstance(diff, dict) or not diff:
        return ""
    lines = []
    for name, change in diff.items():
        if name == "fields" and len(diff) == 1 and isinstance(change, list) and all(isinstance(n, str) for n in change):
            lines.append(f"fields: {e(', '.join(change))}")
        elif isinstance(change, list) and len(change) == 2:
            old, new = format_value(change[0]), format_value(change[1])
            if old != new:
                lines.append(f'{e(name)}: <bdi dir="auto">{e(old)}</bdi> {ARROW} <bdi dir="auto">{e(new)}</bdi>')
        else:
            lines.append(f'{e(name)}: <bdi dir="auto">{e(format_value(change))}</bdi>')
    return "".join(f"<div>{line}</div>" for line in lines)
