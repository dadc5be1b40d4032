"""A dead writer's grants move on fast: liveness by heartbeat (docs/production.md, "When a writer
dies"), with real processes killed by SIGKILL and the rows counted in PostgreSQL.

The victim (an engine with an in-process writer, or a standalone `couponcore worker`) reads the
grant log while the test holds a lock on the coupons table, so it holds every entry pending and
cannot commit. The survivor is an engine whose writer has writer_claim_idle_ms = 120 s: only
the heartbeat path can explain a takeover within seconds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import couponcore
import pytest
from conftest import env_url, production_kwargs

FALLBACK_IDLE_MS = 120_000  # the survivor's XAUTOCLAIM: far beyond anything measured here
USERS_PER_ENTRY = 100
ENTRIES = 8  # fewer than a writer's first read (16 entries): the victim takes them all at once

ENGINE_VICTIM = """
import json, sys, threading, couponcore
kw = json.loads(sys.argv[1])
e = couponcore.open(**kw, writer_threads=1, migrate_on_open=False)
print("up", flush=True)
threading.Event().wait()
"""


def _issue(e: couponcore.Engine, campaign_id: int, tag: str) -> list[str]:
    """ENTRIES grant-log entries of USERS_PER_ENTRY grants each; the users told ISSUED."""
    told: list[str] = []
    for k in range(ENTRIES):
        users = [f"{tag}-{k}-{i}" for i in range(USERS_PER_ENTRY)]
        results = e.issue_many(campaign_id, users)
        told += [u for u, r in zip(users, results) if r.issued]
    assert len(told) == ENTRIES * USERS_PER_ENTRY
    return told


@contextmanager
def _coupons_locked() -> Iterator[Any]:
    """Holds SHARE on the coupons table: inserts wait, reads go on. Yields the connection."""
    import psycopg

    conn = psycopg.connect(env_url("COUPONCORE_TEST_POSTGRES_URL"))
    try:
        conn.execute("LOCK TABLE coupons IN SHARE MODE")
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _rows(campaign_id: int) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(env_url("COUPONCORE_TEST_POSTGRES_URL")) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM coupons WHERE campaign_id = %s", (campaign_id,)
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def _start_victim(kind: str, kw: dict[str, str]) -> subprocess.Popen[str]:
    if kind == "engine":
        args = [sys.executable, "-c", ENGINE_VICTIM, json.dumps(kw)]
    else:
        args = [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"]]
        args += ["--key-prefix", kw["key_prefix"], "--threads", "1", "--report-s", "0", "--no-migrate"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _reap(proc: subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    if proc.stderr is not None and not proc.stderr.closed:
        proc.communicate()  # reads and closes the pipe
    proc.wait()


def _wait_until(what: str, cond: Any, timeout_s: float) -> float:
    """Polls cond() every 20 ms; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout_s, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - t0


def _victim_holds_everything(e: couponcore.Engine, campaign_id: int) -> list[couponcore.WriterInfo]:
    """Waits until one live consumer other than e's holds all the campaign's entries."""

    def holds() -> bool:
        b = [x for x in e.log_backlog() if x.campaign_id == campaign_id]
        return bool(b) and b[0].pending == ENTRIES and b[0].oldest_unread_age_ms == 0

    _wait_until("the victim to read every entry", holds, 60)
    holders = [w for w in e.writers() if w.pending > 0]
    assert len(holders) == 1 and holders[0].pending == ENTRIES and holders[0].alive, holders
    return holders


