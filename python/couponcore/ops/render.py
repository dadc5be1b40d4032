"""HTML of the ops page: plain server-rendered markup, every value escaped here, one stylesheet
and one small script served from the package (static/). No template engine, no CDN."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any, Optional
from urllib.parse import quote

from .snapshot import CampaignRow, Section, Snapshot
from .windows_view import render_windows

_STATUSES = ("ISSUED", "SOLD_OUT", "ALREADY_ISSUED", "NOT_OPEN", "ENDED", "RATE_LIMITED")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _time(t: Optional[dt.datetime]) -> str:
    if t is None:
        return "—"
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age_ms(ms: int) -> str:
    if ms <= 0:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    s = ms / 1000
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _rate(r: Optional[float]) -> str:
    return "…" if r is None else (f"{r:.0f}" if r >= 10 else f"{r:.1f}")


def _head(base: str, title: str, refresh_s: Optional[float] = None) -> str:
    refresh = f' data-refresh-s="{refresh_s:g}"' if refresh_s else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f'<link rel="icon" href="{_e(base)}/static/favicon.svg">'
        f'<link rel="stylesheet" href="{_e(base)}/static/ops.css">'
        f'<script src="{_e(base)}/static/ops.js" defer></script>'
        f"</head><body{refresh}>"
    )


def _form(
    base: str, csrf: str, action: str, label: str, fields: dict[str, Any], *, confirm: str = "", path: str = "action"
) -> str:
    hidden = "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items())
    data = f' data-confirm="{_e(confirm)}"' if confirm else ""
    css = "danger" if action == "drop" else ""
    return (
        f'<form method="post" action="{_e(base)}/{path}" class="inline"{data}>'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        + (f'<input type="hidden" name="action" value="{_e(action)}">' if action else "")
        + f"{hidden}"
        f'<button type="submit" class="{css}" data-action="{_e(action)}">{_e(label)}</button></form>'
    )


def login_page(base: str, error: Optional[str]) -> str:
    err = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    return (
        _head(base, "couponcore ops: log in")
        + '<main class="login"><h1>couponcore ops</h1>'
        + "<p>This page is for operators. Log in with the operator key (not a partner API key).</p>"
        + err
        + f'<form method="post" action="{_e(base)}/login" id="login">'
        + '<label>Operator key <input type="password" name="key" autocomplete="current-password" required '
        + 'autofocus></label> <button type="submit">Log in</button></form></main></body></html>'
    )


def message_page(base: str, message: str) -> str:
    return (
        _head(base, "couponcore ops")
        + f'<main><p class="error">{_e(message)}</p><p><a href="{_e(base)}/">Back to the ops page</a></p></main>'
        + "</body></html>"
    )


def page(
    snap: Snapshot,
    *,
    base: str,
    csrf: str,
    message: str,
    refresh_s: float,
    last_audit: Optional[tuple[dt.datetime, dict[str, Any]]],
) -> str:
    out = [_head(base, "couponcore ops", refresh_s)]
    out.append(
        "<header><h1>couponcore ops</h1>"
        f'<span class="meta">{_e(snap.engine_kind)} engine · snapshot <span id="taken">{_time(snap.taken_at)}</span>'
        f' · refreshes every {refresh_s:g} s <label><input type="checkbox" id="pause"> pause</label></span>'
        + _form(base, csrf, "", "Log out", {}, path="logout")
        + "</header>"
    )
    if message:
        out.append(f'<p class="message" role="status" id="message">{_e(message)}</p>')
    out.append('<main id="live">')
    out.append(_campaigns(snap))
    out.append(_answers(snap))
    out.append(render_windows(snap.windows))
    out.append(_pipeline(snap, base, csrf))
    out.append(_jobs(snap.jobs, snap.schedules, base, csrf))
    out.append(_wallet(snap.wallet, base, csrf, last_audit))
    out.append("</main></body></html>")
    return "".join(out)


def _section_problem(sec: Section) -> str:
    if not sec.available:
        return f'<p class="na">Not available: {_e(sec.note)}.</p>'
    if sec.error:
        return f'<p class="error">Could not read this section: {_e(sec.error)}</p>'
    return ""


def _campaigns(snap: Snapshot) -> str:
    sec = snap.campaigns
    out = ['<section id="campaigns"><h2>Campaigns</h2>']
    problem = _section_problem(sec)
    if problem:
        return out[0] + problem + "</section>"
    if not sec.rows:
        return out[0] + '<p class="na">No campaigns.</p></section>'
    out.append(
        "<table><thead><tr><th>id</th><th>partner</th><th>name</th><th>state</th><th>quantity</th>"
        "<th>issued (gate)</th><th>stored</th><th>stock left</th><th>issued/s</th><th>sold out at</th>"
        "</tr></thead><tbody>"
    )
    for row in sec.rows:
        out.append(_campaign_row(row))
    out.append("</tbody></table>")
    note = (
        "Issued (gate): coupons the gate granted. Stored: grants in PostgreSQL (SQLite embedded); the "
        "difference is still in the grant log (the pipeline's backlog) or in its dead letters."
    )
    if snap.campaigns_not_shown:
        note += f" {snap.campaigns_not_shown} older or finished campaign(s) not shown."
    out.append(f'<p class="note">{_e(note)}</p></section>')
    return "".join(out)


def _campaign_row(row: CampaignRow) -> str:
    c = row.campaign
    state = c.state if row.live or c.state == "closed" else "ended"
    cls = "live" if row.live else "done"
    if row.error:
        cells = f'<td colspan="5" class="error">{_e(row.error)}</td>'
    else:
        st = row.stats
        gate = (
            '<td class="num gate" title="the gate\'s state is not in Redis now: it is loaded at the '
            'campaign\'s next issue">—</td>'
            if row.gate_issued is None
            else f'<td class="num gate">{row.gate_issued}</td>'
        )
        cells = (
            gate + f'<td class="num stored">{_e(st.rows if st else "")}</td>'
            f'<td class="num stock">{_e(row.stock_left)}</td>'
            f'<td class="num">{_rate(row.issued_per_s) if row.live else "—"}</td>'
            f"<td>{_time(row.sold_out_at) if row.sold_out_at else '—'}</td>"
        )
    return (
        f'<tr class="{cls}" data-campaign="{c.id}"><td>{c.id}</td><td>{c.partner_id} {_e(row.partner_name)}</td>'
        f"<td>{_e(c.name)}</td>"
        f'<td><span class="state {_e(state)}">{_e(state)}</span></td><td class="num">{c.quantity}</td>{cells}</tr>'
    )


def _answers(snap: Snapshot) -> str:
    total = sum(snap.answers.values())
    out = ['<section id="answers"><h2>Answer mix <small>(this process, all campaigns, since start)</small></h2>']
    if not total:
        out.append('<p class="na">No issue requests answered by this process yet.</p>')
    else:
        out.append("<table><thead><tr><th>answer</th><th>count</th><th>share</th></tr></thead><tbody>")
        for status in _STATUSES:
            n = snap.answers.get(status, 0)
            out.append(
                f'<tr><td>{status}</td><td class="num">{n}</td>'
                f'<td><meter min="0" max="100" value="{100 * n / total:.1f}"></meter> {100 * n / total:.1f}%</td></tr>'
            )
        out.append("</tbody></table>")
    out.append(f'<p class="note">Issued/s now (this process): {_rate(snap.issued_per_s)}</p></section>')
    return "".join(out)


def _pipeline(snap: Snapshot, base: str, csrf: str) -> str:
    out = ['<section id="pipeline"><h2>Grant pipeline</h2>']
    sec = snap.backlog
    problem = _section_problem(sec)
    if problem:
        out.append(problem)
    elif not sec.rows:
        out.append('<p class="na">No grant log yet.</p>')
    else:
        out.append(
            "<table><thead><tr><th>campaign</th><th>log entries</th><th>pending at a writer</th>"
            "<th>oldest pending</th><th>dead letters</th></tr></thead><tbody>"
        )
        for b in sec.rows:
            warn = ' class="warn"' if b.dead_letters or b.oldest_pending_age_ms > 30_000 else ""
            out.append(
                f'<tr{warn} data-campaign="{b.campaign_id}"><td>{b.campaign_id}</td><td class="num">{b.entries}</td>'
                f'<td class="num">{b.pending}</td><td class="num">{_age_ms(b.oldest_pending_age_ms)}</td>'
                f'<td class="num">{b.dead_letters}</td></tr>'
            )
        out.append("</tbody></table>")
        out.append('<p class="note">An entry holds one gate batch (1..2,048 grants).</p>')
    out.append(_dead_letters(snap.dead_letters, base, csrf))
    out.append("</section>")
    return "".join(out)


def _dead_letters(sec: Section, base: str, csrf: str) -> str:
    out = ['<h3 id="dead-letters">Dead letters</h3>']
    problem = _section_problem(sec)
    if problem:
        return out[0] + problem
    if not sec.rows:
        return out[0] + '<p class="na">None.</p>'
    out.append(
        "<table><thead><tr><th>campaign</th><th>id</th><th>reason</th><th>deliveries</th><th>user</th>"
        "<th>seq</th><th>re-drives</th><th>dead-lettered at</th><th></th></tr></thead><tbody>"
    )
    for d in sec.rows:
        ids = {"campaign_id": d.campaign_id, "id": d.id}
        link = f"{base}/deadletters/{d.campaign_id}/{quote(d.id, safe='')}"
        out.append(
            f'<tr class="dead-letter" data-id="{_e(d.id)}" data-campaign="{d.campaign_id}">'
            f'<td>{d.campaign_id}</td><td>{_e(d.id)}</td><td class="reason">{_e(d.reason)}</td>'
            f'<td class="num">{d.deliveries}</td><td>{_e(d.user_id)}</td><td>{_e(d.seq)}</td>'
            f'<td class="num">{_e(getattr(d, "redrives", ""))}</td>'
            f'<td>{_time(d.dead_lettered_at)}</td><td class="actions">'
            f'<a href="{_e(link)}">inspect</a> '
            + _form(base, csrf, "redrive", "re-drive", ids)
            + _form(base, csrf, "drop", "drop", ids, confirm=f"Drop dead letter {d.id}? Its grant is given up.")
            + "</td></tr>"
        )
    out.append("</tbody></table>")
    out.append(_form(base, csrf, "redrive_all", "re-drive all", {}))
    return "".join(out)


def dead_letter_page(base: str, d: Any, csrf: str) -> str:
    ids = {"campaign_id": d.campaign_id, "id": d.id}
    rows = [
        ("campaign", d.campaign_id),
        ("id", d.id),
        ("grant-log entry", d.entry_id),
        ("reason", d.reason),
        ("deliveries", d.deliveries),
        ("seq", d.seq),
        ("user", d.user_id),
        ("request id", d.request_id),
        ("dead-lettered at", _time(d.dead_lettered_at)),
        ("user ordinal", getattr(d, "user_ordinal", None)),
        ("re-drives", getattr(d, "redrives", None)),
    ]
    fields = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in sorted(d.fields.items()))
    return (
        _head(base, f"couponcore ops: dead letter {d.id}")
        + f'<main><p><a href="{_e(base)}/">← ops page</a></p><h1>Dead letter {_e(d.id)}</h1>'
        + '<table class="kv">'
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
        + "</table><h2>Raw fields</h2>"
        + f'<table class="kv">{fields}</table><p>'
        + _form(base, csrf, "redrive", "re-drive", ids)
        + _form(base, csrf, "drop", "drop", ids, confirm=f"Drop dead letter {d.id}? Its grant is given up.")
        + "</p></main></body></html>"
    )


def _schedules(sec: Section) -> str:
    if not sec.available or sec.error or not sec.rows:
        return _section_problem(sec)
    out = [
        '<h3 id="schedules">Schedules</h3><table><thead><tr><th>job</th><th>cron</th><th>next run</th>'
        "<th>last run</th><th>last state</th></tr></thead><tbody>"
    ]
    for s in sec.rows:
        state = s.last_state or ""
        out.append(
            f"<tr><td>{_e(s.name)}</td><td><code>{_e(s.cron)}</code></td><td>{_time(s.next_run_at)}</td>"
            f'<td>{_time(s.last_run_at)}</td><td><span class="state {_e(state)}">{_e(state or "—")}</span></td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def _jobs(sec: Section, schedules: Section, base: str, csrf: str) -> str:
    out = ['<section id="jobs"><h2>Jobs</h2>']
    problem = _section_problem(sec)
    if problem:
        return out[0] + problem + "</section>"
    out.append(_schedules(schedules))
    out.append('<h3 id="runs">Runs</h3>')
    if not sec.rows:
        return "".join(out) + '<p class="na">No job runs yet.</p></section>'
    out.append(
        "<table><thead><tr><th>id</th><th>job</th><th>state</th><th>progress</th><th>attempts</th>"
        "<th>created</th><th>finished</th><th>error</th><th></th></tr></thead><tbody>"
    )
    for j in sec.rows:
        if j.progress_total:
            pct = 100 * j.progress_done / j.progress_total
            progress = f'<progress max="100" value="{pct:.1f}"></progress> {j.progress_done}/{j.progress_total}'
        else:
            progress = f"{j.progress_done}" if j.progress_done else "—"
        rerun = _form(base, csrf, "rerun", "re-run", {"job_id": j.id}) if j.state in ("failed", "cancelled") else ""
        out.append(
            f'<tr class="job" data-job="{j.id}"><td>{j.id}</td><td>{_e(j.name)}</td>'
            f'<td><span class="state {_e(j.state)}">{_e(j.state)}</span></td><td>{progress}</td>'
            f'<td class="num">{j.attempts}</td><td>{_time(j.created_at)}</td><td>{_time(j.finished_at)}</td>'
            f'<td class="reason">{_e(j.error or "")}</td><td>{rerun}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _wallet(sec: Section, base: str, csrf: str, last_audit: Optional[tuple[dt.datetime, dict[str, Any]]]) -> str:
    out = ['<section id="wallets"><h2>Wallets</h2>']
    problem = _section_problem(sec)
    if problem:
        out.append(problem)
    elif sec.rows:
        out.append('<table class="kv"><tbody>')
        out.extend(f'<tr><th>{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in sec.rows)
        out.append('</tbody></table><p class="note">Counters of this process since it opened its wallets.</p>')
    else:
        out.append(f'<p class="na">{_e(sec.note)}.</p>')
    if last_audit is not None:
        at, result = last_audit
        ok = result.get("ok")
        out.append(
            f'<p>Last audit {_time(at)}: <strong class="{"ok" if ok else "error"}">{"ok" if ok else "NOT OK"}'
            "</strong></p>"
        )
        out.append('<table class="kv"><tbody>')
        out.extend(f'<tr><th>{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in sorted(result.items()))
        out.append("</tbody></table>")
    out.append(
        '<p class="note">The audit checks every wallet\'s invariants (a full scan of the wallet tables).</p>'
        + _form(base, csrf, "audit", "run the wallet audit", {})
    )
    out.append("</section>")
    return "".join(out)
