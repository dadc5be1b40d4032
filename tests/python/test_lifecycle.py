"""Campaign rules and the coupon lifecycle from Python: pause / resume / close / set_quantity,
use / cancel_use / get / list_for_user / counts, expiry, and bad input (typed errors, nothing
changed). Partners, API keys and tenant isolation: test_partners.py.

Every test runs on both deployments (the `engine` fixture). On the production one a coupon is
usable once its grant is in PostgreSQL, so tests drain after issuing; the PostgreSQL database is
shared by the run, so user ids are unique per test and global counts are not asserted."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable

import couponcore
import pytest
from couponcore import CouponState, Status

DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def uid(stem: str) -> str:
    """A user id no other test (or run) uses."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def issue(engine: couponcore.Engine, campaign_id: int, user_id: str) -> couponcore.IssueResult:
    """Issue, and wait until the coupon is in the store (at once when embedded)."""
    r = engine.issue(campaign_id, user_id)
    assert r.status is Status.ISSUED
    assert engine.drain(30)
    return r


@pytest.fixture
def fixed(engine: couponcore.Engine) -> couponcore.Campaign:
    """A campaign of 10 coupons worth 1,000 off orders of at least 5,000."""
    return engine.campaigns.create("fixed", 10, discount_kind="fixed", discount_value=1000, min_order_amount=5000)


# ---- campaign rules -----------------------------------------------------------------------------