@pytest.mark.parametrize("victim", ["engine", "worker"])
def test_sigkilled_writer_is_taken_over_by_heartbeat(victim: str) -> None:
    """Two survivor engines (two writer threads each) race for the dead consumer's entries: each
    entry is taken over once, and every grant told ISSUED is in PostgreSQL once."""
    kw = production_kwargs()
    with couponcore.open(**kw, writer_threads=0) as web:  # issues; writes nothing
        c = web.campaigns.create(f"liveness-{victim}", quantity=ENTRIES * USERS_PER_ENTRY)
        told = _issue(web, c.id, victim)
        proc = None
        survivors: list[couponcore.Engine] = []
        try:
            with _coupons_locked():
                proc = _start_victim(victim, kw)
                [held] = _victim_holds_everything(web, c.id)
                # The survivors start once the victim holds everything: nothing is left to read.
                for _ in range(2):
                    survivors.append(couponcore.open(**kw, writer_threads=2, writer_claim_idle_ms=FALLBACK_IDLE_MS))
                assert _rows(c.id) == (0, 0)
                proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                _reap(proc)
            # The lock is gone with the victim: its server backend, waiting on it, finds its client
            # gone and rolls back. Only a takeover can write the grants now.

            def claimed() -> int:
                return sum(int(s.counters()["writer_claimed"]) for s in survivors)

            claim_s = _wait_until("the takeover", lambda: claimed() >= ENTRIES, 60)
            rows_s = _wait_until("the rows", lambda: _rows(c.id)[0] >= len(told), 60)
            print(f"\n{victim} victim SIGKILLed: claimed after {claim_s:.2f} s, in PostgreSQL {rows_s:.2f} s later")
            assert time.monotonic() - killed < FALLBACK_IDLE_MS / 1000 / 2  # the heartbeat, not the idle claim
            assert claimed() == ENTRIES  # each entry taken over once, whoever won the race
            assert _rows(c.id) == (len(told), len(told))
            assert set(_users(c.id)) == set(told)  # every acknowledged grant, once
            # The dead consumer leaves the group and the registry once it holds nothing.
            _wait_until(
                "the dead consumer to be reaped",
                lambda: held.consumer not in {w.consumer for w in web.writers()},
                15,
            )
            assert all(w.alive for w in web.writers())
            assert web.reconcile(c.id)["consistent"]
        finally:
            _reap(proc)
            for s in survivors:
                s.close()


def _users(campaign_id: int) -> list[str]:
    import psycopg

    with psycopg.connect(env_url("COUPONCORE_TEST_POSTGRES_URL")) as conn:
        return [r[0] for r in conn.execute("SELECT user_id FROM coupons WHERE campaign_id = %s", (campaign_id,))]


def test_slow_but_alive_writer_is_not_claimed_from() -> None:
    """A writer stuck on PostgreSQL for longer than dead_after still beats: nobody takes its
    entries; it writes them itself once the database lets it."""
    kw = production_kwargs()
    with couponcore.open(**kw, writer_threads=0) as web:
        c = web.campaigns.create("liveness-slow", quantity=ENTRIES * USERS_PER_ENTRY)
        told = _issue(web, c.id, "slow")
        proc = None
        other = None
        try:
            with _coupons_locked():
                proc = _start_victim("engine", kw)
                [held] = _victim_holds_everything(web, c.id)
                other = couponcore.open(**kw, writer_threads=1, writer_claim_idle_ms=FALLBACK_IDLE_MS)
                time.sleep(2 * 3.0)  # twice writer_dead_after_ms, the batch still blocked
                assert other.counters()["writer_claimed"] == 0
                [still] = [w for w in web.writers() if w.consumer == held.consumer]
                assert still.alive and still.pending == ENTRIES and still.last_beat_age_ms is not None
                assert still.last_beat_age_ms < 3000
            _wait_until("the slow writer's own commit", lambda: _rows(c.id)[0] >= len(told), 60)
            assert other.counters()["writer_claimed"] == 0
            assert _rows(c.id) == (len(told), len(told))
        finally:
            _reap(proc)
            if other is not None:
                other.close()


def test_healthz_is_degraded_without_a_live_writer() -> None:
    import asyncio

    import httpx
    from couponcore.fastapi import create_app

    def healthz(e: couponcore.Engine) -> tuple[int, dict[str, Any]]:
        async def get() -> httpx.Response:
            transport = httpx.ASGITransport(app=create_app(e))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get("/healthz")

        r = asyncio.run(get())
        return r.status_code, r.json()

    kw = production_kwargs()
    with couponcore.open(**kw, writer_threads=0) as web:
        status, body = healthz(web)
        assert status == 200  # degraded, not failing: this process still answers issue requests
        assert body["status"] == "degraded" and body["reasons"][0].startswith("no live grant writer"), body
        assert "couponcore_writers_alive 0" in web.metrics_text()
        with couponcore.open(**kw, writer_threads=2):
            assert healthz(web) == (200, {"status": "ok", "engine": "production"})
            alive = [w for w in web.writers() if w.alive]
            assert len(alive) == 2 and all(w.last_beat_age_ms is not None for w in alive)
            assert "couponcore_writers_alive 2" in web.metrics_text()
        # A clean close retires its consumers at once: degraded again, no dead entries left.
        assert web.writers() == []
        assert healthz(web)[1]["status"] == "degraded"


