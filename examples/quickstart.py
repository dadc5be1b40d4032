"""The README example: a flash sale on the embedded engine, checked afterwards."""

from __future__ import annotations

import tempfile
from pathlib import Path

import couponcore
from couponcore import Status


def main() -> None:
    with tempfile.TemporaryDirectory() as d, couponcore.open(str(Path(d) / "sale.db")) as engine:
        drop = engine.campaigns.create("10:00 drop", quantity=3, per_user_limit=1)
        results = engine.issue_many(drop.id, ["ann", "bob", "ann", "cy", "dee"])
        statuses: list[Status] = [r.status for r in results]
        print(statuses)
        first = engine.issue(drop.id, "ann", request_id="click-1")
        seq: int | None = first.seq
        print(first.status, seq)
        stats: couponcore.CampaignStats = engine.stats(drop.id)
        assert stats.rows == 3
        engine.points.earn("ann", 500, idempotency_key="signup-ann", expires_in_days=30)
        balance: couponcore.Balance = engine.points.balance("ann")
        print(balance.total)


if __name__ == "__main__":
    main()
