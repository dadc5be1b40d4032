"""Partners, API keys, cached authentication and tenant isolation from Python.

A partner reaching for another partner's campaign, coupon or user through every entry point
gets NotFound, word for word what an unknown id gets, and nothing changes."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import couponcore
import pytest
from couponcore import CouponState

KEY_RE = re.compile(r"^cc_live_[a-z2-7]{52}$")


def test_create_shows_the_key_once_and_it_authenticates(engine: couponcore.Engine) -> None:
    pk = engine.partners.create("Acme Shop")
    assert KEY_RE.match(pk.api_key)
    assert pk.api_key not in repr(pk)  # keys stay out of logs
    assert (pk.partner.name, pk.partner.active_keys) == ("Acme Shop", 1)
    assert engine.authenticate(pk.api_key) == engine.partners.get(pk.partner.id)
    assert pk.partner.id in [p.id for p in engine.partners.list(limit=1000)]
    assert engine.partners.get(0).name == "default"


def test_steady_state_authentication_stays_off_the_database(engine: couponcore.Engine) -> None:
    keys = [engine.partners.create(f"p{i}").api_key for i in range(3)]
    for _ in range(300):
        for k in keys:
            engine.authenticate(k)
    n = engine.auth_counters()
    assert n["authentications"] == 900
    assert n["db_queries"] == 3  # one per key; the cache answers the rest
    assert n["cache_hits"] == 897


BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("cc_live_", id="prefix-only"),
    pytest.param("cc_live_" + "a" * 51, id="short"),
    pytest.param("cc_live_" + "a" * 53, id="long"),
    pytest.param("cc_live_" + "A" * 52, id="uppercase"),
    pytest.param("cc_test_" + "a" * 52, id="other-prefix"),
    pytest.param("x" * 1_000_000, id="huge"),
    pytest.param("cc_live_" + "a" * 51 + "\x00", id="nul"),
    pytest.param("cc_live_" + "\ud800" * 52, id="lone-surrogates"),
    pytest.param(12345, id="not-a-string"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_malformed_keys_get_the_one_error(engine: couponcore.Engine, key: Any) -> None:
    with pytest.raises(couponcore.Unauthenticated) as info:
        engine.authenticate(key)
    assert str(info.value) == "invalid API key"
    assert engine.auth_counters()["db_queries"] == 0  # refused before any lookup


def test_unknown_and_revoked_keys_get_the_same_error(engine: couponcore.Engine) -> None:
    pk = engine.partners.create("p")
    engine.authenticate(pk.api_key)  # cached
    revoked = engine.partners.revoke(pk.partner)
    assert revoked.active_keys == 0
    unknown = "cc_live_" + "b" * 52
    messages = set()
    for k in (pk.api_key, unknown):
        with pytest.raises(couponcore.Unauthenticated) as info:
            engine.authenticate(k)
        messages.add(str(info.value))
    assert messages == {"invalid API key"}


def test_rotation_replaces_the_key_at_once(engine: couponcore.Engine) -> None:
    pk = engine.partners.create("p")
    engine.authenticate(pk.api_key)
    new = engine.partners.rotate(pk.partner.id)
    assert new.api_key != pk.api_key and new.partner.active_keys == 1
    with pytest.raises(couponcore.Unauthenticated):
        engine.authenticate(pk.api_key)
    assert engine.authenticate(new.api_key).id == pk.partner.id


def test_partner_management_refuses_bad_input(engine: couponcore.Engine) -> None:
    before = len(engine.partners.list(limit=1000))
    for name in ("", "n" * 201, "tab\there"):
        with pytest.raises(couponcore.InvalidArgument):
            engine.partners.create(name)
    assert len(engine.partners.list(limit=1000)) == before
    with pytest.raises(couponcore.InvalidType):
        engine.partners.create(7)  # type: ignore[arg-type]
    with pytest.raises(couponcore.InvalidArgument):
        engine.partners.rotate(0)  # the embedded default holds no keys
    with pytest.raises(couponcore.NotFound):
        engine.partners.rotate(424242)
    with pytest.raises(couponcore.NotFound):
        engine.partners.get(424242)
    with pytest.raises(couponcore.InvalidArgument):
        engine.partners.list(limit=0)
    with pytest.raises(couponcore.InvalidArgument):
        engine.partner(-1)
    with pytest.raises(couponcore.InvalidType):
        engine.partner(True)  # type: ignore[arg-type]


def test_auth_cache_options(open_deployment: Callable[..., couponcore.Engine]) -> None:
    with open_deployment(auth_cache_ttl_s=0) as e:  # no cache: every call asks
        pk = e.partners.create("p")
        for _ in range(5):
            e.authenticate(pk.api_key)
        assert e.auth_counters()["db_queries"] == 5
    for bad in (-1, 3601):
        with pytest.raises(couponcore.InvalidArgument):
            open_deployment(auth_cache_ttl_s=bad)
    with pytest.raises(couponcore.InvalidType):
        open_deployment(auth_cache_ttl_s="30")


# ---- tenant isolation ---------------------------------------------------------------------------


def test_a_partner_cannot_reach_another_partners_objects(engine: couponcore.Engine) -> None:
    ka, kb = engine.partners.create("a"), engine.partners.create("b")
    a = engine.partner(engine.authenticate(ka.api_key))
    b = engine.partner(kb.partner.id)
    c = a.campaigns.create("a's drop", 10, discount_kind="fixed", discount_value=100)
    user = f"shared-{uuid.uuid4().hex[:12]}"  # one id, used under both partners
    assert c.partner_id == ka.partner.id
    r = a.issue(c.id, user)
    assert engine.drain(30)
    a.coupons.use(r.coupon_id, user, "order-a", 1000)
    unknown_campaign, unknown_coupon = c.id + 1000, (c.id << 32) | 9

    def same_as_unknown(theirs: Callable[[], Any], unknown: Callable[[], Any]) -> None:
        with pytest.raises(couponcore.NotFound) as got:
            theirs()
        with pytest.raises(couponcore.NotFound) as ref:
            unknown()
        blank = str(got.value).replace(str(r.coupon_id), "#").replace(str(c.id), "#")
        assert blank == str(ref.value).replace(str(unknown_coupon), "#").replace(str(unknown_campaign), "#")

    def reach_for_it(other: couponcore.Scope) -> None:
        same_as_unknown(lambda: other.campaigns.get(c.id), lambda: other.campaigns.get(unknown_campaign))
        same_as_unknown(lambda: other.campaigns.pause(c.id), lambda: other.campaigns.pause(unknown_campaign))
        same_as_unknown(lambda: other.campaigns.resume(c.id), lambda: other.campaigns.resume(unknown_campaign))
        same_as_unknown(lambda: other.campaigns.close(c.id), lambda: other.campaigns.close(unknown_campaign))
        same_as_unknown(
            lambda: other.campaigns.set_quantity(c.id, 99),
            lambda: other.campaigns.set_quantity(unknown_campaign, 99),
        )
        same_as_unknown(lambda: other.issue(c.id, "x"), lambda: other.issue(unknown_campaign, "x"))
        same_as_unknown(lambda: other.issue_many(c.id, ["x"]), lambda: other.issue_many(unknown_campaign, ["x"]))
        same_as_unknown(
            lambda: asyncio.run(other.aissue(c.id, "x")),
            lambda: asyncio.run(other.aissue(unknown_campaign, "x")),
        )
        same_as_unknown(
            lambda: asyncio.run(other.aissue_many(c.id, ["x"])),
            lambda: asyncio.run(other.aissue_many(unknown_campaign, ["x"])),
        )
        same_as_unknown(lambda: other.stats(c.id), lambda: other.stats(unknown_campaign))
        same_as_unknown(lambda: other.coupons.counts(c.id), lambda: other.coupons.counts(unknown_campaign))
        same_as_unknown(lambda: other.coupons.get(r.coupon_id), lambda: other.coupons.get(unknown_coupon))
        same_as_unknown(
            lambda: other.coupons.use(r.coupon_id, user, "order-a", 1000),
            lambda: other.coupons.use(unknown_coupon, user, "order-a", 1000),
        )
        same_as_unknown(
            lambda: other.coupons.cancel_use(r.coupon_id, "order-a"),
            lambda: other.coupons.cancel_use(unknown_coupon, "order-a"),
        )
        # The same user id under another partner is another user.
        assert other.coupons.list_for_user(user).items == []
        assert c.id not in [x.id for x in other.campaigns.list()]

    reach_for_it(b)  # another partner
    reach_for_it(engine)  # the default partner 0
    # Nothing of a's changed.
    got = a.campaigns.get(c.id)
    assert (got.state, got.quantity) == ("active", 10)
    assert a.coupons.get(r.coupon_id).state is CouponState.USED
    assert a.coupons.counts(c.id).total == 1
    assert engine.drain(30) and a.stats(c.id).rows == 1
    assert [k.id for k in a.coupons.list_for_user(user).items] == [r.coupon_id]


def test_campaigns_of_an_unknown_partner_cannot_be_created(engine: couponcore.Engine) -> None:
    ghost = engine.partner(999_999)
    with pytest.raises(couponcore.NotFound):
        ghost.campaigns.create("c", 1)
    assert ghost.campaigns.list() == []


def test_wallets_of_an_unknown_partner_are_not_found_and_nothing_is_written(engine: couponcore.Engine) -> None:
    ghost = engine.partner(999_998)
    for call in (
        lambda: ghost.points.earn("u", 10, idempotency_key="g-1"),
        lambda: ghost.points.balance("u"),
        lambda: ghost.checkout("u", "o-1", 100, points=5, idempotency_key="g-2"),
    ):
        with pytest.raises(couponcore.NotFound):
            call()
    # Nothing reached the store: the default partner's audit sees no wallet of partner 999998.
    assert engine.points.audit(999_998)["wallets"] == 0
    # A partner that exists gets its wallets.
    real = engine.partner(engine.partners.create("real").partner)
    assert real.points.earn("u", 10, idempotency_key="r-1").balance_after == 10
