"""Rate limits (docs/rate-limits.md) through the Python API and the HTTP faces, on both
deployments: RATE_LIMITED with retry_after_ms from the gate, at most L per user per window under
many threads, out-of-range limits refused with nothing written, FastAPI and Django answering 429
with Retry-After, and the per-client-address limit of the HTTP layer (shared in Redis, its
concurrent counts batched into shared Lua calls, a batch failing as one when Redis dies)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import couponcore
import httpx
import pytest
from conftest import production_kwargs
from couponcore.fastapi import create_app

REPO = Path(__file__).resolve().parents[2]


def align(window_ms: int, margin_ms: int = 5) -> None:
    """Sleep until just after a window boundary, so a few quick calls share one window."""
    now_ms = time.time() * 1000
    time.sleep((window_ms - now_ms % window_ms + margin_ms) / 1000)


def test_many_threads_get_at_most_the_limit_per_user_per_window(engine: couponcore.Engine) -> None:
    limit, window = 4, 300
    c = engine.campaigns.create(
        "rl", quantity=1_000_000, per_user_limit=1000, rate_limit_per_user=limit, rate_window_ms=window
    )
    assert (c.rate_limit_per_user, c.rate_limit_per_partner, c.rate_window_ms) == (limit, 0, window)
    users = ["ann", "bob", "cid"]
    answers: list[tuple[str, Any, float, float]] = []
    lock = threading.Lock()
    until = time.time() + 1.2

    def hammer(t: int) -> None:
        mine = []
        i = t
        while time.time() < until:
            left = window - time.time() * 1000 % window
            if left < 40:  # quiet at a window's end: a call straddling a boundary counts nowhere
                time.sleep(left / 1000)
            user = users[i % len(users)]
            i += 1
            sent = time.time() * 1000
            r = engine.issue(c.id, user)
            mine.append((user, r, sent, time.time() * 1000))
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    admitted: Counter[tuple[str, int]] = Counter()
    limited = 0
    for user, r, sent, answered in answers:
        if r.status == couponcore.Status.RATE_LIMITED:
            limited += 1
            assert 0 < r.retry_after_ms <= window and r.seq is None
            continue
        assert r.status == couponcore.Status.ISSUED and r.retry_after_ms is None
        if int(sent // window) == int(answered // window):  # decided inside one known window
            admitted[(user, int(sent // window))] += 1
    assert limited > 0
    assert max(admitted.values()) <= limit, admitted
    assert limit in admitted.values(), "no (user, window) reached the limit: an excess would go unseen"


def test_partner_limit_retry_and_changes(engine: couponcore.Engine) -> None:
    window = 1000
    c = engine.campaigns.create("rl", quantity=100, per_user_limit=100, rate_limit_per_partner=3, rate_window_ms=window)
    align(window)
    got = [engine.issue(c.id, f"u{i}", f"r{i}") for i in range(5)]
    assert [r.status for r in got] == ["ISSUED"] * 3 + ["RATE_LIMITED"] * 2
    assert got[3].retry_after_ms is not None and 0 < got[3].retry_after_ms <= window
    assert engine.issue(c.id, "u0", "r0") == got[0]  # remembered, not counted
    assert engine.issue(c.id, "u3", "r3").status == "RATE_LIMITED"  # not remembered: decided again
    changed = engine.campaigns.set_rate_limits(c.id, per_user=1, per_partner=0, window_ms=window)
    assert (changed.rate_limit_per_user, changed.rate_limit_per_partner) == (1, 0)
    assert engine.campaigns.get(c.id).rate_limit_per_user == 1
    align(window)
    assert engine.issue(c.id, "u3", "r3").status == "ISSUED"
    r = engine.issue(c.id, "u3", "r4")
    assert r.status == "RATE_LIMITED" and 0 < r.retry_after_ms <= window
    assert engine.counters()["by_status"]["RATE_LIMITED"] >= 3
    assert 'outcome="rate_limited"' in engine.metrics_text()


def test_out_of_range_limits_are_refused_and_nothing_is_written(engine: couponcore.Engine) -> None:
    before = len(engine.campaigns.list())
    bad: list[dict[str, int]] = [
        {"rate_limit_per_user": -1},
        {"rate_limit_per_user": 1_000_001},
        {"rate_limit_per_partner": -5},
        {"rate_limit_per_partner": 2**40},
        {"rate_window_ms": 9},
        {"rate_window_ms": 3_600_001},
        {"rate_limit_per_partner": 2, "shards": 4},
    ]
    for kwargs in bad:
        with pytest.raises(couponcore.InvalidArgument):
            engine.campaigns.create("rl", quantity=10, **kwargs)
    assert len(engine.campaigns.list()) == before
    c = engine.campaigns.create("rl", quantity=10, rate_limit_per_user=2, rate_window_ms=500)
    for args in [(-1, 0, 500), (0, 1_000_001, 500), (1, 0, 0), (1, 0, 2**33)]:
        with pytest.raises(couponcore.InvalidArgument):
            engine.campaigns.set_rate_limits(c.id, *args)
    got = engine.campaigns.get(c.id)
    assert (got.rate_limit_per_user, got.rate_limit_per_partner, got.rate_window_ms) == (2, 0, 500)


# ---- FastAPI --------------------------------------------------------------------------------


def _client(app: Any, address: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 1234)), base_url="http://t")


@pytest.mark.parametrize("fast_issue", [True, False])
def test_fastapi_rate_limited_is_429_with_retry_after(engine: couponcore.Engine, fast_issue: bool) -> None:
    key = engine.partners.create("acme").api_key
    H = {"X-API-KEY": key}
    app = create_app(engine, fast_issue=fast_issue)

    async def main() -> None:
        async with _client(app) as c:
            body = {"name": "d", "quantity": 10, "per_user_limit": 5, "rate_limit_per_user": 1, "rate_window_ms": 1000}
            r = await c.post("/campaigns", json=body, headers=H)
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            assert r.json()["rate_limit_per_user"] == 1 and r.json()["rate_window_ms"] == 1000
            await asyncio.to_thread(align, 1000)
            ok = await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u1"}, headers=H)
            assert ok.status_code == 200 and ok.json()["status"] == "ISSUED" and ok.json()["retry_after_ms"] is None
            over = await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u1"}, headers=H)
            assert over.status_code == 429, over.text
            j = over.json()
            assert j["status"] == "RATE_LIMITED" and 0 < j["retry_after_ms"] <= 1000
            assert over.headers["Retry-After"] == str(max(1, math.ceil(j["retry_after_ms"] / 1000)))
            # Update through HTTP; out of range is 422 and changes nothing.
            bad = await c.put(f"/campaigns/{cid}/rate-limits", json={"per_user": -1}, headers=H)
            assert bad.status_code == 422 and bad.json()["error"]["type"] == "InvalidArgument"
            assert (await c.get(f"/campaigns/{cid}", headers=H)).json()["rate_limit_per_user"] == 1
            put = await c.put(f"/campaigns/{cid}/rate-limits", json={"per_user": 0, "window_ms": 500}, headers=H)
            assert put.status_code == 200 and put.json()["rate_limit_per_user"] == 0
            again = await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u1"}, headers=H)
            assert again.status_code == 200 and again.json()["status"] == "ISSUED"
            spec = (await c.get("/openapi.json")).json()
            assert "429" in spec["paths"]["/campaigns/{campaign_id}/issue"]["post"]["responses"]

    asyncio.run(main())


@pytest.mark.parametrize("fast_issue", [True, False])
def test_fastapi_per_address_limit(embedded: couponcore.Engine, fast_issue: bool) -> None:
    key = embedded.partners.create("acme").api_key
    H = {"X-API-KEY": key}
    cid = embedded.partner(embedded.authenticate(key)).campaigns.create("d", quantity=100, per_user_limit=100).id
    app = create_app(embedded, fast_issue=fast_issue, address_rate_limit=2, address_rate_window_s=1.0)
    behind = create_app(
        embedded,
        fast_issue=fast_issue,
        address_rate_limit=1,
        address_rate_window_s=1.0,
        client_address_header="X-Forwarded-For",
    )

    async def main() -> None:
        await asyncio.to_thread(align, 1000)
        async with _client(app, "10.0.0.1") as one, _client(app, "10.0.0.2") as two:
            for _ in range(2):
                assert (await one.post(f"/campaigns/{cid}/issue", json={"user_id": "a"}, headers=H)).status_code == 200
            over = await one.post(f"/campaigns/{cid}/issue", json={"user_id": "b"}, headers=H)
            assert over.status_code == 429
            assert over.json()["error"]["type"] == "RateLimited"
            assert over.headers["Retry-After"] == "1"
            # Refused before the key is looked at; another address has its own budget.
            assert (await one.post(f"/campaigns/{cid}/issue", json={"user_id": "b"})).status_code == 429
            assert (await two.post(f"/campaigns/{cid}/issue", json={"user_id": "b"}, headers=H)).status_code == 200
        async with _client(behind, "192.168.0.9") as proxy:  # every client behind one proxy address
            xff = {**H, "X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
            assert (await proxy.post(f"/campaigns/{cid}/issue", json={"user_id": "c"}, headers=xff)).status_code == 200
            assert (await proxy.post(f"/campaigns/{cid}/issue", json={"user_id": "c"}, headers=xff)).status_code == 429
            other = {**H, "X-Forwarded-For": "6.6.6.6, 203.0.113.8"}  # the proxy's entry is the last one
            assert (
                await proxy.post(f"/campaigns/{cid}/issue", json={"user_id": "c"}, headers=other)
            ).status_code == 200

    asyncio.run(main())
    with pytest.raises(couponcore.InvalidArgument):
        create_app(embedded, address_rate_limit=-1)


@pytest.mark.parametrize("redis", ["redis", "cluster"])
def test_the_address_limit_is_shared_by_app_processes_on_one_redis(redis: str) -> None:
    """Three apps, each with its own production engine on one Redis and key prefix (three app
    processes), two threads pressing each from one client address: per window, the address gets
    at most L answers past the address limit in total, and exactly L in some window."""
    limit, window_ms = 5, 300
    where = production_kwargs()
    if redis == "cluster":
        if not os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER"):
            pytest.skip("COUPONCORE_TEST_REDIS_CLUSTER is not set")
        where["redis"] = os.environ["COUPONCORE_TEST_REDIS_CLUSTER"]
    engines = [couponcore.open(**where) for _ in range(3)]
    try:
        key = engines[0].partners.create("acme").api_key
        scope = engines[0].partner(engines[0].authenticate(key))
        cid = scope.campaigns.create("d", quantity=1_000_000, per_user_limit=1000).id  # no campaign rate limit
        apps = [
            create_app(e, address_rate_limit=limit, address_rate_window_s=window_ms / 1000, fast_issue=i != 1)
            for i, e in enumerate(engines)
        ]
        assert all(a.state.couponcore_engine.kind == "production" for a in apps)

        async def warm_up(app: Any) -> None:
            # FastAPI builds a route's matching context lazily at its first request, which is not
            # safe from two threads at once: one request per app first (from another address).
            async with _client(app, "10.0.0.250") as c:
                r = await c.post(f"/campaigns/{cid}/issue", json={"user_id": "warm"}, headers={"X-API-KEY": key})
                assert r.status_code == 200, r.text

        for app in apps:
            asyncio.run(warm_up(app))
        answers: list[tuple[int, float, float]] = []
        lock = threading.Lock()
        until = time.time() + 1.5

        def press(app: Any, t: int) -> None:
            async def main() -> list[tuple[int, float, float]]:
                mine = []
                async with _client(app, "10.0.0.7") as c:
                    i = 0
                    while time.time() < until:
                        left = window_ms - time.time() * 1000 % window_ms
                        if left < 40:  # quiet at a window's end: a call straddling a boundary counts nowhere
                            await asyncio.sleep(left / 1000)
                        sent = time.time() * 1000
                        r = await c.post(
                            f"/campaigns/{cid}/issue", json={"user_id": f"u{t}-{i}"}, headers={"X-API-KEY": key}
                        )
                        mine.append((r.status_code, sent, time.time() * 1000))
                        assert r.status_code in (200, 429), r.text
                        if r.status_code == 429:
                            assert r.json()["error"]["type"] == "RateLimited"
                            assert r.headers["Retry-After"] == "1"
                        i += 1
                return mine

            got = asyncio.run(main())
            with lock:
                answers.extend(got)

        threads = [
            threading.Thread(target=press, args=(app, 2 * n + k)) for n, app in enumerate(apps) for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        per_window: Counter[int] = Counter()
        for status, sent, answered in answers:
            if status == 200 and sent // window_ms == answered // window_ms:
                per_window[int(sent // window_ms)] += 1
        assert per_window, "nothing admitted"
        assert max(per_window.values()) <= limit, per_window
        assert limit in per_window.values(), per_window  # the test could see an excess
        assert sum(1 for a in answers if a[0] == 429) > 0
        # Another address has a budget of its own, on every app.
        for e in engines:
            assert e._core.count_address("10.0.0.8", 100, 60_000) == 0
    finally:
        for e in engines:
            e.close()


@pytest.mark.parametrize("redis", ["redis", "cluster"])
def test_concurrent_address_counts_share_lua_calls_and_keep_the_limit(redis: str) -> None:
    """Sixteen threads call count_address on a few addresses at once: concurrent calls share Lua
    calls (fewer calls than requests), yet per (address, window) at most L are admitted, exactly
    L in some window, and with a long window exactly L of an address's many requests in all.
    Out-of-range arguments are refused with nothing counted."""
    import redis as redis_py

    limit, window_ms, long_ms = 5, 200, 3_600_000
    where = production_kwargs()
    if redis == "cluster":
        if not os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER"):
            pytest.skip("COUPONCORE_TEST_REDIS_CLUSTER is not set")
        where["redis"] = os.environ["COUPONCORE_TEST_REDIS_CLUSTER"]
    e = couponcore.open(**where)
    try:
        before = e._core.counters()
        assert before["address_requests"] == before["address_calls"] == 0
        for bad in ((0, 1000), (1_000_001, 1000), (1, 9), (1, 3_600_001)):
            with pytest.raises(couponcore.InvalidArgument):
                e._core.count_address("10.0.0.1", *bad)
        with pytest.raises(couponcore.InvalidArgument):
            e._core.count_address("x" * 257, 1, 1000)
        assert e._core.counters()["address_requests"] == 0  # nothing counted
        addresses = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        answers: list[tuple[str, int, float, float]] = []
        long_answers: list[int] = []
        lock = threading.Lock()
        until = time.time() + 1.0
        start_hour = int(time.time() * 1000) // long_ms

        def hammer(t: int) -> None:
            mine, long_mine = [], []
            i = t
            while time.time() < until:
                left = window_ms - time.time() * 1000 % window_ms
                if left < 30:  # quiet at a window's end: a call straddling a boundary counts nowhere
                    time.sleep(left / 1000)
                address = addresses[i % len(addresses)]
                i += 1
                sent = time.time() * 1000
                ms = e._core.count_address(address, limit, window_ms)
                mine.append((address, ms, sent, time.time() * 1000))
                long_mine.append(e._core.count_address("10.0.0.9", limit, long_ms))
            with lock:
                answers.extend(mine)
                long_answers.extend(long_mine)

        threads = [threading.Thread(target=hammer, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        per_window: Counter[tuple[str, int]] = Counter()
        for address, ms, sent, answered in answers:
            assert ms is not None and 0 <= ms <= window_ms
            if ms == 0 and sent // window_ms == answered // window_ms:
                per_window[(address, int(sent // window_ms))] += 1
        assert per_window, "nothing admitted"
        assert max(per_window.values()) <= limit, per_window
        assert limit in per_window.values(), per_window  # the test could see an excess
        assert any(ms and ms > 0 for _, ms, _, _ in answers)
        if int(time.time() * 1000) // long_ms == start_hour:  # one long window throughout
            assert sum(1 for ms in long_answers if ms == 0) == limit
            assert all(ms is not None and 0 < ms <= long_ms for ms in long_answers if ms != 0)
        k = e._core.counters()
        assert k["address_requests"] == len(answers) + len(long_answers)
        assert 1 <= k["address_calls"] < k["address_requests"], k  # concurrent requests shared calls
        # The counts in Redis: the long window's hash holds exactly L for its address.
        if redis == "redis":
            r = redis_py.Redis.from_url(where["redis"])
            key = f"{where['key_prefix']}{{addr}}:{long_ms}"
            if r.hget(key, "*w") == str(start_hour).encode():
                assert int(r.hget(key, "a:10.0.0.9") or 0) == limit
    finally:
        e.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_batch_of_address_counts_all_get_unavailable_when_redis_dies(tmp_path: Path) -> None:
    """A private Redis (never the shared one) is held busy (DEBUG SLEEP) while sixteen threads
    call count_address, so their calls queue into batches; it is killed: every caller gets
    Unavailable, none an answer. Restarted on the same port, counting resumes."""
    import redis as redis_py

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    args += ["--enable-debug-command", "yes"]

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                if redis_py.Redis(port=port).ping():
                    return p
            except redis_py.ConnectionError:
                time.sleep(0.02)
        p.kill()
        raise AssertionError("the private redis-server did not start")

    server = start()
    where = production_kwargs()
    where["redis"] = f"redis://127.0.0.1:{port}/0"
    e = couponcore.open(**where)
    try:
        assert e._core.count_address("10.0.0.1", 5, 60_000) == 0

        def sleep_redis() -> None:
            with contextlib.suppress(redis_py.ConnectionError):  # killed in its sleep
                redis_py.Redis(port=port).execute_command("DEBUG", "SLEEP", "1")

        busy = threading.Thread(target=sleep_redis)
        busy.start()
        time.sleep(0.2)
        outcomes: list[object] = []
        lock = threading.Lock()

        def count() -> None:
            try:
                got: object = e._core.count_address("10.0.0.1", 5, 60_000)
            except couponcore.Unavailable:
                got = "unavailable"
            with lock:
                outcomes.append(got)

        threads = [threading.Thread(target=count) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        server.kill()
        server.wait()
        for t in threads:
            t.join()
        busy.join()
        assert outcomes == ["unavailable"] * 16, outcomes
        k = e._core.counters()
        assert k["address_calls"] < k["address_requests"] == 17, k  # the waiting callers shared calls
        server = start()
        deadline = time.time() + 10
        while True:  # the connection comes back after its backoff
            try:
                assert e._core.count_address("10.0.0.1", 5, 60_000) == 0
                break
            except couponcore.Unavailable:
                assert time.time() < deadline
                time.sleep(0.1)
    finally:
        e.close()
        server.kill()
        server.wait()


def test_the_address_count_is_in_process_on_the_embedded_engine(embedded: couponcore.Engine) -> None:
    from couponcore._web import AddressLimiter

    assert embedded._core.count_address("10.0.0.1", 1, 1000) is None
    limiter = AddressLimiter(2, 1.0, engine=embedded)
    assert not limiter.shared
    assert [limiter.refuse("a", now=5.0) for _ in range(3)] == [None, None, 1]
    for bad in ((0, 1000), (1_000_001, 1000), (1, 9), (1, 3_600_001)):
        with pytest.raises(couponcore.InvalidArgument):
            embedded._core.count_address("10.0.0.1", *bad)
    with pytest.raises(couponcore.InvalidArgument):
        embedded._core.count_address("x" * 257, 1, 1000)


# ---- Django ---------------------------------------------------------------------------------


@pytest.fixture(params=["embedded", "production"])
def django_settings(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    sys.path.insert(0, str(REPO / "examples" / "django_project"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    # The example settings read COUPONCORE_PATH once: if they load here first, not the working tree.
    os.environ.setdefault("COUPONCORE_PATH", str(tmp_path_factory.mktemp("django-shop") / "shop.db"))
    import django

    django.setup()
    from couponcore.django import close_engine

    if request.param == "embedded":
        conf: dict[str, Any] = {"PATH": str(tmp_path / "dj.db")}
    else:
        k = production_kwargs()
        conf = {"REDIS": k["redis"], "POSTGRES": k["postgres"], "KEY_PREFIX": k["key_prefix"]}
    close_engine()
    yield conf
    close_engine()


def test_django_rate_limited_and_per_address(django_settings: dict[str, Any]) -> None:
    from couponcore.django import get_engine
    from django.test import Client, override_settings

    conf = {**django_settings, "ADDRESS_RATE_LIMIT": 3, "ADDRESS_RATE_WINDOW_S": 1}
    with override_settings(COUPONCORE=conf):
        engine = get_engine()
        key = engine.partners.create("dj").api_key
        c = Client(HTTP_X_API_KEY=key)
        body = {"name": "d", "quantity": 10, "per_user_limit": 5, "rate_limit_per_user": 1, "rate_window_ms": 1000}
        r = c.post("/api/campaigns", data=json.dumps(body), content_type="application/json")
        assert r.status_code == 201, r.content
        cid = r.json()["id"]
        assert r.json()["rate_limit_per_user"] == 1
        align(1000)
        issue = f"/api/campaigns/{cid}/issue"
        ok = c.post(issue, data=json.dumps({"user_id": "u"}), content_type="application/json")
        assert ok.status_code == 200 and ok.json()["status"] == "ISSUED"
        over = c.post(issue, data=json.dumps({"user_id": "u"}), content_type="application/json")
        assert over.status_code == 429 and over.json()["status"] == "RATE_LIMITED"
        assert over["Retry-After"] == str(max(1, math.ceil(over.json()["retry_after_ms"] / 1000)))
        # The third request from this address passes the address limit; the fourth does not.
        third = c.post(issue, data=json.dumps({"user_id": "v"}), content_type="application/json")
        assert third.status_code == 200
        fourth = c.post(issue, data=json.dumps({"user_id": "w"}), content_type="application/json")
        assert fourth.status_code == 429 and fourth.json()["error"]["type"] == "RateLimited"
        assert fourth["Retry-After"] == "1"
        other = c.post(
            issue, data=json.dumps({"user_id": "w"}), content_type="application/json", REMOTE_ADDR="10.9.9.9"
        )
        assert other.status_code == 200, other.content
        # Update: out of range is 422, nothing written.
        bad = c.put(
            f"/api/campaigns/{cid}/rate-limits", data=json.dumps({"window_ms": 1}), content_type="application/json"
        )
        assert bad.status_code == 422
        assert engine.partner(engine.authenticate(key)).campaigns.get(cid).rate_window_ms == 1000
        put = c.put(
            f"/api/campaigns/{cid}/rate-limits", data=json.dumps({"per_partner": 7}), content_type="application/json"
        )
        assert put.status_code == 200 and put.json()["rate_limit_per_partner"] == 7
