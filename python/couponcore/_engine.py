"""The Pythonic face of the native engine: ``couponcore.open()`` returns an :class:`Engine`.

An engine is seen through a partner :class:`Scope`: everything a scope does reaches only that
partner's campaigns and coupons, and another partner's object raises ``NotFound`` exactly like
an unknown id. The engine itself is the scope of partner 0, the embedded default::

    engine.campaigns / engine.coupons / engine.issue(...)     partner 0
    partner = engine.authenticate(api_key)                    a Partner (or Unauthenticated)
    shop = engine.partner(partner)                            the same API, for that partner
    engine.partners.create("Acme") / rotate / revoke          operator calls
    engine.expire_coupons()                                   the expiry job, every partner
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from . import _core
from ._types import (
    Campaign,
    CampaignStats,
    Coupon,
    CouponCounts,
    CouponPage,
    CouponState,
    DeadLetter,
    ExpireReport,
    LogBacklog,
    Partner,
    PartnerKey,
    TimeLike,
    UseResult,
    WriterInfo,
    from_core,
    to_us,
)
from ._wallet import CheckoutCancelResult, CheckoutResult, Points, PointsAdmin
from .events import Events

if TYPE_CHECKING:
    from .jobs import Jobs

DEFAULT_PATH = "couponcore.db"
COUPON_PAGE_DEFAULT = 50  # limits::kCouponPageDefault; at most 1,000 (docs/limits.md)
_OWNED_CAMPAIGNS_MAX = 10_000  # campaign ids a scope remembers as its partner's
_SCOPES_MAX = 10_000  # partner scopes an engine keeps for reuse
T = TypeVar("T")


async def _offload(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call that is not on a hot path in the loop's default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def _partner_id(partner: Union[int, Partner]) -> int:
    if isinstance(partner, Partner):
        return partner.id
    if isinstance(partner, bool) or not isinstance(partner, int):
        raise _core.InvalidType(f"partner must be an int or a Partner, got {type(partner).__name__}")
    if partner < 0:
        raise _core.InvalidArgument("partner ids are not negative")
    return partner


class Campaigns:
    """``scope.campaigns``: create, read and steer the scope's partner's campaigns."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._core = scope._core

    def create(
        self,
        name: str,
        quantity: int,
        per_user_limit: int = 1,
        starts_at: Optional[TimeLike] = None,
        ends_at: Optional[TimeLike] = None,
        *,
        discount_kind: str = "none",
        discount_value: int = 0,
        discount_max: Optional[int] = None,
        min_order_amount: int = 0,
        valid_until: Optional[TimeLike] = None,
        valid_days: Optional[int] = None,
        shards: int = 1,
    ) -> Campaign:
        """Create a campaign of ``quantity`` coupons, at most ``per_user_limit`` per user,
        issued between ``starts_at`` (inclusive) and ``ends_at`` (exclusive) when given.

        A coupon is worth ``discount_value`` minor units (``discount_kind="fixed"``) or percent
        (``"percent"``, 1..100, capped at ``discount_max`` when given) of an order of at least
        ``min_order_amount``; it is valid until ``valid_until``, or for ``valid_days`` days after
        it was issued, or forever. The campaign belongs to this scope's partner.

        ``shards`` (1..16, production only): the stock is spread over that many Redis hash tags
        (on Redis Cluster, up to that many masters); a user is routed to one shard, stock moves
        to a shard that runs dry. The embedded engine accepts it and decides in one gate.
        See docs/production.md "Sharded campaigns".
        """
        spec = {
            "name": name,
            "quantity": quantity,
            "per_user_limit": per_user_limit,
            "starts_at_us": to_us(starts_at, "starts_at"),
            "ends_at_us": to_us(ends_at, "ends_at"),
            "discount_kind": discount_kind,
            "discount_value": discount_value,
            "discount_max": discount_max,
            "min_order_amount": min_order_amount,
            "valid_until_us": to_us(valid_until, "valid_until"),
            "valid_days": valid_days,
            "shards": shards,
            "partner_id": self._scope.partner_id,
        }
        return from_core(Campaign, self._core.create_campaign(spec))

    async def acreate(self, name: str, quantity: int, **kwargs: Any) -> Campaign:
        """``create`` for asyncio (runs in the loop's default executor)."""
        return await _offload(functools.partial(self.create, name, quantity, **kwargs))

    async def aget(self, campaign_id: int) -> Campaign:
        return await _offload(self.get, campaign_id)

    def get(self, campaign_id: int) -> Campaign:
        """The campaign as recorded in the store."""
        return from_core(Campaign, self._core.get_campaign_for(self._scope.partner_id, campaign_id))

    def list(self) -> list[Campaign]:
        """The partner's campaigns, by id."""
        return [from_core(Campaign, t) for t in self._core.list_campaigns(self._scope.partner_id)]

    # asyncio twins (the loop's default executor; none of these is on a hot path)
    async def alist(self) -> builtins.list[Campaign]:
        return await _offload(self.list)

    async def apause(self, campaign_id: int) -> Campaign:
        return await _offload(self.pause, campaign_id)

    async def aresume(self, campaign_id: int) -> Campaign:
        return await _offload(self.resume, campaign_id)

    async def aclose(self, campaign_id: int) -> Campaign:
        return await _offload(self.close, campaign_id)

    async def aset_quantity(self, campaign_id: int, quantity: int) -> Campaign:
        return await _offload(self.set_quantity, campaign_id, quantity)

    def pause(self, campaign_id: int) -> Campaign:
        """Stop issuing for now (issue answers ``NOT_OPEN``). Issued coupons stay usable."""
        return from_core(Campaign, self._core.pause_campaign(self._scope.partner_id, campaign_id))

    def resume(self, campaign_id: int) -> Campaign:
        """Issue again after a pause."""
        return from_core(Campaign, self._core.resume_campaign(self._scope.partner_id, campaign_id))

    def close(self, campaign_id: int) -> Campaign:
        """Stop issuing for good (issue answers ``ENDED``); later rule changes raise Conflict."""
        return from_core(Campaign, self._core.close_campaign(self._scope.partner_id, campaign_id))

    def set_quantity(self, campaign_id: int, quantity: int) -> Campaign:
        """Change the quantity while the campaign runs: never below the coupons already issued
        (``Conflict``). Raising it reopens a sold-out campaign."""
        return from_core(Campaign, self._core.set_campaign_quantity(self._scope.partner_id, campaign_id, quantity))


