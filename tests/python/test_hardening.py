"""Bad input gets a clear, typed error and changes nothing, on both deployments: refused
wallet operations leave no wallet row behind, every out-of-range number (inf, NaN, huge ints) is
InvalidArgument (never OverflowError, ValueError or a bare TypeError), sequence arguments must be
real sequences, and stored names refuse control and invisible format characters."""

from __future__ import annotations

import gc
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, Callable

import couponcore
import pytest

INF, NAN = math.inf, math.nan


@pytest.fixture(autouse=True)
def _collect_closed_engines() -> Iterator[None]:
    """A closed production engine keeps its PostgreSQL connections until it is collected, and
    the refused calls below keep engines in reference cycles (exception -> traceback -> frame):
    collect after each test, so that this file does not hold dozens of idle connections on a
    server other test runs share."""
    yield
    gc.collect()
HUGE = (2**63, 10**30, -(2**63) - 1, 2**64)
NOT_FINITE = (INF, -INF, NAN)


def tag() -> str:
    return str(time.time_ns())


def wallet_rows(engine: couponcore.Engine, db_path: str, partner_id: int, user_id: str) -> int:
    """Rows in the store's wallets table for (partner, user), read directly."""
    engine.points.counters()  # the wallet engine (and its tables) opens on first use
    sql = "SELECT count(*) FROM wallets WHERE partner_id = {p} AND user_id = {u}"
    if engine.kind == "embedded":
        with sqlite3.connect(db_path) as c:
            return int(c.execute(sql.format(p="?", u="?"), (partner_id, user_id)).fetchone()[0])
    import psycopg

    with psycopg.connect(os.environ["COUPONCORE_TEST_POSTGRES_URL"], autocommit=True) as c:
        row = c.execute(sql.format(p="%s", u="%s"), (partner_id, user_id)).fetchone()
        assert row is not None
        return int(row[0])


def refused(exc: type[BaseException], call: Callable[[], Any]) -> BaseException:
    """call() raises exc (a couponcore error), never a plain Python error."""
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, couponcore.Error), repr(info.value)
    return info.value


# ---- refused wallet operations leave no wallet row ---------------------------------------------


def test_refused_transfers_and_earns_create_no_wallet_row(engine: couponcore.Engine, db_path: str) -> None:
    partner = engine.partners.create(f"hardening-{tag()}").partner
    p = engine.partner(partner).points
    t = tag()
    src, nobody = f"src-{t}", f"nobody-{t}"
    dests = [f"dest{i}-{t}" for i in range(5)]
    p.earn(src, 10, idempotency_key=f"{t}-earn")
    used = f"{t}-use"
    p.use(src, 1, idempotency_key=used)
    refused(couponcore.NotFound, lambda: p.transfer(nobody, dests[0], 5, idempotency_key=f"{t}-t0"))
    refused(couponcore.InsufficientFunds, lambda: p.transfer(src, dests[1], 50, idempotency_key=f"{t}-t1"))
    refused(couponcore.Conflict, lambda: p.transfer(src, dests[2], 5, idempotency_key=used))
    refused(couponcore.Conflict, lambda: p.earn(dests[3], 5, idempotency_key=used))
    # In the asyncio face too, several at once (they share batches).
    import asyncio

    async def many() -> list[Any]:
        calls = [p.atransfer(src, dests[4], 1000, idempotency_key=f"{t}-a{i}") for i in range(10)]
        return await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(r, couponcore.InsufficientFunds) for r in asyncio.run(many()))
    for user in [nobody, *dests]:
        assert wallet_rows(engine, db_path, partner.id, user) == 0, user
        refused(couponcore.NotFound, lambda user=user: p.balance(user))
    assert engine.points.audit(partner.id)["wallets"] == 1
    assert p.balance(src).total == 9
    # Once an operation succeeds, its wallet is there.
    assert p.transfer(src, dests[1], 4, idempotency_key=f"{t}-t1-ok").balance_after == 5
    assert wallet_rows(engine, db_path, partner.id, dests[1]) == 1
    assert p.balance(dests[1]).total == 4
    assert engine.points.audit(partner.id)["ok"]


def test_refused_transfer_keeps_an_existing_empty_wallet(engine: couponcore.Engine, db_path: str) -> None:
    p = engine.points
    t = tag()
    a, b = f"a-{t}", f"b-{t}"
    p.earn(a, 5, idempotency_key=f"{t}-1")
    p.transfer(a, b, 5, idempotency_key=f"{t}-2")
    p.use(b, 5, idempotency_key=f"{t}-3")  # b: balance 0, with history
    refused(couponcore.InsufficientFunds, lambda: p.transfer(a, b, 1, idempotency_key=f"{t}-4"))
    assert wallet_rows(engine, db_path, 0, b) == 1
    assert [e.kind for e in p.history(b).entries] == ["use", "transfer_in"]


