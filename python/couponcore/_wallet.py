"""Point wallets from Python: ``engine.points`` (partner 0) or ``engine.partner(p).points``.

Every operation takes an ``idempotency_key`` (unique per partner): a retry with the same key
returns the first result (``replayed=True``), the same key with other content raises
``Conflict``. Amounts are integers (points). Operations of many threads and coroutines are
applied natively in batches, one transaction each; see docs/wallet.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as _dt
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from . import _core
from ._types import TimeLike, core, from_core, from_us, record, records_of, to_us
from .tracing import POINTS, SpanEmitter, client_span

T = TypeVar("T")
HISTORY_PAGE_DEFAULT = 50
# The latest expiry expires_in_days can name: 10,000 years (far beyond any real use, well within
# the int64 microseconds of the store).
_EXPIRES_IN_DAYS_MAX = 3_652_425


def _none_if_zero(v: int) -> Optional[int]:
    return v or None


@record("WalletResult")
@dataclass(frozen=True)
class WalletResult:
    """The answer to one wallet operation (also when replayed from its idempotency record)."""

    entry_id: int
    amount: int  # the entry's signed amount: use -n, earn/cancel +n (transfer: the source's -n)
    balance_after: int
    expired_amount: int  # cancel: restored points that fell into expired lots (written off)
    peer_entry_id: Optional[int]  # transfer: the destination's transfer_in entry
    created_at: _dt.datetime = field(metadata=core("created_at_us", from_us))
    replayed: bool


@record("WalletBalance")
@dataclass(frozen=True)
class Balance:
    """Usable points now, and the soonest expiry (amount and time), if any."""

    total: int
    next_expiry_amount: int
    next_expiry_at: Optional[_dt.datetime] = field(metadata=core("next_expiry_at_us", from_us))


@record("WalletEntry")
@dataclass(frozen=True)
class WalletEntry:
    """One ledger entry: kind is earn, use, cancel, expire, transfer_in or transfer_out."""

    id: int
    kind: str
    amount: int
    balance_after: int
    idempotency_key: Optional[str]
    ref_entry_id: Optional[int]
    order_id: Optional[str]
    reason: Optional[str]
    created_at: _dt.datetime = field(metadata=core("created_at_us", from_us))


@record("WalletHistoryPage")
@dataclass(frozen=True)
class HistoryPage:
    """Entries newest first; pass ``next_cursor`` back as ``cursor`` (None: no more)."""

    entries: list[WalletEntry] = field(metadata=core(convert=records_of(WalletEntry)))
    next_cursor: Optional[int]


@record("WalletResult")
@dataclass(frozen=True)
class CheckoutResult:
    """The answer to ``scope.checkout``: the coupon and the points were used together.

    ``payable_amount`` is what is left to pay: ``order_amount - discount_amount - points_used``.
    ``entry_id`` is the wallet's use entry (None when no points were used; then
    ``balance_after`` is None too)."""

    order_id: str
    order_amount: int
    coupon_id: Optional[int]
    discount_amount: int
    points_used: int = field(metadata=core("points"))
    payable_amount: int
    entry_id: Optional[int] = field(metadata=core(convert=_none_if_zero))
    balance_after: Optional[int] = field(metadata=core(when="entry_id"))
    created_at: _dt.datetime = field(metadata=core("created_at_us", from_us))
    replayed: bool


@record("WalletResult")
@dataclass(frozen=True)
class CheckoutCancelResult:
    """The answer to ``scope.cancel_checkout``: the coupon is ``coupon_state`` again ("issued",
    or "expired" if its validity passed meanwhile; None without a coupon) and
    ``points_restored`` went back to exactly the lots they were drawn from (``expired_amount`` of
    them into lots past their date, written off at once)."""

    order_id: str
    order_amount: int
    coupon_id: Optional[int]
    coupon_state: Optional[str]
    discount_amount: int
    points_restored: int = field(metadata=core("points"))
    expired_amount: int
    entry_id: Optional[int] = field(metadata=core(convert=_none_if_zero))
    balance_after: Optional[int] = field(metadata=core(when="entry_id"))
    created_at: _dt.datetime = field(metadata=core("created_at_us", from_us))
    replayed: bool


async def _offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The caller's context goes along: its trace context (couponcore.tracing) is the call's.
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(None, call)


def _no_emitter() -> Optional[SpanEmitter]:
    return None


class Points:
    """One partner's point wallets. Obtain it as ``engine.points`` or ``scope.points``."""

    def __init__(
        self,
        wallets: Callable[[], _core.Wallets],
        partner_id: int,
        emitter: Callable[[], Optional[SpanEmitter]] = _no_emitter,
    ) -> None:
        self._wallets = wallets
        self._partner_id = partner_id
        self._emitter = emitter  # the engine's span emitter, for the calls' CLIENT spans

    def _run(self, op: dict[str, Any], traceparent: Optional[str]) -> Any:
        """Applies op with the call's trace context: under a CLIENT span "couponcore.points.<kind>"
        when the engine traces, else the one given or the caller's (couponcore.tracing)."""
        attributes = {"couponcore.partner_id": self._partner_id}
        with client_span(self._emitter(), POINTS + op["kind"], traceparent, attributes) as tp:
            if tp is not None:
                op["traceparent"] = tp
            return self._wallets().apply(op)

    def _apply(self, op: dict[str, Any], traceparent: Optional[str] = None) -> WalletResult:
        op["partner_id"] = self._partner_id
        return from_core(WalletResult, self._run(op, traceparent))

    def earn(
        self,
        user_id: str,
        amount: int,
        *,
        idempotency_key: str,
        expires_at: Optional[TimeLike] = None,
        expires_in_days: Optional[float] = None,
        reason: str = "",
        traceparent: Optional[str] = None,
    ) -> WalletResult:
        """Add a lot of ``amount`` points, expiring at ``expires_at`` or after
        ``expires_in_days`` (neither: never)."""
        if expires_at is not None and expires_in_days is not None:
            raise _core.InvalidArgument("give expires_at or expires_in_days, not both")
        expires_us = to_us(expires_at, "expires_at")
        if expires_in_days is not None:
            if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, (int, float)):
                raise _core.InvalidType(f"expires_in_days must be a number, got {type(expires_in_days).__name__}")
            if not (expires_in_days > 0 and expires_in_days <= _EXPIRES_IN_DAYS_MAX):  # NaN too
                raise _core.InvalidArgument(
                    f"expires_in_days must be a positive number of days, at most {_EXPIRES_IN_DAYS_MAX:,}"
                )
            now_us = time.time_ns() // 1000
            expires_us = now_us + to_us(expires_in_days * 86_400, "expires_in_days")
        return self._apply(
            {
                "kind": "earn",
                "user_id": user_id,
                "amount": amount,
                "expires_at_us": expires_us,
                "reason": reason,
                "idempotency_key": idempotency_key,
            },
            traceparent,
        )

    def use(
        self, user_id: str, amount: int, *, idempotency_key: str, order_id: str = "", traceparent: Optional[str] = None
    ) -> WalletResult:
        """Spend ``amount`` points, first-expiring lots first. ``InsufficientFunds`` if the
        usable balance is lower (nothing changes)."""
        return self._apply(
            {
                "kind": "use",
                "user_id": user_id,
                "amount": amount,
                "order_id": order_id,
                "idempotency_key": idempotency_key,
            },
            traceparent,
        )

    def cancel(
        self,
        user_id: str,
        *,
        idempotency_key: str,
        entry_id: Optional[int] = None,
        use_key: Optional[str] = None,
        traceparent: Optional[str] = None,
    ) -> WalletResult:
        """Undo a use (by its ``entry_id`` or its idempotency key ``use_key``): exactly the drawn
        lots are restored; points of lots that expired meanwhile are restored and written off."""
        return self._apply(
            {
                "kind": "cancel",
                "user_id": user_id,
                "entry_id": entry_id,
                "use_key": use_key,
                "idempotency_key": idempotency_key,
            },
            traceparent,
        )

    def transfer(
        self,
        from_user_id: str,
        to_user_id: str,
        amount: int,
        *,
        idempotency_key: str,
        traceparent: Optional[str] = None,
    ) -> WalletResult:
        """Move points between two wallets of this partner (locked in id order)."""
        return self._apply(
            {
                "kind": "transfer",
                "user_id": from_user_id,
                "to_user_id": to_user_id,
                "amount": amount,
                "idempotency_key": idempotency_key,
            },
            traceparent,
        )

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
        """Use ``coupon_id`` and ``points`` for one order in ONE transaction: both or neither.

        The coupon is checked and discounted exactly as ``coupons.use`` does; the points pay for
        what is left (``points <= order_amount - discount``, else ``InvalidArgument``). Errors
        change nothing: ``NotFound`` (unknown coupon, another user's or partner's; no wallet),
        ``Conflict`` (coupon used or expired, key reused with other content),
        ``InsufficientFunds``, ``InvalidArgument``, ``Unavailable`` (production: the coupon was
        just issued and is not yet in the store; retry)."""
        if coupon_id is not None and (isinstance(coupon_id, bool) or not isinstance(coupon_id, int) or coupon_id <= 0):
            raise _core.InvalidArgument("coupon_id must be a coupon id (or None for no coupon)")
        op = {
            "kind": "checkout",
            "user_id": user_id,
            "order_id": order_id,
            "order_amount": order_amount,
            "coupon_id": coupon_id,
            "points": points,
            "idempotency_key": idempotency_key,
            "partner_id": self._partner_id,
        }
        return from_core(CheckoutResult, self._run(op, traceparent))

    def cancel_checkout(
        self,
        user_id: str,
        checkout_key: Optional[str] = None,
        *,
        order_id: Optional[str] = None,
        idempotency_key: str,
        traceparent: Optional[str] = None,
    ) -> CheckoutCancelResult:
        """Undo the checkout made with idempotency key ``checkout_key``, or the latest checkout of
        ``order_id`` (exactly one of the two): its coupon back to issued (or expired), its points
        back to the lots they came from, in one transaction."""
        op = {
            "kind": "cancel_checkout",
            "user_id": user_id,
            "checkout_key": checkout_key,
            "order_id": order_id,
            "idempotency_key": idempotency_key,
            "partner_id": self._partner_id,
        }
        return from_core(CheckoutCancelResult, self._run(op, traceparent))

    async def acheckout(self, user_id: str, order_id: str, order_amount: int, **kwargs: Any) -> CheckoutResult:
        return await _offload(self.checkout, user_id, order_id, order_amount, **kwargs)

    async def acancel_checkout(
        self, user_id: str, checkout_key: Optional[str] = None, **kwargs: Any
    ) -> CheckoutCancelResult:
        return await _offload(self.cancel_checkout, user_id, checkout_key, **kwargs)

    def balance(self, user_id: str) -> Balance:
        return from_core(Balance, self._wallets().balance(self._partner_id, user_id))

    def history(self, user_id: str, cursor: Optional[int] = None, limit: int = HISTORY_PAGE_DEFAULT) -> HistoryPage:
        return from_core(HistoryPage, self._wallets().history(self._partner_id, user_id, cursor, limit))

    async def aearn(self, user_id: str, amount: int, **kwargs: Any) -> WalletResult:
        return await _offload(self.earn, user_id, amount, **kwargs)

    async def ause(self, user_id: str, amount: int, **kwargs: Any) -> WalletResult:
        return await _offload(self.use, user_id, amount, **kwargs)

    async def acancel(self, user_id: str, **kwargs: Any) -> WalletResult:
        return await _offload(self.cancel, user_id, **kwargs)

    async def atransfer(self, from_user_id: str, to_user_id: str, amount: int, **kwargs: Any) -> WalletResult:
        return await _offload(self.transfer, from_user_id, to_user_id, amount, **kwargs)

    async def abalance(self, user_id: str) -> Balance:
        return await _offload(self.balance, user_id)

    async def ahistory(
        self, user_id: str, cursor: Optional[int] = None, limit: int = HISTORY_PAGE_DEFAULT
    ) -> HistoryPage:
        return await _offload(self.history, user_id, cursor, limit)


