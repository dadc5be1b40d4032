"""Checkout with coupons from Python, on both deployments: a coupon and points in one
transaction (both or neither), typed errors that change nothing, concurrent checkouts of one
coupon from many threads (one wins, points charged once), cancel restoring both, idempotent
retries, asyncio twins, the FastAPI and Django routes, and audit() afterwards."""

from __future__ import annotations

import asyncio
import threading
import time

import couponcore
import httpx
import pytest
from couponcore.fastapi import create_app


def _campaign(scope: couponcore.Scope, quantity: int = 5) -> int:
    return scope.campaigns.create("drop", quantity, discount_kind="fixed", discount_value=500, min_order_amount=1000).id


def _coupon(engine: couponcore.Engine, scope: couponcore.Scope, user: str, campaign_id: int = 0) -> int:
    cid = campaign_id or _campaign(scope)
    r = scope.issue(cid, user)
    assert r.status == couponcore.Status.ISSUED
    assert engine.drain(30)
    return r.coupon_id


def test_checkout_uses_both_and_cancel_restores_both(engine: couponcore.Engine) -> None:
    u = f"alice-{time.time_ns()}"
    coupon = _coupon(engine, engine, u)
    engine.points.earn(u, 1000, idempotency_key=f"{u}-e")
    r = engine.checkout(u, f"{u}-o1", 5000, coupon, 300, idempotency_key=f"{u}-co")
    assert (r.coupon_id, r.discount_amount, r.points_used, r.payable_amount) == (coupon, 500, 300, 4200)
    assert r.entry_id is not None and r.balance_after == 700 and not r.replayed
    assert engine.coupons.get(coupon).state == couponcore.CouponState.USED
    again = engine.checkout(u, f"{u}-o1", 5000, coupon, 300, idempotency_key=f"{u}-co")
    assert again.replayed and again.entry_id == r.entry_id and again.payable_amount == 4200
    with pytest.raises(couponcore.Conflict):  # same key, other content
        engine.checkout(u, f"{u}-o1", 5000, coupon, 100, idempotency_key=f"{u}-co")
    with pytest.raises(couponcore.Conflict):  # same order, another key: never pays twice
        engine.checkout(u, f"{u}-o1", 5000, coupon, 300, idempotency_key=f"{u}-co2")
    assert engine.points.balance(u).total == 700

    c = engine.cancel_checkout(u, f"{u}-co", idempotency_key=f"{u}-cancel")
    assert (c.coupon_id, c.coupon_state, c.points_restored, c.balance_after) == (coupon, "issued", 300, 1000)
    assert engine.cancel_checkout(u, f"{u}-co", idempotency_key=f"{u}-cancel").replayed
    with pytest.raises(couponcore.Conflict):
        engine.cancel_checkout(u, f"{u}-co", idempotency_key=f"{u}-cancel2")
    with pytest.raises(couponcore.NotFound):
        engine.cancel_checkout(u, f"{u}-nothing", idempotency_key=f"{u}-cancel3")
    assert engine.coupons.get(coupon).state == couponcore.CouponState.ISSUED
    assert engine.points.balance(u).total == 1000
    assert engine.points.audit()["ok"]