def test_pause_resume_close(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("drop", 5)
    assert engine.campaigns.pause(c.id).state == "paused"
    assert engine.issue(c.id, "a").status is Status.NOT_OPEN
    assert engine.campaigns.get(c.id).state == "paused"
    assert engine.campaigns.resume(c.id).state == "active"
    assert engine.issue(c.id, "a").status is Status.ISSUED
    assert engine.campaigns.close(c.id).state == "closed"
    assert engine.issue(c.id, "b").status is Status.ENDED
    with pytest.raises(couponcore.Conflict):
        engine.campaigns.resume(c.id)
    with pytest.raises(couponcore.Conflict):
        engine.campaigns.set_quantity(c.id, 50)
    assert engine.campaigns.close(c.id).state == "closed"  # repeating is harmless


def test_set_quantity_reopens_a_sold_out_campaign_but_never_goes_below_issued(
    engine: couponcore.Engine,
) -> None:
    c = engine.campaigns.create("drop", 2)
    engine.issue_many(c.id, ["a", "b"])
    assert engine.issue(c.id, "c").status is Status.SOLD_OUT
    with pytest.raises(couponcore.Conflict):
        engine.campaigns.set_quantity(c.id, 1)
    for bad in (0, -1, 10**9 + 1):
        with pytest.raises(couponcore.InvalidArgument):
            engine.campaigns.set_quantity(c.id, bad)
    with pytest.raises(couponcore.InvalidType):
        engine.campaigns.set_quantity(c.id, "5")  # type: ignore[arg-type]
    assert engine.campaigns.get(c.id).quantity == 2
    assert engine.campaigns.set_quantity(c.id, 3).quantity == 3
    r = engine.issue(c.id, "c")
    assert (r.status, r.seq) == (Status.ISSUED, 3)
    assert engine.issue(c.id, "d").status is Status.SOLD_OUT


# ---- use and cancel -----------------------------------------------------------------------------


def test_use_fixed_discount_and_idempotent_repeat(engine: couponcore.Engine, fixed: couponcore.Campaign) -> None:
    alice = uid("alice")
    r = issue(engine, fixed.id, alice)
    u = engine.coupons.use(r.coupon_id, alice, "order-1", 12_000)
    assert (u.discount_amount, u.payable_amount, u.order_id) == (1000, 11_000, "order-1")
    assert engine.coupons.use(r.coupon_id, alice, "order-1", 12_000) == u  # the first result
    with pytest.raises(couponcore.Conflict):
        engine.coupons.use(r.coupon_id, alice, "order-1", 13_000)  # same order, other amount
    with pytest.raises(couponcore.Conflict):
        engine.coupons.use(r.coupon_id, alice, "order-2", 12_000)
    k = engine.coupons.get(r.coupon_id)
    assert k.state is CouponState.USED and k.state == "used"
    assert (k.used_order_id, k.order_amount, k.discount_amount) == ("order-1", 12_000, 1000)


def test_percent_discount_is_capped_and_rounded_down(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("pct", 10, discount_kind="percent", discount_value=15, discount_max=2000)
    a, b = uid("a"), uid("b")
    ids = [r.coupon_id for r in engine.issue_many(c.id, [a, b])]
    assert engine.drain(30)
    assert engine.coupons.use(ids[0], a, "o-a", 999).discount_amount == 149
    assert engine.coupons.use(ids[1], b, "o-b", 100_000).discount_amount == 2000


def test_fixed_discount_never_exceeds_the_order(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("big", 1, discount_kind="fixed", discount_value=5000)
    a = uid("a")
    r = issue(engine, c.id, a)
    u = engine.coupons.use(r.coupon_id, a, "o", 3000)
    assert (u.discount_amount, u.payable_amount) == (3000, 0)


def test_wrong_owner_unknown_coupon_and_minimum_order(engine: couponcore.Engine, fixed: couponcore.Campaign) -> None:
    bob = uid("bob")
    r = issue(engine, fixed.id, bob)
    with pytest.raises(couponcore.NotFound):
        engine.coupons.use(r.coupon_id, "mallory", "o", 9000)
    with pytest.raises(couponcore.NotFound):
        engine.coupons.use(r.coupon_id + 1, bob, "o", 9000)  # seq 2 was never issued
    with pytest.raises(couponcore.NotFound):
        engine.coupons.get((fixed.id + 50) << 32 | 1)
    with pytest.raises(couponcore.InvalidArgument, match="minimum order"):
        engine.coupons.use(r.coupon_id, bob, "o", 4999)
    assert engine.coupons.get(r.coupon_id).state is CouponState.ISSUED


def test_cancel_use_is_idempotent_and_frees_the_coupon(engine: couponcore.Engine, fixed: couponcore.Campaign) -> None:
    carol = uid("carol")
    r = issue(engine, fixed.id, carol)
    engine.coupons.use(r.coupon_id, carol, "o-1", 6000)
    back = engine.coupons.cancel_use(r.coupon_id, "o-1")
    assert back.state is CouponState.ISSUED and back.used_order_id is None
    assert engine.coupons.cancel_use(r.coupon_id, "o-1").state is CouponState.ISSUED
    with pytest.raises(couponcore.Conflict):
        engine.coupons.cancel_use(r.coupon_id, "o-other")
    assert engine.coupons.use(r.coupon_id, carol, "o-2", 6000).order_id == "o-2"
    assert engine.coupons.counts(fixed.id) == couponcore.CouponCounts(issued=0, used=1, expired=0, total=1)


def test_threads_racing_for_one_coupon_exactly_one_wins(engine: couponcore.Engine, fixed: couponcore.Campaign) -> None:
    dave = uid("dave")
    r = issue(engine, fixed.id, dave)
    barrier = threading.Barrier(16)
    outcomes: list[str] = []
    lock = threading.Lock()

    def checkout(i: int) -> None:
        barrier.wait()
        try:
            engine.coupons.use(r.coupon_id, dave, f"order-{i}", 8000)
            outcome = "won"
        except couponcore.Conflict:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=checkout, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 15 + ["won"]
    assert engine.coupons.counts(fixed.id).used == 1


# ---- expiry and queries -------------------------------------------------------------------------


def test_lapsed_coupons_read_expired_at_once(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("old", 5, valid_until=_now() - DAY)
    erin = uid("erin")
    r = issue(engine, c.id, erin)
    k = engine.coupons.get(r.coupon_id)
    assert k.state is CouponState.EXPIRED
    assert k.valid_until is not None and k.valid_until < _now()
    with pytest.raises(couponcore.Conflict, match="expired"):
        engine.coupons.use(r.coupon_id, erin, "o", 100)


def test_valid_days_and_the_expiry_job(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("week", 30, valid_days=7)
    results = engine.issue_many(c.id, [uid(f"u{i}") for i in range(25)])
    assert engine.drain(30)
    k = engine.coupons.get(results[0].coupon_id)
    assert k.valid_until is not None
    assert abs((k.valid_until - k.issued_at) - 7 * DAY) < dt.timedelta(microseconds=1)
    engine.expire_coupons()  # nothing of this campaign has lapsed yet
    assert engine.coupons.counts(c.id).expired == 0
    # (The job covers every campaign, so only this campaign's counts are exact.)
    first = engine.expire_coupons(_now() + 8 * DAY, chunk_rows=10, chunks_max=2)
    assert (first.expired, first.chunks, first.more) == (20, 2, True)
    rest = engine.expire_coupons(_now() + 8 * DAY, chunk_rows=10)
    assert rest.expired >= 5 and not rest.more
    assert engine.coupons.counts(c.id).expired == 25
    for bad in ({"chunk_rows": 0}, {"chunk_rows": 10_001}, {"chunks_max": 0}):
        with pytest.raises(couponcore.InvalidArgument):
            engine.expire_coupons(**bad)  # type: ignore[arg-type]


def test_list_for_user_pages_with_a_cursor_and_filters_by_state(engine: couponcore.Engine) -> None:
    frank = uid("frank")
    ids = []
    for i in range(5):
        c = engine.campaigns.create(f"c{i}", 3)
        ids.append(engine.issue(c.id, frank).coupon_id)
        engine.issue(c.id, uid("someone-else"))
    assert engine.drain(30)
    engine.coupons.use(ids[2], frank, "o", 10)
    seen: list[int] = []
    cursor = None
    while True:
        page = engine.coupons.list_for_user(frank, cursor=cursor, limit=2)
        assert len(page.items) <= 2
        seen += [k.id for k in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    assert [k.id for k in engine.coupons.list_for_user(frank, state="used").items] == [ids[2]]
    assert len(engine.coupons.list_for_user(frank, state=CouponState.ISSUED).items) == 4
    assert engine.coupons.list_for_user(frank, state="expired").items == []
    assert engine.coupons.list_for_user(uid("nobody")).items == []
    with pytest.raises(couponcore.InvalidArgument):
        engine.coupons.list_for_user(frank, state="lost")
    for limit in (0, 1001):
        with pytest.raises(couponcore.InvalidArgument):
            engine.coupons.list_for_user(frank, limit=limit)


# ---- bad input changes nothing ------------------------------------------------------------------

BAD_USES = [
    pytest.param({"order_amount": 0}, couponcore.InvalidArgument, id="zero-amount"),
    pytest.param({"order_amount": -5}, couponcore.InvalidArgument, id="negative-amount"),
    pytest.param({"order_amount": 10**12 + 1}, couponcore.InvalidArgument, id="absurd-amount"),
    pytest.param({"order_amount": 2**70}, couponcore.InvalidArgument, id="int-overflow"),
    pytest.param({"order_amount": "6000"}, couponcore.InvalidType, id="amount-as-str"),
    pytest.param({"order_amount": 6000.0}, couponcore.InvalidType, id="amount-as-float"),
    pytest.param({"order_id": ""}, couponcore.InvalidArgument, id="empty-order"),
    pytest.param({"order_id": "o" * 129}, couponcore.InvalidArgument, id="oversized-order"),
    pytest.param({"order_id": "o 1"}, couponcore.InvalidArgument, id="space-in-order"),
    pytest.param({"order_id": "x" * 10_000_000}, couponcore.InvalidArgument, id="huge-order"),
    pytest.param({"order_id": None}, couponcore.InvalidType, id="order-none"),
    pytest.param({"user_id": "u" * 129}, couponcore.InvalidArgument, id="oversized-user"),
    pytest.param({"user_id": "{tag}"}, couponcore.InvalidArgument, id="braces-in-user"),
    pytest.param({"coupon_id": 0}, couponcore.InvalidArgument, id="coupon-zero"),
    pytest.param({"coupon_id": -1}, couponcore.InvalidArgument, id="coupon-negative"),
    pytest.param({"coupon_id": "1"}, couponcore.InvalidType, id="coupon-as-str"),
]


@pytest.mark.parametrize(("change", "error"), BAD_USES)
def test_bad_use_input_is_refused_and_changes_nothing(
    engine: couponcore.Engine, fixed: couponcore.Campaign, change: dict, error: type
) -> None:
    gina = uid("gina")
    r = issue(engine, fixed.id, gina)
    args = {"coupon_id": r.coupon_id, "user_id": gina, "order_id": "o-1", "order_amount": 6000}
    args.update(change)
    with pytest.raises(error):
        engine.coupons.use(**args)
    assert engine.coupons.get(r.coupon_id).state is CouponState.ISSUED
    assert engine.coupons.counts(fixed.id).used == 0


BAD_CAMPAIGNS = [
    pytest.param({"discount_kind": "percent", "discount_value": 101}, id="percent-over-100"),
    pytest.param({"discount_kind": "percent", "discount_value": 0}, id="percent-zero"),
    pytest.param({"discount_kind": "percent", "discount_value": 10, "discount_max": -1}, id="negative-cap"),
    pytest.param({"discount_kind": "fixed", "discount_value": -100}, id="negative-fixed"),
    pytest.param({"discount_kind": "fixed", "discount_value": 10**12 + 1}, id="absurd-fixed"),
    pytest.param({"discount_kind": "bogus"}, id="unknown-kind"),
    pytest.param({"min_order_amount": -1}, id="negative-minimum"),
    pytest.param({"valid_days": 0}, id="zero-days"),
    pytest.param({"valid_days": 3651}, id="too-many-days"),
    pytest.param({"valid_days": 7, "valid_until": 2_000_000_000}, id="both-validities"),
]


@pytest.mark.parametrize("change", BAD_CAMPAIGNS)
def test_bad_campaign_terms_are_refused(engine: couponcore.Engine, change: dict) -> None:
    before = len(engine.campaigns.list())
    with pytest.raises(couponcore.InvalidArgument):
        engine.campaigns.create("bad", 10, **change)
    assert len(engine.campaigns.list()) == before


def test_cancel_and_get_refuse_bad_input(engine: couponcore.Engine, fixed: couponcore.Campaign) -> None:
    hank = uid("hank")
    r = issue(engine, fixed.id, hank)
    engine.coupons.use(r.coupon_id, hank, "o", 6000)
    for order in ("", "o" * 129, "a\nb"):
        with pytest.raises(couponcore.InvalidArgument):
            engine.coupons.cancel_use(r.coupon_id, order)
    with pytest.raises(couponcore.InvalidType):
        engine.coupons.cancel_use(r.coupon_id, 5)  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidArgument):
        engine.coupons.get(-3)
    assert engine.coupons.get(r.coupon_id).state is CouponState.USED


def test_closed_engine_refuses_lifecycle_calls(open_deployment: Callable[..., couponcore.Engine]) -> None:
    e = open_deployment()
    c = e.campaigns.create("c", 1)
    r = e.issue(c.id, "u")
    e.close()
    with pytest.raises(couponcore.Closed):
        e.coupons.use(r.coupon_id, "u", "o", 100)
    with pytest.raises(couponcore.Closed):
        e.campaigns.pause(c.id)
    with pytest.raises(couponcore.Closed):
        e.partners.create("p")