class Coupons:
    """``scope.coupons``: redeem, cancel and look up the scope's partner's coupons."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._core = scope._core

    def use(self, coupon_id: int, user_id: str, order_id: str, order_amount: int) -> UseResult:
        """Redeem ``coupon_id`` held by ``user_id`` for an order of ``order_amount`` minor units.

        Checks owner, state, validity and minimum order, computes the discount and marks the
        coupon used in one atomic step. Of two concurrent uses one wins, the other raises
        ``Conflict``. Repeating the call with the same ``order_id`` returns the first result.
        Raises ``NotFound`` (unknown coupon, another user's or partner's), ``Conflict`` (used,
        expired), ``InvalidArgument`` (bad amounts, below the minimum order), ``Unavailable``
        (production: just issued and not yet in the store; retry).
        """
        return from_core(
            UseResult, self._core.use_coupon(self._scope.partner_id, coupon_id, user_id, order_id, order_amount)
        )

    def cancel_use(self, coupon_id: int, order_id: str) -> Coupon:
        """Undo ``order_id``'s use: the coupon is issued again, or expired if its validity passed
        meanwhile (see the returned state). Repeats are harmless."""
        return from_core(Coupon, self._core.cancel_coupon_use(self._scope.partner_id, coupon_id, order_id))

    def get(self, coupon_id: int) -> Coupon:
        """One coupon, with its state as of now."""
        return from_core(Coupon, self._core.get_coupon(self._scope.partner_id, coupon_id))

    def list_for_user(
        self,
        user_id: str,
        state: Optional[Union[CouponState, str]] = None,
        cursor: Optional[int] = None,
        limit: int = COUPON_PAGE_DEFAULT,
    ) -> CouponPage:
        """A page of ``user_id``'s coupons (optionally in one state), by coupon id. Pass the
        page's ``next_cursor`` as ``cursor`` for the next one; ``limit`` is 1..1,000."""
        page = self._core.list_user_coupons(self._scope.partner_id, user_id, state, cursor, limit)
        return from_core(CouponPage, page)

    def counts(self, campaign_id: int) -> CouponCounts:
        """The campaign's coupons by state."""
        return from_core(CouponCounts, self._core.coupon_counts(self._scope.partner_id, campaign_id))

    async def alist_for_user(self, user_id: str, **kwargs: Any) -> CouponPage:
        return await _offload(functools.partial(self.list_for_user, user_id, **kwargs))

    async def acounts(self, campaign_id: int) -> CouponCounts:
        return await _offload(self.counts, campaign_id)

    async def ause(self, coupon_id: int, user_id: str, order_id: str, order_amount: int) -> UseResult:
        """``use`` for asyncio (runs in the loop's default executor)."""
        return await _offload(self.use, coupon_id, user_id, order_id, order_amount)

    async def acancel_use(self, coupon_id: int, order_id: str) -> Coupon:
        return await _offload(self.cancel_use, coupon_id, order_id)

    async def aget(self, coupon_id: int) -> Coupon:
        return await _offload(self.get, coupon_id)