# ---- numbers out of range ------------------------------------------------------------------------


@pytest.mark.parametrize("days", [*HUGE[:2], *NOT_FINITE, 0, -1, 10**7])
def test_expires_in_days_out_of_range(engine: couponcore.Engine, db_path: str, days: Any) -> None:
    user = f"exp-{tag()}"
    refused(couponcore.InvalidArgument, lambda: engine.points.earn(user, 5, idempotency_key=user, expires_in_days=days))
    assert wallet_rows(engine, db_path, 0, user) == 0


@pytest.mark.parametrize("now", [*NOT_FINITE, 1e300, 10**30, -(10**30)])
def test_times_in_unix_seconds_out_of_range(engine: couponcore.Engine, db_path: str, now: Any) -> None:
    refused(couponcore.InvalidArgument, lambda: engine.expire_coupons(now=now))
    refused(couponcore.InvalidArgument, lambda: engine.points.expire(now=now))
    refused(couponcore.InvalidArgument, lambda: engine.points.purge_idempotency(now))
    user = f"t-{tag()}"
    refused(couponcore.InvalidArgument, lambda: engine.points.earn(user, 5, idempotency_key=user, expires_at=now))
    assert wallet_rows(engine, db_path, 0, user) == 0
    before = engine.campaigns.list()
    for field in ("starts_at", "ends_at", "valid_until"):
        refused(couponcore.InvalidArgument, lambda field=field: engine.campaigns.create("c", 5, **{field: now}))
    assert engine.campaigns.list() == before


