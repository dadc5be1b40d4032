"""Dead letters as a tool (docs/dead-letters.md): real dead letters, made by PostgreSQL refusing
grants (a CHECK constraint on coupons that one test's users violate), listed, shown, re-driven
after the cause is fixed (the row lands, the coupon is served), dropped (the seq and the user's
slot come back: the campaign still ends with exactly `quantity` rows, seqs unique in
1..quantity), under concurrent issuance, across a lost mirror, and through the CLI."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import couponcore
import psycopg
import pytest
import redis as redis_py
from conftest import production_kwargs

# The writers retry a refused grant quickly and dead-letter it on its second delivery.
FAST_DEAD_LETTERS: dict[str, Any] = {
    "writer_claim_idle_ms": 100,
    "writer_claim_interval_ms": 50,
    "writer_dead_letter_after_deliveries": 2,
}
_constraints = itertools.count()


def _pg() -> psycopg.Connection[Any]:
    return psycopg.connect(os.environ["COUPONCORE_TEST_POSTGRES_URL"], autocommit=True)


class Refusal:
    """PostgreSQL refuses every grant to a user whose id starts with ``self.prefix`` while the
    refusal is on (a CHECK constraint NOT VALID: existing rows are not checked)."""

    def __init__(self) -> None:
        n = next(_constraints)
        self.prefix = f"blocked{os.getpid()}x{n}-"
        self.name = f"dl_test_refuse_{os.getpid()}_{n}"
        with _pg() as c:
            c.execute(
                f"ALTER TABLE coupons ADD CONSTRAINT {self.name} CHECK (user_id NOT LIKE '{self.prefix}%') NOT VALID"
            )
        self.on = True

    def fix(self) -> None:
        if self.on:
            with _pg() as c:
                c.execute(f"ALTER TABLE coupons DROP CONSTRAINT IF EXISTS {self.name}")
            self.on = False


@pytest.fixture
def refusal() -> Iterator[Refusal]:
    couponcore.migrate(os.environ["COUPONCORE_TEST_POSTGRES_URL"])
    r = Refusal()
    yield r
    r.fix()


@pytest.fixture
def where() -> dict[str, str]:
    return production_kwargs()


CLUSTER = os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER", "")


@pytest.fixture(
    params=[
        pytest.param(1, id="unsharded"),
        pytest.param(
            3,
            id="sharded-cluster",
            marks=pytest.mark.skipif(not CLUSTER, reason="COUPONCORE_TEST_REDIS_CLUSTER is not set"),
        ),
    ]
)
def drop_where(request: pytest.FixtureRequest) -> tuple[dict[str, str], int]:
    """The drop's tests on a campaign of one shard (the single server) and of three (the test
    cluster: one shard per master), where the seq goes back to the shard that granted it."""
    kw = production_kwargs()
    if request.param > 1:
        kw["redis"] = CLUSTER
    return kw, request.param


def _wait_dead_letters(
    e: couponcore.Engine, campaign_id: int, n: int, timeout_s: float = 30
) -> list[couponcore.DeadLetter]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = e.dead_letters.list(campaign_id)
        if len(got) >= n or time.monotonic() > deadline:
            assert len(got) == n, got
            return got
        time.sleep(0.05)


def _rows(campaign_id: int) -> list[tuple[int, str]]:
    with _pg() as c:
        return [(int(s), str(u)) for s, u in c.execute(
            "SELECT seq, user_id FROM coupons WHERE campaign_id = %s ORDER BY seq", (campaign_id,)
        )]


def _sold_out_invariant(campaign_id: int, quantity: int) -> list[tuple[int, str]]:
    rows = _rows(campaign_id)
    seqs = [s for s, _ in rows]
    assert len(rows) == quantity
    assert sorted(set(seqs)) == list(range(1, quantity + 1))
    return rows


def test_list_show_and_redrive_after_the_cause_is_fixed(where: dict[str, str], refusal: Refusal) -> None:
    with couponcore.open(**where, **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dl-redrive", 10)
        ok = e.issue(c.id, "alice")
        bad = [e.issue(c.id, f"{refusal.prefix}{i}", request_id=f"req-{i}") for i in range(2)]
        assert ok.issued and all(r.issued for r in bad)
        dls = _wait_dead_letters(e, c.id, 2)
        assert e.drain(10)
        by_seq = {d.seq: d for d in dls}
        assert set(by_seq) == {r.seq for r in bad}
        for i, r in enumerate(bad):
            d = by_seq[r.seq]
            want = (c.id, f"{refusal.prefix}{i}", f"req-{i}", 1)
            assert (d.campaign_id, d.user_id, d.request_id, d.user_ordinal) == want
            assert d.deliveries == 2 and d.redrives == 0 and d.entry_id and d.reason
            assert d.fields["u"] == d.user_id and d.fields["s"] == str(r.seq)
            assert abs(d.dead_lettered_at.timestamp() - time.time()) < 600
            assert e.dead_letters.get(c.id, d.id) == d
        # every campaign's listing, paged with the "<campaign>:<id>" cursor
        everything = e.dead_letters.list()
        assert [(d.campaign_id, d.id) for d in everything] == [(c.id, d.id) for d in dls]
        first = e.dead_letters.list(limit=1)
        assert e.dead_letters.list(after=f"{c.id}:{first[0].id}") == dls[1:]
        assert e.dead_letters.list(c.id, after=dls[0].id) == dls[1:]
        # a dead-lettered grant's coupon is not in the store: not yet usable
        with pytest.raises(couponcore.Unavailable):
            e.coupons.get(bad[0].coupon_id)

        # Not fixed: a re-drive dead-letters again (fresh deliveries, redrives counted), once.
        again = e.dead_letters.redrive(c.id, by_seq[bad[0].seq].id)
        assert again == by_seq[bad[0].seq]
        with pytest.raises(couponcore.NotFound):
            e.dead_letters.redrive(c.id, again.id)  # a second re-drive of the same record
        deadline = time.monotonic() + 30
        while not any(d.redrives == 1 for d in e.dead_letters.list(c.id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (back,) = [d for d in e.dead_letters.list(c.id) if d.seq == bad[0].seq]
        assert back.redrives == 1 and back.deliveries == 2 and back.id != again.id

        # Fixed: both re-driven; the rows land with the same seq, user and request; served.
        refusal.fix()
        assert e.dead_letters.redrive_all(c.id) == 2
        assert e.drain(20)
        assert e.dead_letters.list(c.id) == []
        assert _rows(c.id) == sorted([(ok.seq, "alice")] + [(r.seq, f"{refusal.prefix}{i}") for i, r in enumerate(bad)])
        for i, r in enumerate(bad):
            assert e.coupons.get(r.coupon_id).user_id == f"{refusal.prefix}{i}"
        used = e.coupons.use(bad[1].coupon_id, f"{refusal.prefix}1", "order-1", 1000)
        assert used.coupon_id == bad[1].coupon_id
        # the request id's remembered answer still holds: the same coupon, not a second one
        assert e.issue(c.id, f"{refusal.prefix}0", request_id="req-0") == bad[0]
        assert e.reconcile(c.id)["consistent"]


TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TP2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def test_a_redriven_grant_keeps_its_trace_context(where: dict[str, str], refusal: Refusal) -> None:
    """Traced grants dead-lettered (their records hold the traceparents), re-driven after the cause
    is fixed, then written: the grants' coupon.issued events carry the original traceparents; an
    untraced one stays without."""
    with couponcore.open(**where, **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dl-trace", 10)
        users = [f"{refusal.prefix}t{i}" for i in range(3)]
        got = e.issue_many(c.id, users, traceparent=[TP, None, TP2])
        assert all(r.issued for r in got)
        dls = {d.user_id: d for d in _wait_dead_letters(e, c.id, 3)}
        assert dls[users[0]].fields["p"] == TP and dls[users[2]].fields["p"] == TP2
        assert "p" not in dls[users[1]].fields
        refusal.fix()
        assert e.dead_letters.redrive_all(c.id) == 3
        assert e.drain(20)
        want = {users[0]: TP, users[1]: None, users[2]: TP2}
        seen: dict[str, Any] = {}
        stream = e.events.consume(f"dl-trace-{os.getpid()}-{c.id}", ["coupon.issued"], block_ms=100, idle_timeout_s=20)
        for ev in stream:
            ev.ack()
            if ev.data.get("campaign_id") == c.id:
                seen[ev.data["user_id"]] = ev.traceparent
            if len(seen) == len(want):
                break
        assert seen == want


def test_drop_gives_back_the_seq_and_the_users_slot(
    drop_where: tuple[dict[str, str], int], refusal: Refusal
) -> None:
    quantity = 6
    where, shards = drop_where
    with couponcore.open(**where, **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dl-drop", quantity, shards=shards)
        for u in ("u1", "u2"):
            assert e.issue(c.id, u).issued
        victim = f"{refusal.prefix}v"
        lost = e.issue(c.id, victim)
        for u in ("u3", "u4", "u5"):
            assert e.issue(c.id, u).issued
        assert e.issue(c.id, "u6").status == couponcore.Status.SOLD_OUT
        (d,) = _wait_dead_letters(e, c.id, 1)
        assert d.seq == lost.seq
        with pytest.raises(couponcore.Unavailable):
            e.coupons.get(lost.coupon_id)
        assert e.gate_issued(c.id) == quantity and e.stats(c.id).rows == quantity - 1
        assert e.dead_letters.drop(c.id, d.id) == d
        assert e.gate_issued(c.id) == quantity - 1  # the stock left is one again
        with pytest.raises(couponcore.NotFound):
            e.dead_letters.drop(c.id, d.id)  # a second drop of the same record
        with pytest.raises(couponcore.NotFound):
            e.dead_letters.get(c.id, d.id)
        # the dropped grant's coupon is gone, not "retry later"
        with pytest.raises(couponcore.NotFound):
            e.coupons.get(lost.coupon_id)
        # the user can get a coupon again: the dropped seq (the lowest free one)
        refusal.fix()
        again = e.issue(c.id, victim)
        assert again.issued and again.seq == lost.seq
        assert e.issue(c.id, "u7").status == couponcore.Status.SOLD_OUT
        assert e.drain(20)
        rows = _sold_out_invariant(c.id, quantity)
        assert (lost.seq, victim) in rows
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == quantity and rep["dead_lettered"] == 0


def test_drop_while_many_threads_issue(drop_where: tuple[dict[str, str], int], refusal: Refusal) -> None:
    quantity = 400
    blocked = 12
    where, shards = drop_where
    with couponcore.open(**where, **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dl-race", quantity, shards=shards)
        first = [f"{refusal.prefix}{i}" if i % 5 == 0 else f"a{i}" for i in range(blocked * 5)]
        assert all(r.issued for r in e.issue_many(c.id, first))
        dls = _wait_dead_letters(e, c.id, blocked)
        refusal.fix()
        drops_done = threading.Event()
        errors: list[BaseException] = []
        counter = itertools.count()

        def issue_until_sold_out() -> None:
            try:
                sold_out_after_drops = 0
                while sold_out_after_drops < 3:
                    done = drops_done.is_set()
                    r = e.issue(c.id, f"t{next(counter)}")
                    if r.status == couponcore.Status.SOLD_OUT and done:
                        sold_out_after_drops += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=issue_until_sold_out) for _ in range(8)]
        for t in threads:
            t.start()
        for d in dls:
            e.dead_letters.drop(c.id, d.id)
        drops_done.set()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        # Seqs a drop freed after this process's sold-out fast path last looked (it rechecks
        # Redis every second) are taken by an engine without one.
        with couponcore.open(**where, writer_threads=0) as other:
            late = 0
            while other.issue(c.id, f"late{late}").status != couponcore.Status.SOLD_OUT:
                late += 1
            assert late <= blocked
        assert e.drain(30)
        rows = _sold_out_invariant(c.id, quantity)
        assert not any(u.startswith(refusal.prefix) for _, u in rows)
        assert e.dead_letters.list(c.id) == []
        assert e.reconcile(c.id)["consistent"]


def test_a_lost_mirror_keeps_the_free_seqs_and_the_grants_in_the_log(where: dict[str, str], refusal: Refusal) -> None:
    """The mirror is rebuilt from the log, the dead letters and the store: a freed seq that a grant
    still in the log took again is not freed twice; a freed seq nobody took is free again."""
    quantity = 8
    r = redis_py.Redis.from_url(where["redis"])
    with couponcore.open(**where, **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dl-restore", quantity)
        assert all(x.issued for x in e.issue_many(c.id, ["u1", f"{refusal.prefix}a", f"{refusal.prefix}b", "u2"]))
        dls = _wait_dead_letters(e, c.id, 2)
        assert e.drain(10)
    refusal.fix()
    base = f"{where['key_prefix']}{{c{c.id}}}:"
    with couponcore.open(**where, writer_threads=0) as quiet:  # grants stay in the log
        for d in dls:
            quiet.dead_letters.drop(c.id, d.id)
        assert r.zrange(base + "free", 0, -1) == [str(d.seq).encode() for d in sorted(dls, key=lambda d: d.seq or 0)]
        taken = quiet.issue(c.id, "x1")  # the lowest free seq, its grant left in the log
        assert taken.seq == min(d.seq or 0 for d in dls)
        r.delete(base + "m", base + "free")  # Redis loses the mirror, not the log
        nxt = quiet.issue(c.id, "x2")  # rebuilt: the other freed seq is free, x1's is not
        assert nxt.issued and nxt.seq == max(d.seq or 0 for d in dls)
        assert quiet.issue(c.id, "x1").status == couponcore.Status.ALREADY_ISSUED  # x1 counted from the log
    with couponcore.open(**where) as e:
        users = iter(f"y{i}" for i in range(100))
        while e.issue(c.id, next(users)).status != couponcore.Status.SOLD_OUT:
            pass
        assert e.drain(20)
        _sold_out_invariant(c.id, quantity)
        assert e.reconcile(c.id)["consistent"]


def test_bad_input_is_typed_and_changes_nothing(where: dict[str, str], db_path: str) -> None:
    with couponcore.open(**where) as e:
        c = e.campaigns.create("dl-bad", 3)
        dl = e.dead_letters
        assert dl.list() == [] and dl.list(c.id) == []
        for bad_id in ("nope", "1-", "-1", "1-2-3", "", "1 -2"):
            with pytest.raises(couponcore.InvalidArgument):
                dl.get(c.id, bad_id)
            with pytest.raises(couponcore.InvalidArgument):
                dl.drop(c.id, bad_id)
        for op in (dl.get, dl.redrive, dl.drop):
            with pytest.raises(couponcore.NotFound):
                op(c.id, "1-1")  # well-formed, not there
            with pytest.raises(couponcore.NotFound):
                op(999_999_999, "1-1")  # no such campaign
        for kwargs in ({"limit": 0}, {"limit": 1001}, {"after": "zzz"}):
            with pytest.raises(couponcore.InvalidArgument):
                dl.list(c.id, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(couponcore.InvalidArgument):
            dl.list(after="1-1")  # across campaigns the cursor names the campaign
        with pytest.raises(couponcore.NotFound):
            dl.list(999_999_999)
        with pytest.raises(couponcore.InvalidType):
            dl.get("x", "1-1")  # type: ignore[arg-type]
        assert e.issue(c.id, "u").seq == 1  # nothing moved
    with couponcore.open(db_path) as emb:  # no grant log
        c = emb.campaigns.create("emb", 3)
        emb.issue(c.id, "u")
        assert emb.dead_letters.list() == [] and emb.dead_letters.list(c.id) == []
        assert emb.dead_letters.redrive_all() == 0
        for op in (emb.dead_letters.get, emb.dead_letters.redrive, emb.dead_letters.drop):
            with pytest.raises(couponcore.NotFound):
                op(c.id, "1-1")


def test_cli_lists_shows_redrives_and_drops(where: dict[str, str], refusal: Refusal) -> None:
    with couponcore.open(**where, **FAST_DEAD_LETTERS) as e:
        c = e.campaigns.create("dl-cli", 5)
        a = e.issue(c.id, f"{refusal.prefix}a")
        b = e.issue(c.id, f"{refusal.prefix}b")
        dls = {d.seq: d for d in _wait_dead_letters(e, c.id, 2)}
        servers = ["--redis", where["redis"], "--postgres", where["postgres"], "--key-prefix", where["key_prefix"]]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "couponcore", "deadletters", *args, *servers],
                capture_output=True, text=True, timeout=60,
            )

        out = cli("list", "--campaign", str(c.id), "--json")
        assert out.returncode == 0, out.stderr
        listed = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(x["id"], x["seq"], x["user_id"]) for x in listed] == [(d.id, d.seq, d.user_id) for d in dls.values()]
        shown = cli("show", str(c.id), dls[a.seq].id)
        assert shown.returncode == 0 and f"u = {refusal.prefix}a" in shown.stdout
        bad = cli("show", str(c.id), "not-an-id")
        assert bad.returncode == 3 and "InvalidArgument" in bad.stderr
        refusal.fix()
        assert cli("redrive", str(c.id), dls[a.seq].id).returncode == 0
        assert cli("drop", str(c.id), dls[b.seq].id).returncode == 0
        gone = cli("drop", str(c.id), dls[b.seq].id)
        assert gone.returncode == 3 and "NotFound" in gone.stderr
        assert e.drain(20)
        assert _rows(c.id) == [(a.seq, f"{refusal.prefix}a")]
        with pytest.raises(couponcore.NotFound):
            e.coupons.get(b.coupon_id)
        assert cli("list").returncode == 0
