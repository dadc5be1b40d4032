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
import contextvars
import functools
import threading
import time
from collections.abc import Sequence, Sized
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
from .tracing import CANCEL_USE, ISSUE, USE, SpanEmitter, client_span

if TYPE_CHECKING:
    from .jobs import Jobs

DEFAULT_PATH = "couponcore.db"
COUPON_PAGE_DEFAULT = 50  # limits::kCouponPageDefault; at most 1,000 (docs/limits.md)
_OWNED_CAMPAIGNS_MAX = 10_000  # campaign ids a scope remembers as its partner's
_SCOPES_MAX = 10_000  # partner scopes an engine keeps for reuse
T = TypeVar("T")


async def _offload(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call that is not on a hot path in the loop's default executor (in the
    caller's context: its trace context is the call's)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(None, call)


def _many(campaign_id: int, user_ids: Sequence[str]) -> dict[str, Any]:
    """The CLIENT span attributes of an issue_many call. Built before the engine checks the
    arguments: ``user_ids`` of a wrong type (no length) leave the count out, and the engine then
    refuses the call with its typed error."""
    attributes: dict[str, Any] = {"couponcore.campaign_id": campaign_id}
    if isinstance(user_ids, Sized):
        attributes["couponcore.requests"] = len(user_ids)
    return attributes


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
        rate_limit_per_user: int = 0,
        rate_limit_per_partner: int = 0,
        rate_window_ms: int = 1000,
    ) -> Campaign:
        """Create a campaign of ``quantity`` coupons, at most ``per_user_limit`` per user,
        issued between ``starts_at`` (inclusive) and ``ends_at`` (exclusive) when given.

        A coupon is worth ``discount_value`` minor units (``discount_kind="fixed"``) or percent
        (``"percent"``, 1..100, capped at ``discount_max`` when given) of an order of at least
        ``min_order_amount``; it is valid until ``valid_until``, or for ``valid_days`` days after
        it was issued, or forever. The campaign belongs to this scope's partner.

        ``shards`` (1..16, production only): the stock is spread over that many Redis hash tags
        (on Redis Cluster, up to that many masters); a user is routed to one shard, stock moves
        to a shard that runs dry. The embedded engine accepts it and decides in one gate (its
        campaign reports ``shards=1``).
        See docs/production.md "Sharded campaigns".

        At most ``rate_limit_per_user`` issue requests per user and ``rate_limit_per_partner`` for all
        users per window of ``rate_window_ms`` (0 = no limit), else ``RATE_LIMITED``: docs/rate-limits.md.
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
            "rate_limit_per_user": rate_limit_per_user,
            "rate_limit_per_partner": rate_limit_per_partner,
            "rate_window_ms": rate_window_ms,
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

    async def aset_rate_limits(self, campaign_id: int, *limits: int) -> Campaign:
        return await _offload(self.set_rate_limits, campaign_id, *limits)

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
        (``Conflict``). Raising it reopens a sold-out campaign. A sharded campaign's quantity can
        only be raised (``InvalidArgument``)."""
        return from_core(Campaign, self._core.set_campaign_quantity(self._scope.partner_id, campaign_id, quantity))

    def set_rate_limits(
        self, campaign_id: int, per_user: int = 0, per_partner: int = 0, window_ms: int = 1000
    ) -> Campaign:
        """Change the rate limits while it runs (0 = none; out of range: ``InvalidArgument``, nothing
        written). The store first, then the gate; new limits restart the window's counts."""
        core, p = self._core, self._scope.partner_id
        return from_core(Campaign, core.set_campaign_rate_limits(p, campaign_id, per_user, per_partner, window_ms))