def test_every_numeric_argument_out_of_range_is_invalid_argument(engine: couponcore.Engine, db_path: str) -> None:
    t = tag()
    user = f"n-{t}"
    c = engine.campaigns.create(f"numbers {t}", 5, discount_kind="fixed", discount_value=100)
    coupon = engine.issue(c.id, user).coupon_id
    assert engine.drain(30)
    engine.points.earn(user, 100, idempotency_key=f"{t}-seed")
    p = engine.points
    campaigns_before = engine.campaigns.list()
    partners_before = engine.partners.list(limit=1000)
    calls: list[tuple[str, Callable[[], Any]]] = []
    create = engine.campaigns.create
    for n in (*HUGE, *NOT_FINITE):
        calls += [
            ("create quantity", lambda n=n: create("x", n)),
            ("create per_user_limit", lambda n=n: create("x", 5, n)),
            ("create discount_value", lambda n=n: create("x", 5, discount_kind="fixed", discount_value=n)),
            ("discount_max", lambda n=n: create("x", 5, discount_kind="percent", discount_value=5, discount_max=n)),
            ("create min_order_amount", lambda n=n: create("x", 5, min_order_amount=n)),
            ("create valid_days", lambda n=n: create("x", 5, valid_days=n)),
            ("set_quantity", lambda n=n: engine.campaigns.set_quantity(c.id, n)),
            ("campaign id", lambda n=n: engine.campaigns.get(n)),
            ("pause id", lambda n=n: engine.campaigns.pause(n)),
            ("issue", lambda n=n: engine.issue(n, user)),
            ("issue_many", lambda n=n: engine.issue_many(n, [user])),
            ("stats", lambda n=n: engine.stats(n)),
            ("use coupon_id", lambda n=n: engine.coupons.use(n, user, f"o-{t}", 1000)),
            ("use order_amount", lambda n=n: engine.coupons.use(coupon, user, f"o-{t}", n)),
            ("cancel_use", lambda n=n: engine.coupons.cancel_use(n, f"o-{t}")),
            ("coupon get", lambda n=n: engine.coupons.get(n)),
            ("counts", lambda n=n: engine.coupons.counts(n)),
            ("list cursor", lambda n=n: engine.coupons.list_for_user(user, cursor=n)),
            ("list limit", lambda n=n: engine.coupons.list_for_user(user, limit=n)),
            ("expire chunk_rows", lambda n=n: engine.expire_coupons(chunk_rows=n)),
            ("expire chunks_max", lambda n=n: engine.expire_coupons(chunks_max=n)),
            ("partner", lambda n=n: engine.partner(n).campaigns.list()),
            ("partners get", lambda n=n: engine.partners.get(n)),
            ("partners rotate", lambda n=n: engine.partners.rotate(n)),
            ("partners revoke", lambda n=n: engine.partners.revoke(n)),
            ("partners list after", lambda n=n: engine.partners.list(after=n)),
            ("partners list limit", lambda n=n: engine.partners.list(limit=n)),
            ("earn amount", lambda n=n: p.earn(user, n, idempotency_key=f"{t}-e")),
            ("use amount", lambda n=n: p.use(user, n, idempotency_key=f"{t}-u")),
            ("cancel entry", lambda n=n: p.cancel(user, entry_id=n, idempotency_key=f"{t}-c")),
            ("transfer amount", lambda n=n: p.transfer(user, f"to-{t}", n, idempotency_key=f"{t}-t")),
            ("history cursor", lambda n=n: p.history(user, cursor=n)),
            ("history limit", lambda n=n: p.history(user, limit=n)),
            ("points expire chunk", lambda n=n: p.expire(chunk_wallets=n)),
            ("purge chunk_rows", lambda n=n: p.purge_idempotency(0, chunk_rows=n)),
            ("purge chunks_max", lambda n=n: p.purge_idempotency(0, chunks_max=n)),
            ("audit partner", lambda n=n: p.audit(n)),
            ("drain", lambda n=n: engine.drain(n)),
        ]
        calls += [
            ("checkout order_amount", lambda n=n: engine.checkout(user, f"co-{t}", n, idempotency_key=f"{t}-co")),
            ("checkout coupon", lambda n=n: engine.checkout(user, f"co-{t}", 1000, n, idempotency_key=f"{t}-co")),
            ("checkout points", lambda n=n: engine.checkout(user, f"co-{t}", 1000, None, n, idempotency_key=f"{t}-co")),
        ]
    failures = []
    for what, call in calls:
        try:
            call()
            failures.append(f"{what}: no error")
        except couponcore.InvalidArgument:
            pass  # InvalidType (a float where an int belongs) is an InvalidArgument too
        except BaseException as e:  # noqa: BLE001
            failures.append(f"{what}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
    # Nothing changed.
    assert engine.campaigns.list() == campaigns_before
    assert engine.partners.list(limit=1000) == partners_before
    assert p.balance(user).total == 100 and len(p.history(user).entries) == 1
    assert engine.coupons.get(coupon).state is couponcore.CouponState.ISSUED
    assert wallet_rows(engine, db_path, 0, f"to-{t}") == 0


@pytest.mark.parametrize("timeout", [*NOT_FINITE, -1, 10**400, 2**63, 1e300])
def test_drain_timeout_out_of_range(engine: couponcore.Engine, timeout: Any) -> None:
    refused(couponcore.InvalidArgument, lambda: engine.drain(timeout))
    assert engine.drain(0) in (True, False) and engine.drain(5.0)


@pytest.mark.parametrize("ttl", [*NOT_FINITE, 1e300, 10**30])
def test_open_auth_cache_ttl_out_of_range(tmp_path: Any, ttl: Any) -> None:
    refused(couponcore.InvalidArgument, lambda: couponcore.open(str(tmp_path / "x.db"), auth_cache_ttl_s=ttl))


def test_bools_stay_invalid_type(engine: couponcore.Engine) -> None:
    user = f"b-{tag()}"
    for call in (
        lambda: engine.campaigns.create("x", True),
        lambda: engine.points.earn(user, True, idempotency_key=user),
        lambda: engine.points.earn(user, 5, idempotency_key=user, expires_in_days=True),
        lambda: engine.expire_coupons(now=True),
        lambda: engine.drain(True),
        lambda: engine.coupons.list_for_user(user, limit=True),
    ):
        refused(couponcore.InvalidType, call)


# ---- sequences of str ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_ids, request_ids",
    [
        ("ab", None),
        (b"ab", None),
        ({"a": 1, "b": 2}, None),
        ({"a", "b"}, None),
        (frozenset({"a"}), None),
        (iter(["a", "b"]), None),
        (["a", "b"], "rs"),
        (["a", "b"], {"r1": 1, "r2": 2}),
        (["a", "b"], {"r1", "r2"}),
        (["a", 1], None),
        (["a", "b"], ["r1", 2]),
    ],
)
def test_sequence_arguments_must_be_sequences_of_str(
    engine: couponcore.Engine, user_ids: Any, request_ids: Any
) -> None:
    c = engine.campaigns.create(f"seq {tag()}", 10)
    refused(couponcore.InvalidType, lambda: engine.issue_many(c.id, user_ids, request_ids))

    async def aio() -> Any:
        return await engine.aissue_many(c.id, user_ids, request_ids)

    import asyncio

    if not hasattr(user_ids, "__next__"):  # an iterator is spent by the first call
        refused(couponcore.InvalidType, lambda: asyncio.run(aio()))
    assert engine.drain(30) and engine.stats(c.id).rows == 0
    # Lists and tuples are fine.
    assert [r.status for r in engine.issue_many(c.id, ("t1", "t2"), ["q1", None])] == ["ISSUED", "ISSUED"]


# ---- names without control or invisible format characters ---------------------------------------

