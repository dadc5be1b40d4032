"""asyncio: many coroutines issuing at once, coalesced into batches by the engine."""

from __future__ import annotations

import asyncio

import couponcore


async def main() -> None:
    with couponcore.open(":memory:") as engine:
        campaign = await engine.campaigns.acreate("async drop", quantity=100)
        results: list[couponcore.IssueResult] = await asyncio.gather(
            *(engine.aissue(campaign.id, f"user-{i}") for i in range(1000))
        )
        issued = sum(r.issued for r in results)
        print(issued, engine.counters()["batches"])


if __name__ == "__main__":
    asyncio.run(main())
