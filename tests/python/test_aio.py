"""asyncio: aissue never blocks the loop, coroutines and threads share batches, cancellation
is safe, errors are typed."""

from __future__ import annotations

import asyncio
import threading
import time

import couponcore
import pytest
from conftest import stats
from couponcore import Status


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_aissue_semantics(engine: couponcore.Engine) -> None:
    async def main() -> None:
        c = await engine.campaigns.acreate("async", quantity=2)
        a = await engine.aissue(c.id, "a")
        b = await engine.aissue(c.id, "a")
        many = await engine.aissue_many(c.id, ["x", "y"])
        assert (a.status, a.seq) == (Status.ISSUED, 1)
        assert b.status is Status.ALREADY_ISSUED
        assert [r.status for r in many] == [Status.ISSUED, Status.SOLD_OUT]
        assert await engine.aissue_many(c.id, []) == []
        assert await engine.adrain(30.0)
        assert (await engine.astats(c.id)).rows == 2

    run(main())


def test_thousands_of_coroutines_are_batched_and_loop_stays_responsive(engine: couponcore.Engine) -> None:
    async def main() -> None:
        c = engine.campaigns.create("stampede", quantity=3000)
        ticks: list[float] = []
        in_flight = True

        async def ticker() -> None:
            while in_flight:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        start = time.perf_counter()

        async def client(k: int) -> list[couponcore.IssueResult]:  # a virtual user pressing 50 times
            return [await engine.aissue(c.id, f"user-{k}-{i}") for i in range(50)]

        per_client = await asyncio.gather(*(client(k) for k in range(200)))
        results = [r for rs in per_client for r in rs]
        end = time.perf_counter()
        in_flight = False
        await t
        seqs = sorted(r.seq for r in results if r.issued)
        assert seqs == list(range(1, 3001))
        k = engine.counters()
        # Coalescing: far fewer decision batches than requests.
        assert k["batches"] < k["requests"] / 10
        # The ticker kept running while the requests were in flight: the loop was never blocked
        # for the whole stampede (a blocking call would leave no ticks inside the window).
        inside = [x for x in ticks if start < x < end]
        assert len(inside) >= 20

    run(main())


def test_coroutines_and_threads_share_one_campaign(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("mixed", quantity=2000)
    thread_results: list[couponcore.IssueResult] = []

    def threads_side() -> None:
        for i in range(1500):
            thread_results.append(engine.issue(c.id, f"t-{i}"))

    async def main() -> list[couponcore.IssueResult]:
        return await asyncio.gather(*(engine.aissue(c.id, f"a-{i}") for i in range(1500)))

    th = threading.Thread(target=threads_side)
    th.start()
    async_results = run(main())
    th.join()
    seqs = sorted(r.seq for r in thread_results + async_results if r.issued)
    assert seqs == list(range(1, 2001))
    assert stats(engine, c.id).rows == 2000


def test_cancelled_awaiter_then_retry_gets_the_decision(engine: couponcore.Engine) -> None:
    async def main() -> None:
        c = engine.campaigns.create("cancel", quantity=10)
        task = asyncio.create_task(engine.aissue(c.id, "u", request_id="press-1"))
        await asyncio.sleep(0)  # let it submit
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        retry = await engine.aissue(c.id, "u", request_id="press-1")
        assert retry.status is Status.ISSUED and retry.seq == 1
        assert stats(engine, c.id).rows == 1  # the retry did not get a second coupon

    run(main())


def test_async_errors_are_typed_and_change_nothing(engine: couponcore.Engine) -> None:
    async def main() -> None:
        c = engine.campaigns.create("err", quantity=10)
        with pytest.raises(couponcore.NotFound):
            await engine.aissue(c.id + 99, "u")
        with pytest.raises(couponcore.InvalidArgument):
            await engine.aissue(c.id, "not valid")
        with pytest.raises(couponcore.InvalidType):
            await engine.aissue_many(c.id, [1, 2])  # type: ignore[list-item]
        assert stats(engine, c.id).rows == 0

    run(main())


def test_uvloop() -> None:
    import uvloop

    async def main() -> None:
        with couponcore.open(":memory:") as e:
            c = e.campaigns.create("uv", quantity=100)
            rs = await asyncio.gather(*(e.aissue(c.id, f"u{i}") for i in range(300)))
            assert sum(r.issued for r in rs) == 100

    uvloop.run(main())


def test_async_twins_of_the_other_operations(engine: couponcore.Engine) -> None:
    async def main() -> None:
        key = engine.partners.create("async-twins")
        partner = await engine.aauthenticate(key.api_key)
        s = engine.partner(partner)
        c = await s.campaigns.acreate("twins", quantity=3)
        assert [x.id for x in await s.campaigns.alist()] == [c.id]
        assert (await s.campaigns.apause(c.id)).state == "paused"
        assert (await s.aissue(c.id, "u")).status is Status.NOT_OPEN
        assert (await s.campaigns.aresume(c.id)).state == "active"
        assert (await s.campaigns.aset_quantity(c.id, 5)).quantity == 5
        r = await s.aissue(c.id, "u")
        assert r.issued
        assert await engine.adrain(30.0)
        assert (await s.coupons.acounts(c.id)).issued == 1
        page = await s.coupons.alist_for_user("u")
        assert [x.id for x in page.items] == [r.coupon_id]
        assert (await engine.areconcile(c.id))["consistent"]
        assert (await s.campaigns.aclose(c.id)).state == "closed"

    run(main())