def test_cancel_checkout_by_order_id(engine: couponcore.Engine) -> None:
    """By order id: the order's latest checkout; an order redone after a cancel is cancelled
    again by the same order id. Naming both, or neither, is InvalidArgument and changes nothing."""
    u = f"ord-{time.time_ns()}"
    coupon = _coupon(engine, engine, u)
    engine.points.earn(u, 1000, idempotency_key=f"{u}-e")
    engine.checkout(u, f"{u}-o1", 5000, coupon, 300, idempotency_key=f"{u}-co1")
    c = engine.cancel_checkout(u, order_id=f"{u}-o1", idempotency_key=f"{u}-x1")
    assert (c.coupon_id, c.coupon_state, c.points_restored, c.order_id) == (coupon, "issued", 300, f"{u}-o1")
    assert engine.cancel_checkout(u, order_id=f"{u}-o1", idempotency_key=f"{u}-x1").replayed
    engine.checkout(u, f"{u}-o1", 5000, coupon, 200, idempotency_key=f"{u}-co2")
    assert engine.points.balance(u).total == 800
    for bad in ({}, {"checkout_key": f"{u}-co2", "order_id": f"{u}-o1"}):
        with pytest.raises(couponcore.InvalidArgument):
            engine.cancel_checkout(u, idempotency_key=f"{u}-bad", **bad)
    assert engine.points.balance(u).total == 800
    with pytest.raises(couponcore.NotFound):
        engine.cancel_checkout(u, order_id=f"{u}-o9", idempotency_key=f"{u}-x9")
    c2 = engine.cancel_checkout(u, order_id=f"{u}-o1", idempotency_key=f"{u}-x2")
    assert c2.points_restored == 200 and engine.points.balance(u).total == 1000
    with pytest.raises(couponcore.Conflict):  # its latest checkout is cancelled already
        engine.cancel_checkout(u, order_id=f"{u}-o1", idempotency_key=f"{u}-x3")
    assert engine.coupons.get(coupon).state == couponcore.CouponState.ISSUED
    assert engine.points.audit()["ok"]


def test_both_or_neither_and_bad_input(engine: couponcore.Engine) -> None:
    u = f"bob-{time.time_ns()}"
    coupon = _coupon(engine, engine, u)
    p = engine.points
    p.earn(u, 1000, idempotency_key=f"{u}-e")
    history = len(p.history(u).entries)

    with pytest.raises(couponcore.InsufficientFunds):  # not enough points: the coupon stays issued
        engine.checkout(u, f"{u}-o", 5000, coupon, 1001, idempotency_key=f"{u}-1")
    with pytest.raises(couponcore.InvalidArgument):  # more points than payable after the discount
        engine.checkout(u, f"{u}-o", 1200, coupon, 800, idempotency_key=f"{u}-2")
    with pytest.raises(couponcore.InvalidArgument):  # below the minimum order
        engine.checkout(u, f"{u}-o", 900, coupon, 0, idempotency_key=f"{u}-3")
    with pytest.raises(couponcore.InvalidArgument):
        engine.checkout(u, f"{u}-o", 5000, coupon, -1, idempotency_key=f"{u}-4")
    with pytest.raises(couponcore.InvalidArgument):
        engine.checkout(u, f"{u}-o", 5000, 0, 10, idempotency_key=f"{u}-5")
    with pytest.raises((couponcore.InvalidArgument, couponcore.InvalidType)):
        engine.checkout(u, f"{u}-o", 5000, coupon, 10, idempotency_key="")
    with pytest.raises(couponcore.NotFound):  # another user's coupon
        engine.checkout(f"{u}-x", f"{u}-o", 5000, coupon, 0, idempotency_key=f"{u}-6")
    other = engine.partner(engine.partners.create(f"other-{u}").partner)
    other.points.earn(u, 1000, idempotency_key=f"{u}-oe")
    with pytest.raises(couponcore.NotFound):  # another partner's coupon
        other.checkout(u, f"{u}-o", 5000, coupon, 10, idempotency_key=f"{u}-7")
    assert other.points.balance(u).total == 1000
    assert engine.coupons.get(coupon).state == couponcore.CouponState.ISSUED
    assert p.balance(u).total == 1000 and len(p.history(u).entries) == history

    # The coupon used elsewhere: the checkout fails, the points stay.
    engine.coupons.use(coupon, u, f"{u}-elsewhere", 2000)
    with pytest.raises(couponcore.Conflict):
        engine.checkout(u, f"{u}-o", 5000, coupon, 100, idempotency_key=f"{u}-8")
    assert p.balance(u).total == 1000 and len(p.history(u).entries) == history
    assert engine.points.audit()["ok"]


