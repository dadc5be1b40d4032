"""The ops page's live windows: the last minute's 1 s windows of each live campaign shown
(``engine.windows``, docs/windows.md), as a table row with an inline SVG sparkline of answers
per second (no external assets). The page aggregates what is new first (cheap: the
exactly-once commit makes it safe next to any other aggregator)."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from .. import _core
from .snapshot import Section

WINDOWS_CAMPAIGNS_MAX = 10  # live campaigns with a sparkline
_SECONDS = 60
_W, _H = 180, 28


def windows_section(engine: Any, campaigns: Section) -> Section:
    live = [r.campaign for r in campaigns.rows if r.live][:WINDOWS_CAMPAIGNS_MAX]
    try:
        w = engine.windows
        w.aggregate()
        since = int(time.time()) - _SECONDS
        rows = [(c, w.rows(c.id, "1s", since=since)) for c in live]
    except _core.Unavailable as e:
        return Section(available=False, note=str(e))
    except _core.Error as e:
        return Section(error=f"{type(e).__name__}: {e}")
    return Section(rows=rows)


def _sparkline(series: list[int], now_s: int) -> str:
    top = max(series) or 1
    step = _W / (len(series) - 1)
    pts = " ".join(f"{i * step:.1f},{_H - 2 - (v / top) * (_H - 4):.1f}" for i, v in enumerate(series))
    return (
        f'<svg class="spark" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="answers per second, last minute (max {top})"><polyline fill="none" '
        f'stroke="currentColor" stroke-width="1.5" points="{pts}"/></svg>'
    )


def render_windows(sec: Section) -> str:
    head = '<section id="windows"><h2>Live windows <small>(last minute, 1 s windows)</small></h2>'
    if not sec.available:
        return head + f'<p class="na">Not available: {escape(sec.note)}.</p></section>'
    if sec.error:
        return head + f'<p class="error">Could not read this section: {escape(sec.error)}</p></section>'
    if not sec.rows:
        return head + '<p class="na">No live campaigns.</p></section>'
    now_s = int(time.time())
    out = [
        head,
        "<table><thead><tr><th>id</th><th>name</th><th>answers/s</th><th>answers</th><th>by status</th>"
        "<th>p99 (last window)</th></tr></thead><tbody>",
    ]
    for c, rows in sec.rows:
        by_second = {r["start_s"]: r["answers"] for r in rows}
        series = [by_second.get(s, 0) for s in range(now_s - _SECONDS, now_s)]
        mix: dict[str, int] = {}
        for r in rows:
            for k, n in r["by_status"].items():
                mix[k] = mix.get(k, 0) + n
        mix_text = ", ".join(f"{escape(k)} {n}" for k, n in sorted(mix.items())) or "—"
        last = rows[-1] if rows else None
        p99 = f"{last['p99_us'] / 1000:.1f} ms" if last else "—"
        out.append(
            f'<tr data-campaign="{c.id}"><td>{c.id}</td><td>{escape(c.name)}</td><td>{_sparkline(series, now_s)}</td>'
            f'<td class="num">{sum(by_second.values())}</td><td>{mix_text}</td><td class="num">{p99}</td></tr>'
        )
    out.append(
        '</tbody></table><p class="note">From the answer records of every engine of the deployment, '
        "aggregated exactly once into the store; the newest seconds stay open for the allowed lateness "
        "(2 s).</p></section>"
    )
    return "".join(out)
