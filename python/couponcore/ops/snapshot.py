"""What the ops page shows, read from an engine: one :class:`Snapshot` per refresh.

Every number comes from a call the engine already offers; nothing here reads Redis or the
database by itself:

- campaigns: every partner's campaigns (``engine.partners.list`` + ``list_campaigns``), the
  live ones first; per live campaign the gate's count (``gate_issued``: what the gate granted,
  a read without side effects) and the store's stats (``campaign_stats``: rows, highest seq),
  so *stock left* is ``quantity - gate issued`` (``quantity - highest stored seq`` while the
  gate's state is not loaded); *issued/s* is the change of the gate's count between two
  snapshots (of stored rows without it); *sold out at* is the ``issued_at`` of the
  coupon with ``seq == quantity`` (coupon ids are ``campaign_id * 2**32 + seq``).
- answer mix: the gate's answers by status, from this process's engine counters (not per
  campaign: the engine counts answers per status only).
- pipeline: ``engine.log_backlog()`` (production), and ``engine.dead_letters`` /
  ``engine.jobs`` where this engine has them.
- wallets: this process's wallet counters (only once the wallets are open: the page never opens
  them), and the last audit an operator ran from the page.

Limits: at most ``PARTNERS_MAX`` partners and ``CAMPAIGNS_SHOWN_MAX`` campaigns shown (the
newest), ``DEAD_LETTERS_SHOWN_MAX`` dead letters, ``JOBS_SHOWN_MAX`` jobs. A section whose call
fails says so (its error) and the others are still shown.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from typing import Any, Callable, Optional

from .. import _core
from .._types import Campaign, CampaignStats, Coupon, LogBacklog, from_core

PARTNERS_MAX = 1_000
CAMPAIGNS_SHOWN_MAX = 50
DEAD_LETTERS_SHOWN_MAX = 100
JOBS_SHOWN_MAX = 50
_RATE_SAMPLE_MIN_S = 1.0  # two samples closer than this give no rate (it would be noise)
_RATE_SAMPLE_MAX_S = 120.0  # an older sample is replaced: a rate over minutes is not "now"


@dataclasses.dataclass
class CampaignRow:
    campaign: Campaign
    live: bool
    partner_name: str = ""
    stats: Optional[CampaignStats] = None
    gate_issued: Optional[int] = None
    stock_left: Optional[int] = None
    issued_per_s: Optional[float] = None
    sold_out_at: Optional[dt.datetime] = None
    error: Optional[str] = None


@dataclasses.dataclass
class Section:
    """One section's data, or why it has none."""

    rows: list[Any] = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    available: bool = True  # False: this engine has no such API (the text says why)
    note: str = ""


@dataclasses.dataclass
class Snapshot:
    taken_at: dt.datetime
    engine_kind: str
    campaigns: Section
    campaigns_not_shown: int
    answers: dict[str, int]
    issued_per_s: Optional[float]  # this process's gate, all campaigns
    backlog: Section
    dead_letters: Section
    jobs: Section
    schedules: Section
    wallet: Section  # rows: [(name, value)]
    windows: Section = dataclasses.field(default_factory=Section)  # rows: [(campaign, [1 s window])]


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class Sampler:
    """Rates from two samples of a counter, kept between snapshots (one sampler per page). Two
    samples closer than _RATE_SAMPLE_MIN_S give the last rate measured (a rate over a few
    milliseconds would be noise)."""

    _KEYS_MAX = 10_000

    def __init__(self) -> None:
        self._samples: dict[Any, tuple[float, float, Optional[float]]] = {}  # key -> (time, value, rate)

    def rate(self, key: Any, value: float, now: float) -> Optional[float]:
        prev = self._samples.get(key)
        if prev is None or now - prev[0] > _RATE_SAMPLE_MAX_S:
            self._remember(key, now, value, None)
            return None
        elapsed = now - prev[0]
        if elapsed < _RATE_SAMPLE_MIN_S:
            return prev[2]
        rate = max(0.0, (value - prev[1]) / elapsed)
        self._remember(key, now, value, rate)
        return rate

    def _remember(self, key: Any, now: float, value: float, rate: Optional[float]) -> None:
        if key not in self._samples and len(self._samples) >= self._KEYS_MAX:
            self._samples.clear()
        self._samples[key] = (now, value, rate)


