"""couponcore: first-come-first-served coupon drops and loyalty-point wallets, natively.

    import couponcore
    with couponcore.open() as engine:                 # embedded: in-process gate + SQLite
        c = engine.campaigns.create("drop", quantity=10_000)
        r = engine.issue(c.id, "user-42")
        r.status, r.seq                               # (Status.ISSUED, 1)
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
from ._engine import Campaigns, Engine, migrate, open
from ._types import Campaign, CampaignStats, Status
from ._wallet import Balance, HistoryPage, Points, WalletEntry, WalletResult

__version__ = "0.1.0"

__all__ = [
    "Balance",
    "HistoryPage",
    "Points",
    "WalletEntry",
    "WalletResult",
    "Campaign",
    "CampaignStats",
    "Campaigns",
    "Closed",
    "Conflict",
    "Engine",
    "Error",
    "InsufficientFunds",
    "InternalError",
    "InvalidArgument",
    "InvalidType",
    "IssueResult",
    "NotFound",
    "Status",
    "Unauthenticated",
    "Unavailable",
    "migrate",
    "open",
]
