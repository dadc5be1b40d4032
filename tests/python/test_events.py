"""Domain events (docs/events.md) on both deployments, against real servers: each of the ten
types produced by the real operation and read back by a consumer group with its CloudEvent
attributes; at-least-once with stable ids (a consumer that does not acknowledge gets the events
again; a relay stopped between XADD and DELETE publishes again with the same ids); a refused
change writes no event; many threads issuing and using, then events == rows and per-subject
order holds.

Production tests share one PostgreSQL database (and so one outbox) with the rest of the run:
every check filters by this test's campaigns and users."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Optional

import couponcore
import pytest
from conftest import production_kwargs
from couponcore.events import EVENT_TYPES, Event

DAY = dt.timedelta(days=1)


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def group() -> str:
    return uid("g")


def collect(
    engine: couponcore.Engine,
    grp: str,
    want: Callable[[Event], bool],
    n: int,
    types: Optional[Iterable[str]] = None,
    *,
    ack: bool = True,
    consumer: Optional[str] = None,
    timeout_s: float = 20.0,
) -> list[Event]:
    """Reads `grp` until n events satisfying `want` came (others are acknowledged and skipped)."""
    got: list[Event] = []
    stream = engine.events.consume(grp, types, consumer=consumer, block_ms=100, idle_timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    for e in stream:
        if want(e):
            got.append(e)
            if ack:
                e.ack()
        else:
            e.ack()
        if len(got) >= n or time.monotonic() > deadline:
            break
    return got


def of_campaign(cid: int) -> Callable[[Event], bool]:
    return lambda e: e.data.get("campaign_id") == cid


def of_user(user: str) -> Callable[[Event], bool]:
    return lambda e: e.subject.endswith(f"/{user}") or e.data.get("user_id") == user


def check_attributes(e: Event, partner_id: int = 0) -> None:
    a = e.attributes()
    assert a["specversion"] == "1.0" and a["datacontenttype"] == "application/json"
    assert a["source"] == f"couponcore/partner/{partner_id}" and a["partnerid"] == str(partner_id)
    assert a["dataschema"] == f"urn:couponcore:event:{e.type}:v1" and e.schema_version == 1
    assert a["sequence"] == str(e.sequence) and e.sequence > 0
    assert a["id"] == e.id and a["type"] == e.type and a["subject"] == e.subject
    assert a["time"].endswith("Z") and len(a["time"]) == len("2026-01-01T00:00:00.000000Z")
    assert abs(e.time - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=10)


def test_coupon_issued_and_sold_out(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("ev", quantity=3)
    users = [uid("u") for _ in range(4)]
    results = [engine.issue(c.id, u, request_id=f"r-{u}") for u in users]
    assert [r.status for r in results] == [couponcore.Status.ISSUED] * 3 + [couponcore.Status.SOLD_OUT]
    got = collect(engine, group(), of_campaign(c.id), 4, ["coupon.issued", "campaign.sold_out"])
    issued = [e for e in got if e.type == "coupon.issued"]
    assert [e.id for e in issued] == [f"coupon.issued:{c.id}:{s}" for s in (1, 2, 3)]
    for e, r, u in zip(issued, results, users):
        check_attributes(e)
        assert e.subject == f"coupon/{r.coupon_id}"
        assert e.data["coupon_id"] == r.coupon_id and e.data["user_id"] == u and e.data["seq"] == r.seq
        assert e.data["request_id"] == f"r-{u}" and e.data["user_ordinal"] == 1
    sold = [e for e in got if e.type == "campaign.sold_out"]
    assert len(sold) == 1 and sold[0].id == f"campaign.sold_out:{c.id}:3" and sold[0].subject == f"campaign/{c.id}"
    assert sold[0].data["quantity"] == 3 and sold[0].data["last_coupon_id"] == results[2].coupon_id
    assert sold[0].sequence > issued[-1].sequence  # after the grant that sold it out
    assert [e.sequence for e in got] == sorted(e.sequence for e in got)


def test_coupon_used_cancelled_expired(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("life", quantity=10, discount_kind="fixed", discount_value=500, valid_days=7)
    a, b = uid("a"), uid("b")
    ra, rb = engine.issue(c.id, a), engine.issue(c.id, b)
    assert engine.drain(30)
    engine.coupons.use(ra.coupon_id, a, "order-1", 10_000)
    engine.coupons.cancel_use(ra.coupon_id, "order-1")
    engine.expire_coupons(dt.datetime.now(dt.timezone.utc) + 8 * DAY)
    mine = {ra.coupon_id, rb.coupon_id}
    got = collect(
        engine,
        group(),
        lambda e: e.data.get("coupon_id") in mine,
        4,
        ["coupon.used", "coupon.use_cancelled", "coupon.expired"],
    )
    by = {(e.type, e.data["coupon_id"]): e for e in got}
    used = by[("coupon.used", ra.coupon_id)]
    check_attributes(used)
    assert used.id == f"coupon.used:{ra.coupon_id}:order-1" and used.subject == f"coupon/{ra.coupon_id}"
    assert (used.data["order_id"], used.data["order_amount"], used.data["discount_amount"]) == ("order-1", 10_000, 500)
    cancelled = by[("coupon.use_cancelled", ra.coupon_id)]
    assert cancelled.id == f"coupon.use_cancelled:{ra.coupon_id}:order-1" and cancelled.data["state"] == "issued"
    assert cancelled.sequence > used.sequence
    for cid in mine:
        assert by[("coupon.expired", cid)].id == f"coupon.expired:{cid}"
    assert by[("coupon.expired", ra.coupon_id)].sequence > cancelled.sequence


def test_points_events(engine: couponcore.Engine) -> None:
    p = engine.points
    u, v = uid("alice"), uid("bob")
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    earn = p.earn(u, 100, idempotency_key=f"{u}-e1", reason="signup")
    use = p.use(u, 30, idempotency_key=f"{u}-u1", order_id="o-1")
    cancel = p.cancel(u, use_key=f"{u}-u1", idempotency_key=f"{u}-c1")
    transfer = p.transfer(u, v, 20, idempotency_key=f"{u}-t1")
    p.earn(u, 5, idempotency_key=f"{u}-e2", expires_at=soon)
    p.expire(now=soon + dt.timedelta(seconds=1))
    types = [t for t in EVENT_TYPES if t.startswith("points.")]
    got = collect(engine, group(), lambda e: e.subject == f"wallet/0/{u}", 6, types)
    assert [e.type for e in got] == [
        "points.earned",
        "points.used",
        "points.cancelled",
        "points.transferred",
        "points.earned",
        "points.expired",
    ]
    for e in got:
        check_attributes(e)
    assert got[0].id == f"points.earned:{earn.entry_id}" and got[0].data["amount"] == 100
    assert got[0].data["reason"] == "signup" and got[0].data["balance_after"] == 100
    assert (
        got[1].id == f"points.used:{use.entry_id}" and got[1].data["order_id"] == "o-1" and got[1].data["amount"] == 30
    )
    assert got[2].id == f"points.cancelled:{cancel.entry_id}" and got[2].data["ref_entry_id"] == use.entry_id
    assert got[3].id == f"points.transferred:{transfer.entry_id}"
    assert (got[3].data["to_user_id"], got[3].data["amount"], got[3].data["balance_after"]) == (v, 20, 80)
    assert got[5].data["amount"] == 5 and got[5].data["balance_after"] == 80
    assert [e.sequence for e in got] == sorted(e.sequence for e in got)


def test_a_refused_change_writes_no_event(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("refused", quantity=5, min_order_amount=1000)
    u = uid("u")
    r = engine.issue(c.id, u)
    assert engine.drain(30)
    with pytest.raises(couponcore.InvalidArgument):
        engine.coupons.use(r.coupon_id, u, "small", 10)  # below the minimum order
    with pytest.raises(couponcore.NotFound):
        engine.coupons.use(r.coupon_id, uid("other"), "o", 5000)  # not the holder
    p = engine.points
    w = uid("w")
    p.earn(w, 10, idempotency_key=f"{w}-e")
    with pytest.raises(couponcore.InsufficientFunds):
        p.use(w, 11, idempotency_key=f"{w}-u")
    engine.coupons.use(r.coupon_id, u, "big", 5000)  # a marker after the refusals
    got = collect(engine, group(), lambda e: e.data.get("user_id") in (u, w) or e.subject.endswith(w), 3)
    assert sorted(e.type for e in got) == ["coupon.issued", "coupon.used", "points.earned"]
    assert [e.data.get("order_id") for e in got if e.type == "coupon.used"] == ["big"]
    # Nothing else of these users is in the log (read on with a short wait).
    more = collect(engine, group(), lambda e: e.data.get("user_id") in (u, w), 10, timeout_s=1.5)
    assert sorted(e.type for e in more) == ["coupon.issued", "coupon.used", "points.earned"]


def test_unacknowledged_events_come_back_and_groups_are_independent(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("redeliver", quantity=5)
    for i in range(5):
        engine.issue(c.id, uid(f"u{i}"))
    g1, g2 = group(), group()
    first = collect(engine, g1, of_campaign(c.id), 5, ["coupon.issued"], ack=False, consumer="c1")
    assert len(first) == 5 and not any(e.redelivered for e in first)
    # The same consumer, restarted: its pending events first, flagged as redelivered.
    again = collect(engine, g1, of_campaign(c.id), 5, ["coupon.issued"], consumer="c1")
    assert [e.id for e in again] == [e.id for e in first] and all(e.redelivered for e in again)
    # Acknowledged now: nothing comes back.
    assert collect(engine, g1, of_campaign(c.id), 1, ["coupon.issued"], consumer="c1", timeout_s=1.0) == []
    # Another group sees every event, independently.
    other = collect(engine, g2, of_campaign(c.id), 5, ["coupon.issued"])
    assert [e.id for e in other] == [e.id for e in first]


def test_a_dead_consumers_events_are_claimed(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("claim", quantity=3)
    for i in range(3):
        engine.issue(c.id, uid(f"u{i}"))
    g = group()
    dead = collect(engine, g, of_campaign(c.id), 3, ["coupon.issued"], ack=False, consumer="dead")
    assert len(dead) == 3
    time.sleep(0.3)
    s = engine.events.consume(g, ["coupon.issued"], consumer="alive", claim_idle_ms=200, block_ms=100, idle_timeout_s=5)
    claimed = []
    for e in s:
        if of_campaign(c.id)(e):
            claimed.append(e)
            e.ack()
        if len(claimed) == 3:
            break
    assert sorted(e.id for e in claimed) == sorted(e.id for e in dead) and all(e.redelivered for e in claimed)


def test_dead_letters(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("dl", quantity=1)
    engine.issue(c.id, uid("u"))
    g = group()
    [e] = collect(engine, g, of_campaign(c.id), 1, ["coupon.issued"], ack=False)
    engine.events.dead_letter(g, e, "the webhook answered 500 five times")
    [d] = engine.events.list_dead_letters(g)
    assert (d.event_id, d.type, d.reason, d.group) == (e.id, "coupon.issued", "the webhook answered 500 five times", g)
    assert d.event["id"] == e.id and d.event["data"]["campaign_id"] == c.id
    assert engine.events.list_dead_letters(group()) == []
    # Dead-lettered is settled: it does not come back to the group.
    assert collect(engine, g, of_campaign(c.id), 1, ["coupon.issued"], timeout_s=1.0) == []


def test_bad_input_is_a_typed_error(engine: couponcore.Engine) -> None:
    with pytest.raises(couponcore.InvalidArgument, match="unknown event type"):
        engine.events.consume("g", ["coupon.issuedd"])
    with pytest.raises(couponcore.InvalidArgument):
        engine.events.consume("bad group!", None)
    with pytest.raises(couponcore.InvalidArgument):
        engine.events.consume("g", None, batch=0)
    with pytest.raises(couponcore.InvalidType):
        engine.events.consume(42, None)  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidArgument):
        engine.events.list_dead_letters("g", limit=0)


def test_async_iterator(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("async", quantity=3)
    for i in range(3):
        engine.issue(c.id, uid(f"u{i}"))

    async def read() -> list[Event]:
        out = []
        async for e in engine.events.aconsume(group(), ["coupon.issued"], block_ms=100, idle_timeout_s=20):
            if of_campaign(c.id)(e):
                out.append(e)
                e.ack()
            if len(out) == 3:
                break
        return out

    got = asyncio.run(read())
    assert [e.data["seq"] for e in got] == [1, 2, 3]


def test_events_off_writes_none(open_deployment: Callable[..., couponcore.Engine]) -> None:
    e = open_deployment(events=False)
    try:
        c = e.campaigns.create("off", quantity=2)
        e.issue(c.id, uid("u"))
        assert e.drain(30)
    finally:
        e.close()
    on = open_deployment()
    try:
        c2 = on.campaigns.create("on", quantity=1)
        on.issue(c2.id, uid("u"))
        got = collect(on, group(), lambda ev: ev.data.get("campaign_id") in (c.id, c2.id), 1, ["coupon.issued"])
        assert [ev.data["campaign_id"] for ev in got] == [c2.id]
        more = collect(on, group(), of_campaign(c.id), 1, ["coupon.issued"], timeout_s=1.0)
        assert more == []
    finally:
        on.close()


def test_concurrent_issue_and_use_events_match_rows_and_keep_subject_order(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("race", quantity=200, discount_kind="fixed", discount_value=100)
    users = [uid(f"u{i}") for i in range(240)]
    coupons: dict[str, int] = {}
    lock = threading.Lock()

    def worker(part: list[str]) -> None:
        for u in part:
            r = engine.issue(c.id, u)
            if r.status is couponcore.Status.ISSUED:
                with lock:
                    coupons[u] = r.coupon_id

    threads = [threading.Thread(target=worker, args=(users[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.drain(30) and len(coupons) == 200

    def user_worker(part: list[tuple[str, int]]) -> None:
        for u, cid in part:
            engine.coupons.use(cid, u, f"o-{u}", 1000)
            if hash(u) % 2:
                engine.coupons.cancel_use(cid, f"o-{u}")

    items = list(coupons.items())
    threads = [threading.Thread(target=user_worker, args=(items[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cancelled = sum(1 for u in coupons if hash(u) % 2)
    want = 200 + 1 + 200 + cancelled
    got = collect(engine, group(), of_campaign(c.id), want, timeout_s=30)
    assert len(got) == want
    issued = [e for e in got if e.type == "coupon.issued"]
    assert len(issued) == engine.stats(c.id).rows == 200
    assert len({e.id for e in got}) == want  # no duplicates
    per_subject: dict[str, list[Event]] = {}
    for e in got:
        per_subject.setdefault(e.subject, []).append(e)
    order = {"coupon.issued": 0, "coupon.used": 1, "coupon.use_cancelled": 2}
    for subject, evs in per_subject.items():
        if subject.startswith("campaign/"):
            continue
        assert [e.sequence for e in evs] == sorted(e.sequence for e in evs), subject
        assert [order[e.type] for e in evs] == sorted(order[e.type] for e in evs), subject


# ---- production only: the relay -------------------------------------------------------------


def test_relay_stopped_between_xadd_and_delete_republishes_with_the_same_ids() -> None:
    kw = production_kwargs()
    e = couponcore.open(**kw, events_relay=False)  # relays nothing itself
    try:
        c = e.campaigns.create("relay", quantity=5)
        for i in range(5):
            e.issue(c.id, uid(f"u{i}"))
        assert e.drain(30) and e.events.stats()["outbox_rows"] >= 5
        # A relay that takes the lock, publishes one batch and "dies" before its DELETE.
        faulty = couponcore.open(**kw, writer_threads=0, events_relay_stop_after_xadd_batches=1)
        time.sleep(1.0)  # its first poll takes the lock at once; the batch is one round trip
        assert faulty.events.stats()["relayed"] == 0  # nothing deleted
        faulty.close()
        assert e.events.stats()["outbox_rows"] >= 5  # the rows are still in the outbox
        healthy = couponcore.open(**kw, writer_threads=0)
        try:
            seen: dict[str, int] = {}
            for ev in healthy.events.consume(group(), ["coupon.issued"], block_ms=100, idle_timeout_s=3):
                if of_campaign(c.id)(ev):
                    seen[ev.id] = seen.get(ev.id, 0) + 1
                ev.ack()
            # Published twice (at least once) with the same ids: deduped by id, each once.
            assert sorted(seen) == [f"coupon.issued:{c.id}:{s}" for s in range(1, 6)]
            assert set(seen.values()) == {2}, seen
            assert healthy.events.stats()["outbox_rows"] == 0
        finally:
            healthy.close()
    finally:
        e.close()


def test_a_standalone_worker_writes_and_relays_the_events(python: str) -> None:
    import subprocess

    kw = production_kwargs()
    e = couponcore.open(**kw, writer_threads=0, events_relay=False)
    try:
        worker = subprocess.Popen(
            [python, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"],
             "--key-prefix", kw["key_prefix"], "--threads", "1", "--report-s", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            c = e.campaigns.create("worker", quantity=3)
            for i in range(3):
                e.issue(c.id, uid(f"u{i}"))
            assert e.drain(30)
            got = collect(e, group(), of_campaign(c.id), 4, ["coupon.issued", "campaign.sold_out"])
            assert sorted(ev.type for ev in got) == ["campaign.sold_out"] + ["coupon.issued"] * 3
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
    finally:
        e.close()