class SnapshotTaker:
    """Takes snapshots of one engine, at most one per ``min_interval_s`` (others get the cached
    one), so an open page in many browsers costs the deployment one snapshot per interval."""

    def __init__(self, engine: Any, *, min_interval_s: float = 2.0) -> None:
        self._engine = engine
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._cached: Optional[tuple[float, Snapshot]] = None
        self._sampler = Sampler()
        # Sold-out times never change: kept per (campaign id, quantity).
        self._sold_out_at: dict[tuple[int, int], dt.datetime] = {}
        self.last_audit: Optional[tuple[dt.datetime, dict[str, Any]]] = None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def take(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._min_interval_s:
                return self._cached[1]
            snap = self._take(now)
            self._cached = (now, snap)
            return snap

    # ---- the sections ----------------------------------------------------------------------

    def _take(self, now: float) -> Snapshot:
        engine = self._engine
        counters: dict[str, Any] = {}
        try:
            counters = engine.counters()
        except _core.Error:
            pass
        campaigns, not_shown = self._campaigns(now)
        issued = counters.get("issued")
        from .windows_view import windows_section

        return Snapshot(
            taken_at=dt.datetime.now(dt.timezone.utc),
            engine_kind=engine.kind,
            campaigns=campaigns,
            campaigns_not_shown=not_shown,
            answers=dict(counters.get("by_status", {})),
            issued_per_s=self._sampler.rate("engine.issued", issued, now) if issued is not None else None,
            backlog=self._backlog(),
            dead_letters=self._dead_letters(),
            jobs=self._jobs(),
            schedules=self._schedules(),
            wallet=self._wallet(),
            windows=windows_section(engine, campaigns),
        )

    def _all_campaigns(self) -> tuple[list[Campaign], dict[int, str]]:
        """Every partner's campaigns (at most PARTNERS_MAX partners), and the partners' names."""
        core = self._engine._core
        names = {0: "(default)"}
        after = 0
        while len(names) < PARTNERS_MAX:
            page = self._engine.partners.list(after=after, limit=min(1000, PARTNERS_MAX - len(names)))
            if not page:
                break
            names.update((p.id, p.name) for p in page)
            after = page[-1].id
        out: list[Campaign] = []
        for pid in names:
            out.extend(from_core(Campaign, t) for t in core.list_campaigns(pid))
        return out, names

    def _campaigns(self, now: float) -> tuple[Section, int]:
        try:
            every, names = self._all_campaigns()
        except _core.Error as e:
            return Section(error=_error(e)), 0
        wall = dt.datetime.now(dt.timezone.utc)

        def live(c: Campaign) -> bool:
            return c.state != "closed" and (c.ends_at is None or c.ends_at > wall)

        # Live campaigns first, newest first within each group.
        every.sort(key=lambda c: (not live(c), -c.id))
        shown = every[:CAMPAIGNS_SHOWN_MAX]
        rows = [self._campaign_row(c, live(c), now) for c in shown]
        for row in rows:
            row.partner_name = names.get(row.campaign.partner_id, "")
        return Section(rows=rows), len(every) - len(shown)

    def _campaign_row(self, c: Campaign, is_live: bool, now: float) -> CampaignRow:
        row = CampaignRow(campaign=c, live=is_live)
        try:
            st = from_core(CampaignStats, self._engine._core.campaign_stats(c.id))
            gate = self._engine._core.gate_issued(c.id)
        except _core.Error as e:
            row.error = _error(e)
            return row
        row.stats, row.gate_issued = st, gate
        issued = gate if gate is not None else max(st.max_seq, st.rows)
        row.stock_left = max(0, c.quantity - issued)
        row.issued_per_s = self._sampler.rate(("campaign", c.id), issued, now)
        if issued >= c.quantity:
            row.sold_out_at = self._sold_out(c)
        return row

    def _sold_out(self, c: Campaign) -> Optional[dt.datetime]:
        key = (c.id, c.quantity)
        at = self._sold_out_at.get(key)
        if at is None:
            try:
                coupon = from_core(Coupon, self._engine._core.get_coupon(c.partner_id, c.id * 2**32 + c.quantity))
            except _core.Error:
                return None  # not stored yet (or gone): no time to show
            at = coupon.issued_at
            if len(self._sold_out_at) >= 10_000:
                self._sold_out_at.clear()
            self._sold_out_at[key] = at
        return at

    def _backlog(self) -> Section:
        if self._engine.kind != "production":
            return Section(
                available=False, note="the embedded engine has no grant log: a grant is stored when it is answered"
            )
        try:
            rows: list[LogBacklog] = self._engine.log_backlog()
        except _core.Error as e:
            return Section(error=_error(e))
        return Section(rows=rows)

    def _dead_letters(self) -> Section:
        try:
            dls = _api(self._engine, "dead_letters")
        except _Missing as e:
            return Section(available=False, note=str(e))
        return _call_section(lambda: dls.list(limit=DEAD_LETTERS_SHOWN_MAX))

    def _jobs(self) -> Section:
        try:
            jobs = _api(self._engine, "jobs")
        except _Missing as e:
            return Section(available=False, note=str(e))
        return _call_section(lambda: jobs.list(limit=JOBS_SHOWN_MAX))

    def _schedules(self) -> Section:
        try:
            jobs = _api(self._engine, "jobs")
        except _Missing as e:
            return Section(available=False, note=str(e))
        return _call_section(jobs.schedules)

    def _wallet(self) -> Section:
        rows: list[tuple[str, Any]] = []
        wallets = self._engine._wallets_native  # only when open: the page never opens them
        note = ""
        if wallets is not None and not wallets.closed:
            try:
                rows.extend(sorted(wallets.counters().items()))
            except _core.Error as e:
                return Section(error=_error(e))
        else:
            note = "the wallets are not open in this process (no wallet call yet): no counters"
        return Section(rows=rows, note=note)

    def run_audit(self) -> dict[str, Any]:
        """The wallet audit (every wallet: a full scan; only on an operator's request)."""
        result = dict(self._engine.points.audit())
        self.last_audit = (dt.datetime.now(dt.timezone.utc), result)
        return result


class _Missing(Exception):
    """This engine has no such API (an older couponcore, or an extra not installed)."""


def _api(engine: Any, name: str) -> Any:
    """``engine.<name>`` (dead_letters, jobs), or _Missing saying why there is none."""
    try:
        return getattr(engine, name)
    except AttributeError:
        raise _Missing(f"this couponcore has no engine.{name}") from None
    except _core.Error as e:  # e.g. jobs without procrastinate installed
        raise _Missing(str(e)) from None


def api(engine: Any, name: str) -> Any:
    """``engine.<name>`` for an action: Unavailable (a couponcore error) when it has none."""
    try:
        return _api(engine, name)
    except _Missing as e:
        raise _core.Unavailable(str(e)) from None


def _call_section(fn: Callable[[], list[Any]]) -> Section:
    try:
        return Section(rows=list(fn()))
    except _core.Error as e:
        return Section(error=_error(e))