def test_liveness_options_are_checked(db_path: str) -> None:
    kw = production_kwargs()
    for bad in (
        {"writer_heartbeat_interval_ms": 5},
        {"writer_heartbeat_interval_ms": 1000, "writer_dead_after_ms": 2999},
        {"writer_dead_after_ms": 3_600_001},
    ):
        with pytest.raises(couponcore.InvalidArgument, match="heartbeat_interval_ms|dead_after_ms"):
            couponcore.open(**kw, **bad)  # type: ignore[arg-type]
    with couponcore.open(db_path) as e:
        assert e.writers() == []
        from couponcore._health import health

        assert health(e) == {"status": "ok", "engine": "embedded"}


def test_oldest_unread_age_counts_entries_no_writer_read() -> None:
    kw = production_kwargs()
    with couponcore.open(**kw, writer_threads=0) as web:
        c = web.campaigns.create("unread", quantity=10)
        web.issue(c.id, "u1")
        time.sleep(0.3)
        [b] = [x for x in web.log_backlog() if x.campaign_id == c.id]
        assert b.entries == 1 and b.pending == 0 and b.oldest_unread_age_ms >= 250
        assert f'couponcore_log_oldest_unread_seconds{{campaign="{c.id}"}}' in web.metrics_text()
        with couponcore.open(**kw, writer_threads=1) as writer:
            assert writer.drain(30)
        [b] = [x for x in web.log_backlog() if x.campaign_id == c.id]
        assert b.oldest_unread_age_ms == 0 and b.entries == 0


def test_racing_survivors_take_each_entry_once_and_never_beaten_consumers_wait_for_the_fallback() -> None:
    """A consumer dead by heartbeat (a registry beat 60 s old) and one that never beat (an older
    version) hold entries; three engines start at once and race for them."""
    import concurrent.futures

    import redis

    kw = production_kwargs()
    prefix = kw["key_prefix"]
    r = redis.Redis.from_url(kw["redis"])
    with couponcore.open(**kw, writer_threads=0) as web:
        c = web.campaigns.create("race", quantity=ENTRIES * USERS_PER_ENTRY)
        told = _issue(web, c.id, "race")
        stream = f"{prefix}{{c{c.id}}}:g"
        half = ENTRIES // 2
        r.xreadgroup("writers", "ghost", {stream: ">"}, count=half)
        r.xreadgroup("writers", "old-version", {stream: ">"}, count=ENTRIES - half)
        t = r.time()
        r.hset(f"{prefix}writers", "ghost", str(t[0] * 1000 + t[1] // 1000 - 60_000))
        time.sleep(1.2)  # idle beyond the takeover's min-idle (dead_after - 2 * interval = 1 s)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            survivors = list(
                pool.map(
                    lambda _: couponcore.open(
                        **kw, writer_threads=2, writer_claim_idle_ms=FALLBACK_IDLE_MS, close_drain_timeout_ms=0
                    ),
                    range(3),
                )
            )
        try:
            took = _wait_until("the takeover", lambda: _rows(c.id)[0] >= half * USERS_PER_ENTRY, 30)
            reaped = _wait_until("the ghost's reaping", lambda: "ghost" not in {w.consumer for w in web.writers()}, 15)
            print(f"\nghost taken over in {took:.2f} s, reaped {reaped:.2f} s later")
            assert sum(int(s.counters()["writer_claimed"]) for s in survivors) == half  # once each
            assert _rows(c.id) == (half * USERS_PER_ENTRY,) * 2
            # The consumer that never beat keeps its entries until writer_claim_idle_ms.
            [old] = [w for w in web.writers() if w.consumer == "old-version"]
            assert old.last_beat_age_ms is None and not old.alive and old.pending == ENTRIES - half
            assert r.hget(f"{prefix}writers", "ghost") is None
            consumers = {g["name"].decode() for g in r.xinfo_consumers(stream, "writers")}
            assert "old-version" in consumers and "ghost" not in consumers
        finally:
            for s in survivors:
                s.close()
        assert len(told) == ENTRIES * USERS_PER_ENTRY
