"""couponcore: first-come-first-served coupon drops and loyalty-point wallets, natively.

import couponcore
with couponcore.open() as engine:                 # embedded: in-process gate + SQLite
    c = engine.campaigns.create("drop", quantity=10_000)
    r = engine.issue(c.id, "user-42")
    r.status, r.seq                               # (Status.ISSUED, 1)
    u = engine.coupons.use(r.coupon_id, "user-42", "order-7", order_amount=12_000)

shop = engine.partner(engine.authenticate(api_key))  # one partner's view: campaigns,
shop.coupons.list_for_user("user-42")               # issue, coupons of that partner only
"""

from ._core import (
    Closed,
    Conflict,
    Error,
    InsufficientFunds,
    InternalError,
    InvalidArgument,
    InvalidType,
    IssueResult,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from ._engine import Campaigns, Coupons, DeadLetters, Engine, Partners, Scope, migrate, open
from ._event_errors import EventSchemaError, UnknownEventType, UnsupportedSchemaVersion
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
    Status,
    UseResult,
    WriterInfo,
)
from ._wallet import Balance, CheckoutCancelResult, CheckoutResult, HistoryPage, Points, WalletEntry, WalletResult

__version__ = "0.1.0"

__all__ = [
    "Balance",
    "HistoryPage",
    "Points",
    "WalletEntry",
    "WalletResult",
    "CheckoutResult",
    "CheckoutCancelResult",
    "Campaign",
    "CampaignStats",
    "Campaigns",
    "Closed",
    "Conflict",
    "Coupon",
    "DeadLetter",
    "DeadLetters",
    "CouponCounts",
    "CouponPage",
    "CouponState",
    "Coupons",
    "Engine",
    "Error",
    "EventSchemaError",
    "ExpireReport",
    "InsufficientFunds",
    "InternalError",
    "InvalidArgument",
    "InvalidType",
    "IssueResult",
    "LogBacklog",
    "NotFound",
    "Partner",
    "PartnerKey",
    "Partners",
    "Scope",
    "Status",
    "Unauthenticated",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "Unavailable",
    "WriterInfo",
    "UseResult",
    "migrate",
    "open",
]