class Partners:
    """``engine.partners``: the operator's partner and API key management."""

    def __init__(self, engine: Engine) -> None:
        self._core = engine._core

    def create(self, name: str) -> PartnerKey:
        """A new partner and its API key. The key is shown only here: store it now."""
        return from_core(PartnerKey, self._core.create_partner(name))

    def rotate(self, partner: Union[int, Partner]) -> PartnerKey:
        """A new API key for the partner; every older key stops working."""
        return from_core(PartnerKey, self._core.rotate_partner_key(_partner_id(partner)))

    def revoke(self, partner: Union[int, Partner]) -> Partner:
        """Revoke every key of the partner (``rotate`` issues a new one). Takes effect at once in
        this engine and within the auth cache TTL in every other engine."""
        return from_core(Partner, self._core.revoke_partner_keys(_partner_id(partner)))

    def get(self, partner_id: int) -> Partner:
        return from_core(Partner, self._core.get_partner(partner_id))

    def list(self, after: int = 0, limit: int = 100) -> list[Partner]:
        """Partners by id after ``after`` (partner 0 is never listed); ``limit`` 1..1,000."""
        return [from_core(Partner, t) for t in self._core.list_partners(after, limit)]


class DeadLetters:
    """Dead letters as a tool (``engine.dead_letters``): grants that left the grant log without
    reaching PostgreSQL -- a malformed entry, or a grant the store refused on its
    ``writer_dead_letter_after_deliveries``-th delivery. List and inspect them, re-drive a grant
    once its cause is fixed, or drop it (the grant is void; the gate gets its seq and the user's
    slot back). Production only: the embedded engine has no grant log (``list()`` is empty,
    the others raise NotFound). Semantics and invariants: docs/dead-letters.md."""

    PAGE_MAX = 1000  # kDeadLettersPageMax

    def __init__(self, engine: Engine) -> None:
        self._core = engine._core

    def list(
        self, campaign_id: Optional[int] = None, *, after: Optional[str] = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Records of one campaign, or of every campaign (``campaign_id=None``), ordered by
        (campaign, id), at most ``limit`` (1..1000). Page with ``after``: the last record's
        ``id`` for one campaign; ``f"{d.campaign_id}:{d.id}"`` across campaigns."""
        return [from_core(DeadLetter, t) for t in self._core.list_dead_letters(campaign_id, after, limit)]

    def get(self, campaign_id: int, id: str) -> DeadLetter:
        """One record; NotFound if it is not (or no longer) there."""
        return from_core(DeadLetter, self._core.dead_letter(campaign_id, id, "get"))

    def redrive(self, campaign_id: int, id: str) -> DeadLetter:
        """Put the record's grant back into the grant log (same seq, user, request) and delete
        the record, atomically; the writers then write it like any grant. Returns the record.
        NotFound if it is gone (a second redrive of the same id)."""
        return from_core(DeadLetter, self._core.dead_letter(campaign_id, id, "redrive"))

    def drop(self, campaign_id: int, id: str) -> DeadLetter:
        """Void the record's grant: delete it and, atomically, give the gate back its seq (unless
        a row holds it) and the user's slot; its coupon then answers NotFound. Returns the
        record. NotFound if it is gone."""
        return from_core(DeadLetter, self._core.dead_letter(campaign_id, id, "drop"))

    def redrive_all(self, campaign_id: Optional[int] = None) -> int:
        """Re-drive every record of one campaign (or of all), page by page; returns how many
        were re-driven (a record another process took meanwhile is skipped)."""
        done = 0
        after: Optional[str] = None
        while True:
            page = self.list(campaign_id, after=after, limit=self.PAGE_MAX)
            for d in page:
                try:
                    self.redrive(d.campaign_id, d.id)
                    done += 1
                except _core.NotFound:
                    pass
            if len(page) < self.PAGE_MAX:
                return done
            last = page[-1]
            after = last.id if campaign_id is not None else f"{last.campaign_id}:{last.id}"

    async def alist(
        self, campaign_id: Optional[int] = None, *, after: Optional[str] = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        return await _offload(functools.partial(self.list, campaign_id, after=after, limit=limit))

    async def aredrive(self, campaign_id: int, id: str) -> DeadLetter:
        return await _offload(self.redrive, campaign_id, id)

    async def adrop(self, campaign_id: int, id: str) -> DeadLetter:
        return await _offload(self.drop, campaign_id, id)


class Scope:
    """An engine seen by one partner: campaigns, issuance and coupons of that partner only.

    Get one with :meth:`Engine.partner`; the engine itself is partner 0's scope.
    """

    def __init__(
        self,
        core: _core.Engine,
        partner_id: int,
        wallets: Optional[Callable[[], _core.Wallets]] = None,
    ) -> None:
        self._core = core
        self._partner_id = partner_id
        self._wallets_of_engine = wallets
        # Campaign ids seen to be this partner's. A campaign's partner never changes, so a hit
        # is exact; it spares the issue hot path a native call. Bounded: cleared when full.
        self._owned: set[int] = set()
        # Partner 0 always exists; another partner is looked up once, when its wallets are first
        # asked for (partners are never deleted, so a positive answer stays true).
        self._partner_exists = partner_id == 0
        self.campaigns = Campaigns(self)
        self.coupons = Coupons(self)

    def _check(self, campaign_id: int) -> None:
        """NotFound unless the campaign is this partner's (as for an unknown id)."""
        if type(campaign_id) is int and campaign_id in self._owned:
            return
        self._core.check_campaign(self._partner_id, campaign_id)
        if len(self._owned) >= _OWNED_CAMPAIGNS_MAX:
            self._owned.clear()
        self._owned.add(campaign_id)

    @property
    def points(self) -> Points:
        """This partner's point wallets (couponcore._wallet.Points); ``NotFound`` for a partner
        that does not exist, as for its campaigns."""
        if self._wallets_of_engine is None:
            raise _core.Unavailable("this engine has no wallets")
        if not self._partner_exists:
            self._core.get_partner(self._partner_id)
            self._partner_exists = True
        return Points(self._wallets_of_engine, self._partner_id)

    @property
    def partner_id(self) -> int:
        return self._partner_id

    def _checkout_points(self) -> Points:
        if self._wallets_of_engine is None:
            raise _core.Unavailable("this engine has no wallets")
        engine = getattr(self._wallets_of_engine, "__self__", None)
        refusal = getattr(engine, "_checkout_refusal", None)
        if refusal:
            raise _core.Unavailable(refusal)
        return self.points

    def checkout(
        self,
        user_id: str,
        order_id: str,
        order_amount: int,
        coupon_id: Optional[int] = None,
        points: int = 0,
        *,
        idempotency_key: str,
    ) -> CheckoutResult:
        """Use a coupon and points for one order in ONE transaction: both or neither (see
        ``Points.checkout``). Retry with the same ``idempotency_key``; cancel with
        :meth:`cancel_checkout`."""
        return self._checkout_points().checkout(
            user_id, order_id, order_amount, coupon_id, points, idempotency_key=idempotency_key
        )

    def cancel_checkout(
        self,
        user_id: str,
        checkout_key: Optional[str] = None,
        *,
        order_id: Optional[str] = None,
        idempotency_key: str,
    ) -> CheckoutCancelResult:
        """Undo a checkout, named by its idempotency key or by its order id (the order's latest
        checkout): the coupon and the points come back together."""
        return self._checkout_points().cancel_checkout(
            user_id, checkout_key, order_id=order_id, idempotency_key=idempotency_key
        )

    async def acheckout(self, user_id: str, order_id: str, order_amount: int, **kwargs: Any) -> CheckoutResult:
        """``checkout`` for asyncio (runs in the loop's default executor)."""
        return await _offload(functools.partial(self.checkout, user_id, order_id, order_amount, **kwargs))

    async def acancel_checkout(
        self, user_id: str, checkout_key: Optional[str] = None, **kwargs: Any
    ) -> CheckoutCancelResult:
        return await _offload(functools.partial(self.cancel_checkout, user_id, checkout_key, **kwargs))

    def issue(self, campaign_id: int, user_id: str, request_id: Optional[str] = None) -> _core.IssueResult:
        """Ask for one coupon. Returns when the answer is final; an ISSUED answer is durable.

        A repeated ``request_id`` (per user) returns the first answer instead of deciding again.
        """
        self._check(campaign_id)
        return self._core.issue(campaign_id, user_id, request_id)

    def issue_many(
        self,
        campaign_id: int,
        user_ids: Sequence[str],
        request_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> list[_core.IssueResult]:
        """Decide a batch of requests for one campaign in one call, in order."""
        self._check(campaign_id)
        return self._core.issue_many(campaign_id, user_ids, request_ids)

    async def aissue(self, campaign_id: int, user_id: str, request_id: Optional[str] = None) -> _core.IssueResult:
        """``issue`` for asyncio: never blocks the event loop. Concurrent coroutines are decided
        in the same batches as threads. Cancelling the awaiting task is safe: the decision may
        still happen, and a retry with the same ``request_id`` then gets its answer."""
        self._check(campaign_id)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._core.submit_issue(campaign_id, user_id, request_id, loop, future)
        return await future  # type: ignore[no-any-return]

    async def aissue_many(
        self,
        campaign_id: int,
        user_ids: Sequence[str],
        request_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> list[_core.IssueResult]:
        """``issue_many`` for asyncio."""
        self._check(campaign_id)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._core.submit_issue_many(campaign_id, user_ids, request_ids, loop, future)
        return await future  # type: ignore[no-any-return]

    def stats(self, campaign_id: int) -> CampaignStats:
        """Rows, distinct users and seq range of the campaign's coupons in the store."""
        self._check(campaign_id)
        return from_core(CampaignStats, self._core.campaign_stats(campaign_id))

    async def astats(self, campaign_id: int) -> CampaignStats:
        return await _offload(self.stats, campaign_id)

    def gate_issued(self, campaign_id: int) -> Optional[int]:
        """Coupons the gate has granted so far (durable; the store catches up as the writers
        drain the grant log), read without side effects: ``quantity - gate_issued`` is the stock
        left. None while the production gate's state is not in Redis (it is rebuilt from the log,
        the dead letters and the store at the campaign's next issue)."""
        self._check(campaign_id)
        return self._core.gate_issued(campaign_id)

    def __repr__(self) -> str:
        return f"<couponcore.Scope partner={self._partner_id}>"


class Engine(Scope):
    """One engine, two deployments, one API. As a :class:`Scope` it is partner 0's.

    Thread-safe: share one engine between threads; blocking calls release the GIL, and
    concurrent callers are decided together in batches.
    """

    def __init__(self, core: _core.Engine, open_wallets: Optional[Callable[[], _core.Wallets]] = None) -> None:
        super().__init__(core, 0, self._wallets)
        self.partners = Partners(self)
        self._scopes: dict[int, Scope] = {0: self}
        self._open_wallets = open_wallets
        self._wallets_native: Optional[_core.Wallets] = None
        self._wallets_lock = threading.Lock()
        self._cleanup: list[Callable[[], None]] = []
        # Why checkout cannot work here (its coupons and wallets are not in one database).
        self._checkout_refusal: Optional[str] = None
        self._postgres_url: Optional[str] = None  # production: where engine.jobs keeps its jobs
        self._migrate = True
        self._jobs: Optional[Jobs] = None
        # Where the store is, for Python-side tables (couponcore.bulk's checkpoints):
        # ("postgres", url), ("sqlite", path) or ("memory", None).
        self._store: tuple[str, Optional[str]] = ("memory", None)

    def _wallets(self) -> _core.Wallets:
        """The native wallet engine, opened on first use (it has its own connections and thread)."""
        w = self._wallets_native
        if w is not None:
            return w
        with self._wallets_lock:
            if self._wallets_native is None:
                if self._core.closed:
                    raise _core.Closed("the engine is closed")
                if self._open_wallets is None:
                    raise _core.Unavailable("this engine has no wallets")
                self._wallets_native = self._open_wallets()
            return self._wallets_native

    @property
    def points(self) -> PointsAdmin:
        """Partner 0's point wallets, and the operator's wallet jobs (expire, audit)."""
        return PointsAdmin(self._wallets, 0)

    @property
    def jobs(self) -> Jobs:
        """The maintenance jobs (``couponcore.jobs.Jobs``, procrastinate): run, queue, list,
        re-run, cancel, and the in-process periodic runner. Needs ``couponcore[jobs]``."""
        if self._jobs is None:
            with self._wallets_lock:
                if self._jobs is None:
                    if self._core.closed:
                        raise _core.Closed("the engine is closed")
                    from .jobs import Jobs
                    from .jobs._store import migrate as migrate_jobs

                    if self._postgres_url is not None and self._migrate:
                        migrate_jobs(self._postgres_url)
                    self._jobs = Jobs(self, dsn=self._postgres_url)
        return self._jobs

    @property
    def kind(self) -> str:
        """``"embedded"`` or ``"production"``."""
        return self._core.kind

    @property
    def closed(self) -> bool:
        return self._core.closed

    def partner(self, partner: Union[int, Partner]) -> Scope:
        """The scope of one partner (a Partner, e.g. from :meth:`authenticate`, or its id).
        Cheap: nothing is looked up, and scopes are reused; an unknown partner's scope finds
        nothing."""
        pid = _partner_id(partner)
        scope = self._scopes.get(pid)
        if scope is None:
            if len(self._scopes) >= _SCOPES_MAX:
                self._scopes = {0: self}
            scope = self._scopes[pid] = Scope(self._core, pid, self._wallets)
        return scope

    def authenticate(self, api_key: str) -> Partner:
        """The partner owning ``api_key``; ``Unauthenticated`` for unknown, revoked and malformed
        keys alike. Answered from a cache in steady state (see ``auth_counters``)."""
        return from_core(Partner, self._core.authenticate(api_key))

    async def aauthenticate(self, api_key: str) -> Partner:
        """``authenticate`` for asyncio (a cache miss goes to Redis or the database)."""
        return await _offload(self.authenticate, api_key)

    def auth_counters(self) -> dict[str, int]:
        """Authentication counters since open; ``db_queries`` counts lookups that reached the
        database."""
        return self._core.auth_counters()

    def expire_coupons(
        self, now: Optional[TimeLike] = None, chunk_rows: int = 1000, chunks_max: int = 1000
    ) -> ExpireReport:
        """The expiry job, for every partner: marks coupons whose validity has passed (by
        ``now``, default the current time) as expired, ``chunk_rows`` (1..10,000) per short
        transaction, at most ``chunks_max`` chunks. Run it on a schedule."""
        now_us = to_us(now, "now")
        if now_us is None:
            now_us = time.time_ns() // 1000
        return from_core(ExpireReport, self._core.expire_coupons(now_us, chunk_rows, chunks_max))

    async def adrain(self, timeout_s: float = 30.0) -> bool:
        return await _offload(self.drain, timeout_s)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every grant acknowledged so far is in the store; False on timeout."""
        return self._core.drain(timeout_s)

    def reconcile(self, campaign_id: int) -> dict[str, Any]:
        """Compare the gate (Redis counter and holders) with the store's rows for a campaign,
        re-drive grants that are in the grant log but missing from the store, and report."""
        return self._core.reconcile(campaign_id)

    async def areconcile(self, campaign_id: int) -> dict[str, Any]:
        return await _offload(self.reconcile, campaign_id)

    def counters(self) -> dict[str, Any]:
        """Monotonic counters since open (requests, issued, batches, commits, ...)."""
        return self._core.counters()

    @property
    def events(self) -> Events:
        """Domain events: ``consume`` / ``aconsume`` / ``ack`` / ``dead_letter`` (docs/events.md)."""
        return Events(self)

    @property
    def dead_letters(self) -> DeadLetters:
        """The grant log's dead letters: list / get / redrive / drop (docs/dead-letters.md)."""
        return DeadLetters(self)

    def log_backlog(self) -> list[LogBacklog]:
        """The grant log's backlog, one value per campaign with a log, by campaign id: entries
        waiting, entries pending at a writer, the oldest pending entry's age (on the Redis
        server's clock) and dead letters. Production only, at most 10,000 campaigns (the newest
        ids) per call; the embedded engine returns ``[]`` (its log is the SQLite commit itself)."""
        return [from_core(LogBacklog, t) for t in self._core.log_backlog()]

    def writers(self, *, pending: bool = True) -> list[WriterInfo]:
        """The deployment's grant writers by heartbeat, by consumer name: every writer consumer
        (in-process or ``couponcore worker``) beats on the Redis server's clock about every
        second; one silent for ``writer_dead_after_ms`` (3 s) is dead and a live writer takes
        its pending entries over. With ``pending=False`` only the heartbeats are read (one round
        trip, ``pending`` is 0): for probes. Production only (the embedded engine returns ``[]``)."""
        return [from_core(WriterInfo, t) for t in self._core.writers(pending)]

    def metrics_text(self) -> str:
        """The engine's metrics in Prometheus text format (see ``couponcore.metrics``)."""
        from .metrics import render

        return render(self)

    def close(self) -> None:
        """Finish what is queued, stop the engine's threads. Later calls raise Closed."""
        if self._jobs is not None:
            self._jobs.close()  # the in-process runner finishes the job in hand first
        with self._wallets_lock:
            if self._wallets_native is not None:
                self._wallets_native.close()
        self._core.close()
        while self._cleanup:
            self._cleanup.pop()()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<couponcore.Engine {self._core.kind if not self.closed else ''} {state}>"


def _auth_ttl_ms(auth_cache_ttl_s: Optional[float]) -> Optional[int]:
    if auth_cache_ttl_s is None:
        return None
    if isinstance(auth_cache_ttl_s, bool) or not isinstance(auth_cache_ttl_s, (int, float)):
        raise _core.InvalidType("auth_cache_ttl_s must be a number of seconds")
    if not -1e12 <= auth_cache_ttl_s <= 1e12:  # inf and NaN too; the core checks the real range
        raise _core.InvalidArgument("auth_cache_ttl_s is out of range")
    return int(round(auth_cache_ttl_s * 1000))


def open(  # noqa: A001
    path: Optional[str] = None,
    *,
    redis: Optional[str] = None,
    postgres: Optional[str] = None,
    key_prefix: str = "cc:",
    writer_threads: int = 1,
    migrate: bool = True,
    synchronous_full: bool = True,
    auth_cache_ttl_s: Optional[float] = None,
    auth_cache_entries_max: Optional[int] = None,
    events: bool = True,
    **options: Any,
) -> Engine:
    """Open an engine. One API, two deployments:

    - ``couponcore.open()`` / ``couponcore.open("sale.db")``: the embedded engine, an in-process
      gate and a SQLite file (WAL, synchronous=FULL). ``path`` defaults to ``couponcore.db`` in
      the working directory; ``":memory:"`` keeps everything in memory.
    - ``couponcore.open(redis="redis://host:6379/0", postgres="postgresql://.../db")``: the
      production deployment, a Redis gate (one Lua call per batch), a Redis Stream per
      campaign as the grant log, and PostgreSQL as the store, written by ``writer_threads``
      native writers in this process (0 when separate ``couponcore worker`` processes write).
      ``key_prefix`` starts every Redis key; ``migrate`` applies the schema on open. Further
      tuning options (``answer_ttl_s``, ``gate_batch_requests_max``, ``writer_block_ms``,
      ``lifecycle_conns_max``, ...) are passed on as keyword arguments; see docs/production.md.
      A misspelt option is ``InvalidArgument``, not ignored. On Redis Cluster, give its seeds:
      ``redis="redis+cluster://host:7000,host:7001"`` (docs/production.md, "Running on Redis
      Cluster"); one hot campaign spreads over several masters with
      ``campaigns.create(..., shards=K)`` (docs/production.md, "Sharded campaigns"). Behind Redis
      Sentinel, give the sentinels and the master's name:
      ``redis="redis+sentinel://host:26379,host:26380/mymaster"``.
      ``replicas_acked=1, replica_wait_ms=100`` answer ``ISSUED`` only for batches that many
      replicas hold (one ``WAIT`` per master per pipeline of batches; else a re-send, or
      ``Unavailable`` "not yet replicated": retry with the same request_id), so a failover loses
      no acknowledged grant (docs/production.md, "Running on Redis Cluster / with replicas").

    Both: the point wallets' engine takes ``wallet_batch_ops_max`` (operations per
    transaction, default 1,024), ``wallet_queue_ops_max`` (queued operations before callers
    wait, default 100,000), ``wallet_queue_full_wait_ms`` (then ``Unavailable``, default
    10,000), ``wallet_retry_budget_ms`` (how long a batch retries a deadlock or a lost
    connection, default 30,000) and, production only, ``wallet_committers`` (parallel batch
    connections, default 2; SQLite has one writer). They are checked here, at open; the
    wallet engine itself opens on first use. See docs/wallet.md.

    Both: ``events`` (default True) writes a domain event with each change, in its transaction
    (docs/events.md; ``events=False`` measures the cost). Production runs a relay thread that
    publishes them to Redis Streams (``events_relay=False``: this engine relays nothing;
    ``events_relay_poll_ms``, ``events_relay_batch_max``, ``events_stream_maxlen``).

    Both: ``auth_cache_ttl_s`` (default 30 s, at most 3,600; 0 disables) and
    ``auth_cache_entries_max`` (default 10,000) size the in-process authentication cache (the
    production deployment also shares entries through Redis for the same TTL).
    """
    wallet_opts = {k: options.pop(k) for k in [k for k in options if k.startswith("wallet_")]}
    _core.check_wallet_options(wallet_opts)
    wallet_opts["wallet_events"] = bool(events)
    if redis is not None or postgres is not None:
        if path is not None:
            raise _core.InvalidArgument("give either path (embedded) or redis and postgres (production)")
        if not isinstance(redis, str) or not isinstance(postgres, str):
            raise _core.InvalidType("the production deployment needs both redis and postgres URLs (str)")
        for name, value in (("key_prefix", key_prefix),):
            if not isinstance(value, str):
                raise _core.InvalidType(f"{name} must be a str")
        if isinstance(writer_threads, bool) or not isinstance(writer_threads, int) or not 0 <= writer_threads <= 64:
            raise _core.InvalidArgument("writer_threads must be an int in 0..64")
        opts = dict(options)
        opts.update(
            redis_url=redis,
            postgres_url=postgres,
            key_prefix=key_prefix,
            writer_threads=writer_threads,
            migrate_on_open=bool(migrate),
            auth_cache_ttl_ms=_auth_ttl_ms(auth_cache_ttl_s),
            auth_cache_entries_max=auth_cache_entries_max,
            events=bool(events),
        )
        engine = Engine(_core.open_production(opts), lambda: _core.open_wallets_postgres(postgres, wallet_opts))
        engine._postgres_url, engine._migrate = postgres, bool(migrate)
        engine._store = ("postgres", postgres)
        return engine
    if options:
        raise _core.InvalidArgument(f"unknown options for the embedded engine: {sorted(options)}")
    if wallet_opts.get("wallet_committers") not in (None, 1):
        raise _core.InvalidArgument("wallet_committers: the embedded wallet store has one writer (SQLite)")
    if path is None:
        path = DEFAULT_PATH
    if not isinstance(path, (str, os.PathLike)):
        raise _core.InvalidType(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    ttl_ms = _auth_ttl_ms(auth_cache_ttl_s)
    engine = Engine(_core.open_embedded(path, synchronous_full, ttl_ms, auth_cache_entries_max, bool(events)))
    if path == ":memory:":
        # The wallet engine needs a file (it uses two connections): a private temporary one.
        tmp = tempfile.mkdtemp(prefix="couponcore-wallets-")
        engine._open_wallets = lambda: _core.open_wallets_embedded(
            os.path.join(tmp, "wallets.db"), synchronous_full, wallet_opts
        )
        engine._cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        engine._checkout_refusal = (
            "checkout needs the coupons and the wallets in one SQLite file: open the engine with a path, not ':memory:'"
        )
    else:
        engine._open_wallets = lambda: _core.open_wallets_embedded(path, synchronous_full, wallet_opts)
        engine._store = ("sqlite", path)
    return engine


def migrate(postgres: str) -> int:
    """Apply couponcore's PostgreSQL migrations (every component); returns how many ran.
    Safe to run concurrently and repeatedly (``couponcore migrate``)."""
    if not isinstance(postgres, str):
        raise _core.InvalidType("postgres must be a URL (str)")
    return _core.migrate(postgres)