def test_concurrent_checkouts_of_one_coupon(engine: couponcore.Engine) -> None:
    u = f"hot-{time.time_ns()}"
    coupon = _coupon(engine, engine, u)
    engine.points.earn(u, 10_000, idempotency_key=f"{u}-e")
    won: list[couponcore.CheckoutResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            r = engine.checkout(u, f"{u}-o{i}", 5000, coupon, 250, idempotency_key=f"{u}-k{i}")
            with lock:
                won.append(r)
        except BaseException as e:  # noqa: BLE001
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert len(errors) == 31 and all(isinstance(e, couponcore.Conflict) for e in errors), errors[:3]
    assert engine.points.balance(u).total == 10_000 - 250
    assert engine.coupons.get(coupon).used_order_id == won[0].order_id
    assert engine.points.audit()["ok"]


def test_async_twins_and_coupon_only(engine: couponcore.Engine) -> None:
    u = f"async-{time.time_ns()}"
    coupon = _coupon(engine, engine, u)

    async def main() -> None:
        r = await engine.acheckout(u, f"{u}-o", 3000, coupon_id=coupon, idempotency_key=f"{u}-co")
        assert r.entry_id is None and r.balance_after is None and r.payable_amount == 2500  # no wallet needed
        c = await engine.acancel_checkout(u, f"{u}-co", idempotency_key=f"{u}-c")
        assert c.coupon_state == "issued" and c.points_restored == 0

    asyncio.run(main())
    assert engine.coupons.get(coupon).state == couponcore.CouponState.ISSUED


def test_memory_engine_refuses_checkout() -> None:
    # Embedded only: ":memory:" is a SQLite path; checkout needs coupons and wallets in one file.
    with couponcore.open(":memory:") as e:
        with pytest.raises(couponcore.Unavailable):
            e.checkout("u", "o", 1000, idempotency_key="k")


def test_fastapi_checkout_routes(engine: couponcore.Engine) -> None:
    key = engine.partners.create("shop").api_key
    H = {"X-API-KEY": key}
    u = f"web-{time.time_ns()}"

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine)), base_url="http://t") as c:
            cid = (
                await c.post(
                    "/campaigns",
                    json={"name": "d", "quantity": 2, "discount_kind": "fixed", "discount_value": 500},
                    headers=H,
                )
            ).json()["id"]
            coupon = (await c.post(f"/campaigns/{cid}/issue", json={"user_id": u}, headers=H)).json()["coupon_id"]
            assert engine.drain(30)
            await c.post(f"/users/{u}/points/earn", json={"amount": 100}, headers={**H, "Idempotency-Key": f"{u}-e"})
            body = {"user_id": u, "order_id": f"{u}-o", "order_amount": 3000, "coupon_id": coupon, "points": 100}
            r = await c.post("/checkout", json=body, headers={**H, "Idempotency-Key": f"{u}-co"})
            assert r.status_code == 200, r.text
            assert r.json()["payable_amount"] == 2400 and r.json()["points_used"] == 100
            none = await c.post("/checkout", json=body)
            assert none.status_code == 401
            bad = await c.post("/checkout", json={**body, "points": 5000}, headers={**H, "Idempotency-Key": f"{u}-x"})
            assert bad.status_code == 422
            cancel = await c.post(
                "/checkout/cancel",
                json={"user_id": u, "checkout_key": f"{u}-co", "idempotency_key": f"{u}-c"},
                headers=H,
            )
            assert cancel.status_code == 200, cancel.text
            assert cancel.json()["coupon_state"] == "issued" and cancel.json()["points_restored"] == 100
            # The order checked out again, then cancelled by its order id.
            r = await c.post("/checkout", json=body, headers={**H, "Idempotency-Key": f"{u}-co2"})
            assert r.status_code == 200, r.text
            by_order = await c.post(
                "/checkout/cancel",
                json={"user_id": u, "order_id": f"{u}-o"},
                headers={**H, "Idempotency-Key": f"{u}-c2"},
            )
            assert by_order.status_code == 200, by_order.text
            assert by_order.json()["points_restored"] == 100
            neither = await c.post("/checkout/cancel", json={"user_id": u}, headers={**H, "Idempotency-Key": f"{u}-c3"})
            assert neither.status_code == 422, neither.text

    asyncio.run(main())