class PointsAdmin(Points):
    """``engine.points``: partner 0's wallets plus the operator's jobs."""

    def expire(self, now: Optional[TimeLike] = None, chunk_wallets: int = 1000) -> dict[str, int]:
        """The expiry job: write off every lot past its date (all partners), in chunks of short
        transactions; safe to re-run after a crash."""
        now_us = to_us(now if now is not None else _dt.datetime.now(_dt.timezone.utc), "now")
        assert now_us is not None
        return self._wallets().expire(now_us, chunk_wallets)

    def purge_idempotency(
        self,
        older_than: TimeLike,
        *,
        include_checkouts: bool = False,
        chunk_rows: int = 1000,
        chunks_max: int = 1000,
    ) -> dict[str, Any]:
        """Retention: delete the idempotency records created before ``older_than`` (all
        partners), ``chunk_rows`` per short transaction, at most ``chunks_max`` chunks (``done``
        False: run it again). Returns ``{"deleted", "chunks", "done"}``.

        A retry with a purged key is a new operation, and ``cancel`` by a purged use key is
        ``NotFound`` (cancel by entry id still works): keep records longer than any client
        retries. Checkout records stay unless ``include_checkouts`` (``cancel_checkout`` finds
        its checkout by them)."""
        before_us = to_us(older_than, "older_than")
        if before_us is None:
            raise _core.InvalidArgument("older_than is required")
        return self._wallets().purge_idempotency(before_us, include_checkouts, chunk_rows, chunks_max)

    def audit(self, partner_id: Optional[int] = None) -> dict[str, Any]:
        """Check the invariants (balance == remaining lots == ledger sum, never negative, ...)."""
        return self._wallets().audit(partner_id)

    def counters(self) -> dict[str, int]:
        return self._wallets().counters()