class Coupons:
    """``scope.coupons``: redeem, cancel and look up the scope's partner's coupons."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._core = scope._core

    def use(
        self, coupon_id: int, user_id: str, order_id: str, order_amount: int, *, traceparent: Optional[str] = None
    ) -> UseResult:
        """Redeem ``coupon_id`` held by ``user_id`` for an order of ``order_amount`` minor units.

        Checks owner, state, validity and minimum order, computes the discount and marks the
        coupon used in one atomic step. Of two concurrent uses one wins, the other raises
        ``Conflict``. Repeating the call with the same ``order_id`` returns the first result.
        Raises ``NotFound`` (unknown coupon, another user's or partner's), ``Conflict`` (used,
        expired), ``InvalidArgument`` (bad amounts, below the minimum order), ``Unavailable``
        (production: just issued and not yet in the store; retry). ``traceparent``: the call's W3C
        trace context (default: the caller's, docs/tracing.md; a malformed one is ignored).
        """
        with client_span(self._scope._emitter(), USE, traceparent, {"couponcore.coupon_id": coupon_id}) as tp:
            return from_core(
                UseResult, self._core.use_coupon(self._scope.partner_id, coupon_id, user_id, order_id, order_amount, tp)
            )

    def cancel_use(self, coupon_id: int, order_id: str, *, traceparent: Optional[str] = None) -> Coupon:
        """Undo ``order_id``'s use: the coupon is issued again, or expired if its validity passed
        meanwhile (see the returned state). Repeats are harmless."""
        with client_span(self._scope._emitter(), CANCEL_USE, traceparent, {"couponcore.coupon_id": coupon_id}) as tp:
            return from_core(Coupon, self._core.cancel_coupon_use(self._scope.partner_id, coupon_id, order_id, tp))

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
        engine: Optional[Engine] = None,
    ) -> None:
        self._core = core
        self._partner_id = partner_id
        self._wallets_of_engine = wallets
        self._engine = engine  # whose span emitter the calls use (None: this scope is the engine)
        self._tracing: Optional[SpanEmitter] = None
        # Campaign ids seen to be this partner's. A campaign's partner never changes, so a hit
        # is exact; it spares the issue hot path a native call. Bounded: cleared when full.
        self._owned: set[int] = set()
        # Partner 0 always exists; another partner is looked up once, when its wallets are first
        # asked for (partners are never deleted, so a positive answer stays true).
        self._partner_exists = partner_id == 0
        self.campaigns = Campaigns(self)
        self.coupons = Coupons(self)

    def _emitter(self) -> Optional[SpanEmitter]:
        """The engine's span emitter (None: tracing off): the calls' CLIENT spans use it."""
        return (self._engine or self)._tracing

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
        return Points(self._wallets_of_engine, self._partner_id, self._emitter)

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
        traceparent: Optional[str] = None,
    ) -> CheckoutResult:
        """Use a coupon and points for one order in ONE transaction: both or neither (see
        ``Points.checkout``). Retry with the same ``idempotency_key``; cancel with
        :meth:`cancel_checkout`."""
        return self._checkout_points().checkout(
            user_id, order_id, order_amount, coupon_id, points, idempotency_key=idempotency_key, traceparent=traceparent
        )

    def cancel_checkout(
        self,
        user_id: str,
        checkout_key: Optional[str] = None,
        *,
        order_id: Optional[str] = None,
        idempotency_key: str,
        traceparent: Optional[str] = None,
    ) -> CheckoutCancelResult:
        """Undo a checkout, named by its idempotency key or by its order id (the order's latest
        checkout): the coupon and the points come back together."""
        return self._checkout_points().cancel_checkout(
            user_id, checkout_key, order_id=order_id, idempotency_key=idempotency_key, traceparent=traceparent
        )

    async def acheckout(self, user_id: str, order_id: str, order_amount: int, **kwargs: Any) -> CheckoutResult:
        """``checkout`` for asyncio (runs in the loop's default executor)."""
        return await _offload(functools.partial(self.checkout, user_id, order_id, order_amount, **kwargs))

    async def acancel_checkout(
        self, user_id: str, checkout_key: Optional[str] = None, **kwargs: Any
    ) -> CheckoutCancelResult:
        return await _offload(functools.partial(self.cancel_checkout, user_id, checkout_key, **kwargs))

    def issue(
        self, campaign_id: int, user_id: str, request_id: Optional[str] = None, *, traceparent: Optional[str] = None
    ) -> _core.IssueResult:
        """Ask for one coupon. Returns when the answer is final; an ISSUED answer is durable.

        A repeated ``request_id`` (per user) returns the first answer instead of deciding again.
        ``traceparent``: the call's W3C trace context; by default the caller's (the current
        OpenTelemetry span, or the web request's header): docs/tracing.md. Malformed: ignored.
        """
        self._check(campaign_id)
        with client_span(self._emitter(), ISSUE, traceparent, {"couponcore.campaign_id": campaign_id}) as tp:
            return self._core.issue(campaign_id, user_id, request_id, tp)

    def issue_many(
        self,
        campaign_id: int,
        user_ids: Sequence[str],
        request_ids: Optional[Sequence[Optional[str]]] = None,
        *,
        traceparent: Union[None, str, Sequence[Optional[str]]] = None,
    ) -> list[_core.IssueResult]:
        """Decide a batch of requests for one campaign in one call, in order. ``traceparent``: one
        for every request, or one (or None) per request; by default the caller's."""
        self._check(campaign_id)
        with client_span(self._emitter(), ISSUE, traceparent, _many(campaign_id, user_ids)) as tp:
            return self._core.issue_many(campaign_id, user_ids, request_ids, tp)

    async def aissue(
        self, campaign_id: int, user_id: str, request_id: Optional[str] = None, *, traceparent: Optional[str] = None
    ) -> _core.IssueResult:
        """``issue`` for asyncio: never blocks the event loop. Concurrent coroutines are decided
        in the same batches as threads. Cancelling the awaiting task is safe: the decision may
        still happen, and a retry with the same ``request_id`` then gets its answer."""
        self._check(campaign_id)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with client_span(self._emitter(), ISSUE, traceparent, {"couponcore.campaign_id": campaign_id}) as tp:
            self._core.submit_issue(campaign_id, user_id, request_id, loop, future, tp)
            return await future  # type: ignore[no-any-return]

    async def aissue_many(
        self,
        campaign_id: int,
        user_ids: Sequence[str],
        request_ids: Optional[Sequence[Optional[str]]] = None,
        *,
        traceparent: Union[None, str, Sequence[Optional[str]]] = None,
    ) -> list[_core.IssueResult]:
        """``issue_many`` for asyncio."""
        self._check(campaign_id)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with client_span(self._emitter(), ISSUE, traceparent, _many(campaign_id, user_ids)) as tp:
            self._core.submit_issue_many(campaign_id, user_ids, request_ids, loop, future, tp)
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
        self._redis: Optional[tuple[str, str]] = None  # production: (Redis URL, key prefix), for the live windows
        self._windows: Any = None

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
        return PointsAdmin(self._wallets, 0, self._emitter)

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
    def windows(self) -> Any:
        """The live windows (``couponcore.windows.Windows``, docs/windows.md)."""
        from .windows import of_engine

        return of_engine(self)

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
            scope = self._scopes[pid] = Scope(self._core, pid, self._wallets, self)
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

    def enable_tracing(self, tracer_provider: Any = None, capacity: int = 4096) -> SpanEmitter:
        """Turn the gate's batches and the writers' commits into OpenTelemetry spans (needs
        opentelemetry-api; ``couponcore.open`` does this by default when it is installed), with
        ``tracer_provider`` (default: the global one) and a buffer of ``capacity`` records
        (docs/tracing.md). Returns the emitter (``flush()``, ``stats()``)."""
        if self._tracing is None:
            self._tracing = SpanEmitter(self._core, tracer_provider, capacity)
        return self._tracing

    @property
    def tracing(self) -> Optional[SpanEmitter]:
        """The span emitter, or None when tracing is off."""
        return self._tracing

    def close(self) -> None:
        """Finish what is queued, stop the engine's threads. Later calls raise Closed."""
        if self._tracing is not None:
            self._tracing.close()
        if self._jobs is not None:
            self._jobs.close()  # the in-process runner finishes the job in hand first
        with self._wallets_lock:
            if self._wallets_native is not None:
                self._wallets_native.close()
        self._core.close()
        if self._windows is not None:
            self._windows.close()
        while self._cleanup:
            self._cleanup.pop()()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<couponcore.Engine {self._core.kind if not self.closed else ''} {state}>"


# open() and migrate() live in _open.py (kept importable from here).
from ._open import migrate as migrate  # noqa: E402
from ._open import open as open  # noqa: E402