BAD_TEXT = [
    "nul\x00x",
    "new\nline",
    "cr\rx",
    "tab\tx",
    "esc\x1b[31m",
    "del\x7f",
    "nel\x85",
    "csi\x9b",
    "rlo \u202egnp.exe",
    "lre\u202a",
    "pdf\u202c",
    "lri\u2066",
    "pdi\u2069",
    "lrm\u200e",
    "zwsp\u200b",
    "bom\ufeff",
    "ls\u2028",
    "alm\u061c",
    "tag\U000e0041",
]
GOOD_TEXT = ["Café 10% off", "春セール", "family \U0001f468\u200d\U0001f469\u200d\U0001f467", "שלום sale"]


@pytest.mark.parametrize("text", BAD_TEXT)
def test_names_with_control_or_format_characters_are_refused(
    engine: couponcore.Engine, db_path: str, text: str
) -> None:
    campaigns = engine.campaigns.list()
    partners = engine.partners.list(limit=1000)
    refused(couponcore.InvalidArgument, lambda: engine.campaigns.create(text, 5))
    refused(couponcore.InvalidArgument, lambda: engine.partners.create(text))
    user = f"r-{tag()}"
    refused(couponcore.InvalidArgument, lambda: engine.points.earn(user, 5, idempotency_key=user, reason=text))
    assert engine.campaigns.list() == campaigns
    assert engine.partners.list(limit=1000) == partners
    assert wallet_rows(engine, db_path, 0, user) == 0


def test_names_of_any_script_and_emoji_are_kept(engine: couponcore.Engine) -> None:
    for text in GOOD_TEXT:
        assert engine.campaigns.create(text, 5).name == text
        assert engine.partners.create(text).partner.name == text
        user = f"g-{tag()}"
        engine.points.earn(user, 5, idempotency_key=user, reason=text)
        assert engine.points.history(user).entries[0].reason == text


@pytest.mark.parametrize("text", ["has space\n", "a\u202eb", "nul\x00"])
def test_ids_refuse_control_and_format_characters(engine: couponcore.Engine, db_path: str, text: str) -> None:
    c = engine.campaigns.create(f"ids {tag()}", 5)
    refused(couponcore.InvalidArgument, lambda: engine.issue(c.id, text))
    refused(couponcore.InvalidArgument, lambda: engine.issue(c.id, "ok-user", text))
    refused(couponcore.InvalidArgument, lambda: engine.points.earn(text, 5, idempotency_key="k"))
    refused(couponcore.InvalidArgument, lambda: engine.points.earn("ok-user", 5, idempotency_key=text))
    refused(couponcore.InvalidArgument, lambda: engine.points.use("ok-user", 5, idempotency_key="k2", order_id=text))
    assert engine.drain(30) and engine.stats(c.id).rows == 0
    assert wallet_rows(engine, db_path, 0, "ok-user") == 0


# ---- other refusal paths change nothing either ---------------------------------------------------


def test_refused_coupon_campaign_and_partner_operations_change_nothing(engine: couponcore.Engine) -> None:
    t = tag()
    c = engine.campaigns.create(f"rules {t}", 3, discount_kind="fixed", discount_value=500, min_order_amount=1000)
    coupon = engine.issue(c.id, f"u-{t}").coupon_id
    engine.issue(c.id, f"v-{t}")
    assert engine.drain(30)
    refused(couponcore.Conflict, lambda: engine.campaigns.set_quantity(c.id, 1))  # below the 2 issued
    refused(couponcore.NotFound, lambda: engine.coupons.use(coupon, f"v-{t}", f"o-{t}", 5000))  # not v's coupon
    refused(couponcore.InvalidArgument, lambda: engine.coupons.use(coupon, f"u-{t}", f"o-{t}", 999))  # below minimum
    refused(couponcore.Conflict, lambda: engine.coupons.cancel_use(coupon, f"o-{t}"))  # never used
    got = engine.coupons.get(coupon)
    assert got.state is couponcore.CouponState.ISSUED and got.used_order_id is None
    assert engine.campaigns.get(c.id).quantity == 3
    assert engine.issue(c.id, f"w-{t}").status == "ISSUED"  # the third coupon is still there
    engine.campaigns.close(c.id)
    refused(couponcore.Conflict, lambda: engine.campaigns.resume(c.id))
    refused(couponcore.Conflict, lambda: engine.campaigns.set_quantity(c.id, 10))
    got_c = engine.campaigns.get(c.id)
    assert (got_c.state, got_c.quantity) == ("closed", 3)
    # Partner operations on a partner that does not exist write nothing.
    partners = engine.partners.list(limit=1000)
    for call in (lambda: engine.partners.rotate(987_654), lambda: engine.partners.revoke(987_654)):
        refused(couponcore.NotFound, call)
    assert engine.partners.list(limit=1000) == partners
