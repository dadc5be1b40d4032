"""The FastAPI service: httpx against the ASGI app on both deployments, and once against a
real uvicorn process on loopback (`couponcore serve`)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any, Optional

import couponcore
import httpx
from couponcore.fastapi import create_app


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def client(engine: couponcore.Engine) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine)), base_url="http://test")


def test_flow_campaign_issue_use_cancel_points(engine: couponcore.Engine) -> None:
    key = engine.partners.create("acme").api_key
    H = {"X-API-KEY": key}

    async def main() -> None:
        async with client(engine) as c:
            r = await c.post(
                "/campaigns",
                json={
                    "name": "drop",
                    "quantity": 2,
                    "discount_kind": "fixed",
                    "discount_value": 500,
                    "min_order_amount": 1000,
                },
                headers=H,
            )
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            a = (await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u1", "request_id": "p1"}, headers=H)).json()
            assert a["status"] == "ISSUED" and a["seq"] == 1
            again = (
                await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u1", "request_id": "p1"}, headers=H)
            ).json()
            assert again == a
            assert (await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u2"}, headers=H)).json()["seq"] == 2
            assert (await c.post(f"/campaigns/{cid}/issue", json={"user_id": "u3"}, headers=H)).json()[
                "status"
            ] == "SOLD_OUT"
            assert engine.drain(30)
            coupon = a["coupon_id"]
            got = (await c.get(f"/coupons/{coupon}", headers=H)).json()
            assert got["state"] == "issued" and got["user_id"] == "u1"
            use = await c.post(
                f"/coupons/{coupon}/use", json={"user_id": "u1", "order_id": "o1", "order_amount": 3000}, headers=H
            )
            assert use.status_code == 200, use.text
            assert use.json()["discount_amount"] == 500 and use.json()["payable_amount"] == 2500
            twice = await c.post(
                f"/coupons/{coupon}/use", json={"user_id": "u1", "order_id": "o2", "order_amount": 3000}, headers=H
            )
            assert twice.status_code == 409 and twice.json()["error"]["type"] == "Conflict"
            cancel = await c.post(f"/coupons/{coupon}/cancel", json={"order_id": "o1"}, headers=H)
            assert cancel.json()["state"] == "issued"
            page = (await c.get("/users/u1/coupons", params={"state": "issued"}, headers=H)).json()
            assert [x["id"] for x in page["items"]] == [coupon]
            counts = (await c.get(f"/campaigns/{cid}/counts", headers=H)).json()
            assert counts["total"] == 2
            e = await c.post("/users/u1/points/earn", json={"amount": 100}, headers={**H, "Idempotency-Key": "e1"})
            assert e.status_code == 200 and e.json()["balance_after"] == 100
            u = await c.post(
                "/users/u1/points/use", json={"amount": 30, "order_id": "o1"}, headers={**H, "Idempotency-Key": "u1"}
            )
            assert u.json()["balance_after"] == 70
            broke = await c.post("/users/u1/points/use", json={"amount": 1000}, headers={**H, "Idempotency-Key": "u2"})
            assert broke.status_code == 409 and broke.json()["error"]["type"] == "InsufficientFunds"
            no_key = await c.post("/users/u1/points/use", json={"amount": 1}, headers=H)
            assert no_key.status_code == 422
            assert (await c.get("/users/u1/points", headers=H)).json()["total"] == 70
            hist = (await c.get("/users/u1/points/history", headers=H)).json()
            assert [x["kind"] for x in hist["entries"]] == ["use", "earn"]

    run(main())


def test_every_partner_route_is_401_without_a_good_key(engine: couponcore.Engine) -> None:
    app = create_app(engine)
    schema = app.openapi()
    revoked = engine.partners.create("gone")
    engine.partners.revoke(revoked.partner)

    async def main() -> None:
        async with client(engine) as c:
            for path, ops in schema["paths"].items():
                if path in ("/healthz", "/metrics"):
                    continue
                url = re.sub(r"\{[^}]+\}", "1", path)
                for method in ops:
                    for headers in (
                        {},
                        {"X-API-KEY": "cc_live_not-a-real-key"},
                        {"X-API-KEY": "garbage"},
                        {"X-API-KEY": revoked.api_key},
                    ):
                        r = await c.request(method.upper(), url, json={}, headers=headers)
                        assert r.status_code == 401, (method, path, headers, r.text)
                        assert r.json()["error"]["type"] == "Unauthenticated"
            assert (await c.get("/healthz")).status_code == 200
            assert "couponcore_issue_requests_total" in (await c.get("/metrics")).text

    run(main())


def test_tenant_isolation_is_404(engine: couponcore.Engine) -> None:
    a = engine.partners.create("a").api_key
    b = engine.partners.create("b").api_key

    async def main() -> None:
        async with client(engine) as c:
            cid = (await c.post("/campaigns", json={"name": "a's", "quantity": 5}, headers={"X-API-KEY": a})).json()[
                "id"
            ]
            coupon = (await c.post(f"/campaigns/{cid}/issue", json={"user_id": "x"}, headers={"X-API-KEY": a})).json()[
                "coupon_id"
            ]
            assert engine.drain(30)
            B = {"X-API-KEY": b}
            for method, url, body in [
                ("GET", f"/campaigns/{cid}", None),
                ("POST", f"/campaigns/{cid}/issue", {"user_id": "y"}),
                ("POST", f"/campaigns/{cid}/pause", None),
                ("GET", f"/campaigns/{cid}/counts", None),
                ("GET", f"/coupons/{coupon}", None),
                ("POST", f"/coupons/{coupon}/use", {"user_id": "x", "order_id": "o", "order_amount": 100}),
                ("POST", f"/coupons/{coupon}/cancel", {"order_id": "o"}),
            ]:
                r = await c.request(method, url, json=body, headers=B)
                assert r.status_code == 404, (method, url, r.text)
            assert (await c.get("/campaigns", headers=B)).json() == []
            assert (await c.get("/users/x/coupons", headers=B)).json()["items"] == []

    run(main())


def test_bad_input_is_422_with_the_error_shape(engine: couponcore.Engine) -> None:
    key = engine.partners.create("v").api_key
    H = {"X-API-KEY": key}

    async def main() -> None:
        async with client(engine) as c:
            for body in (
                {"name": "x", "quantity": 0},
                {"name": "", "quantity": 1},
                {"quantity": 5},
                {"name": "x", "quantity": "many"},
                {"name": "x", "quantity": 5, "discount_kind": "bogus"},
            ):
                r = await c.post("/campaigns", json=body, headers=H)
                assert r.status_code == 422, body
                assert r.json()["error"]["type"] == "InvalidArgument"
            cid = (await c.post("/campaigns", json={"name": "ok", "quantity": 5}, headers=H)).json()["id"]
            r = await c.post(f"/campaigns/{cid}/issue", json={"user_id": "a}{b"}, headers=H)
            assert r.status_code == 422
            assert (await c.get("/campaigns/999999999", headers=H)).status_code == 404

    run(main())


def test_control_characters_out_of_range_numbers_and_refused_transfers_change_nothing(
    engine: couponcore.Engine,
) -> None:
    partner = engine.partners.create("hardening")
    H = {"X-API-KEY": partner.api_key}
    points = engine.partner(partner.partner).points

    async def main() -> None:
        async with client(engine) as c:
            for name in ("a\u202eb", "line\nbreak", "nul\u0000", "zw\u200bsp"):
                r = await c.post("/campaigns", json={"name": name, "quantity": 5}, headers=H)
                assert r.status_code == 422, (name, r.text)
                assert r.json()["error"]["type"] == "InvalidArgument"
                r = await c.post(
                    "/users/u1/points/earn", json={"amount": 5, "reason": name, "idempotency_key": "e1"}, headers=H
                )
                assert r.status_code == 422, (name, r.text)
            assert (await c.get("/campaigns", headers=H)).json() == []
            # expires_in_days of 1e400 parses as inf: 422, not a 500.
            r = await c.post(
                "/users/u1/points/earn",
                content=b'{"amount": 5, "expires_in_days": 1e400, "idempotency_key": "e2"}',
                headers={**H, "content-type": "application/json"},
            )
            assert r.status_code == 422, r.text
            assert (await c.get("/users/u1/points", headers=H)).status_code == 404
            assert (
                await c.post("/users/u1/points/earn", json={"amount": 5, "idempotency_key": "e3"}, headers=H)
            ).status_code == 200
            # A refused transfer does not create the recipient's wallet.
            r = await c.post(
                "/users/u1/points/transfer", json={"to_user_id": "u2", "amount": 50, "idempotency_key": "t1"}, headers=H
            )
            assert r.status_code == 409 and r.json()["error"]["type"] == "InsufficientFunds", r.text
            assert (await c.get("/users/u2/points", headers=H)).status_code == 404

    run(main())
    assert engine.points.audit(partner.partner.id)["wallets"] == 1
    assert points.balance("u1").total == 5


def test_issue_fast_path_answers_exactly_like_the_documented_route(engine: couponcore.Engine, monkeypatch: Any) -> None:
    """create_router(fast_issue=True) serves POST /campaigns/{id}/issue without FastAPI's
    per-request machinery; every answer (status, body, headers that matter) must be the one the
    FastAPI route gives, on twin campaigns in the same state, and well-formed requests must
    really take the fast path."""
    import couponcore.fastapi as cf

    parsed: list[bytes] = []
    real_parse = cf._issue_body

    def counting_parse(body: bytes) -> Any:
        parsed.append(body)
        return real_parse(body)

    monkeypatch.setattr(cf, "_issue_body", counting_parse)
    key = engine.partners.create("twins").api_key
    other = engine.partners.create("other").api_key
    scope = engine.partner(engine.authenticate(key))
    J = {"content-type": "application/json"}
    H = {"X-API-KEY": key, **J}

    def requests(cid: int) -> list[tuple[str, str, dict[str, str], bytes]]:
        ok = b'{"user_id": "ann"}'
        return [
            ("first", f"/campaigns/{cid}/issue", H, ok),
            ("again", f"/campaigns/{cid}/issue", H, ok),
            ("request id", f"/campaigns/{cid}/issue", H, b'{"user_id": "bob", "request_id": "r-1"}'),
            ("same request id", f"/campaigns/{cid}/issue", H, b'{"user_id": "bob", "request_id": "r-1"}'),
            ("idempotency header", f"/campaigns/{cid}/issue", {**H, "Idempotency-Key": "k-1"}, b'{"user_id": "cy"}'),
            ("extra field", f"/campaigns/{cid}/issue", H, b'{"user_id": "dee", "note": 1}'),
            ("sold out", f"/campaigns/{cid}/issue", H, b'{"user_id": "eve"}'),
            ("no key", f"/campaigns/{cid}/issue", J, ok),
            ("bad key", f"/campaigns/{cid}/issue", {"X-API-KEY": "cc_live_nope", **J}, ok),
            ("other partner", f"/campaigns/{cid}/issue", {"X-API-KEY": other, **J}, ok),
            ("int user", f"/campaigns/{cid}/issue", H, b'{"user_id": 5}'),
            ("empty user", f"/campaigns/{cid}/issue", H, b'{"user_id": ""}'),
            ("long user", f"/campaigns/{cid}/issue", H, b'{"user_id": "' + b"u" * 129 + b'"}'),
            ("bad user", f"/campaigns/{cid}/issue", H, b'{"user_id": "a b"}'),
            ("surrogate", f"/campaigns/{cid}/issue", H, b'{"user_id": "\\ud800"}'),
            ("bad request id", f"/campaigns/{cid}/issue", H, b'{"user_id": "fay", "request_id": 7}'),
            ("not json", f"/campaigns/{cid}/issue", H, b"{"),
            ("a list", f"/campaigns/{cid}/issue", H, b"[]"),
            ("form", f"/campaigns/{cid}/issue", {"X-API-KEY": key, "content-type": "text/plain"}, b"user_id=x"),
            ("unknown campaign", "/campaigns/999999999/issue", H, b'{"user_id": "gus"}'),
            ("bad path", "/campaigns/abc/issue", H, b'{"user_id": "gus"}'),
        ]

    async def answers(fast: bool, cid: int) -> list[tuple[str, int, Any, Optional[str]]]:
        app = create_app(engine, fast_issue=fast)
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            for name, url, headers, body in requests(cid):
                r = await c.post(url, headers=headers, content=body)
                out.append((name, r.status_code, r.json(), r.headers.get("content-type")))
        return out

    fast_campaign = scope.campaigns.create("fast", quantity=4).id
    slow_campaign = scope.campaigns.create("slow", quantity=4).id
    fast = run(answers(True, fast_campaign))
    fast_parsed = len(parsed)
    slow = run(answers(False, slow_campaign))
    assert len(parsed) == fast_parsed, "the documented route must not use the fast path"

    def same_shape(a: Any, cid: int) -> str:  # coupon ids and messages name the campaign
        if isinstance(a, dict) and a.get("coupon_id") is not None:
            a = {**a, "coupon_id": a["coupon_id"] - (cid << 32)}
        return re.sub(rf"campaign {cid}\b", "campaign CID", json.dumps(a))  # not "campaign 999..." for cid 9

    for f, s_ in zip(fast, slow):
        assert (f[0], f[1], same_shape(f[2], fast_campaign), f[3]) == (
            s_[0],
            s_[1],
            same_shape(s_[2], slow_campaign),
            s_[3],
        )
    by_name = {a[0]: a for a in fast}
    first = {"status": "ISSUED", "seq": 1, "coupon_id": (fast_campaign << 32) | 1, "retry_after_ms": None}
    assert by_name["first"][1:3] == (200, first)
    assert by_name["same request id"][2] == by_name["request id"][2]
    assert by_name["sold out"][2]["status"] == "SOLD_OUT"
    assert [
        by_name[n][1] for n in ("no key", "bad key", "other partner", "int user", "not json", "form", "surrogate")
    ] == [
        401,
        401,
        404,
        422,
        422,
        422,
        422,
    ]
    # Every well-formed JSON body went through the fast parser (the rest were handed on).
    assert fast_parsed >= 15


def test_issue_fast_path_matches_the_documented_route_on_random_requests(engine: couponcore.Engine) -> None:
    """300 random requests (ids from the whole alphabet and beyond, unicode, quotes, lengths
    around the limits, wrong types, extra fields, broken JSON, other content types, keys and
    idempotency headers) sent in the same order to twin campaigns, one app with the fast path
    and one without: every status and body must be the same."""
    import random

    rng = random.Random(20261122)
    key = engine.partners.create("fuzz").api_key
    scope = engine.partner(engine.authenticate(key))
    alphabet = "abcXYZ019-_.:@+=/ }{\"'\u00e9\u4e2d\n\t\ud800"

    def text(n_max: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n_max)))

    def value() -> Any:
        return rng.choice(
            [
                lambda: text(12),
                lambda: "u" * rng.choice([1, 127, 128, 129, 200]),
                lambda: rng.randint(-5, 5),
                lambda: None,
                lambda: [text(3)],
                lambda: {"x": 1},
                lambda: True,
                lambda: 1.5,
            ]
        )()

    def request() -> tuple[dict[str, str], bytes]:
        headers = {"content-type": rng.choice(["application/json", "application/json; charset=utf-8", "text/plain"])}
        if rng.random() < 0.9:
            headers["X-API-KEY"] = key if rng.random() < 0.9 else "cc_live_" + "".join(rng.choices("abc012", k=8))
        if rng.random() < 0.2:
            headers["Idempotency-Key"] = rng.choice(["k1", "k2", "bad key", "k" * 129])
        shape = rng.random()
        if shape < 0.1:
            return headers, text(20).encode("utf-8", "surrogatepass")
        if shape < 0.15:
            return headers, json.dumps([value()]).encode()
        body: dict[str, Any] = {}
        if rng.random() < 0.9:
            body["user_id"] = rng.choice([f"user-{rng.randint(1, 40)}", value()])
        if rng.random() < 0.4:
            body["request_id"] = rng.choice([f"r-{rng.randint(1, 5)}", value()])
        if rng.random() < 0.2:
            body[text(5)] = value()
        return headers, json.dumps(body).encode()

    plan = [request() for _ in range(300)]

    async def answers(fast: bool, cid: int) -> list[tuple[int, str]]:
        app = create_app(engine, fast_issue=fast)
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            for headers, body in plan:
                r = await c.post(f"/campaigns/{cid}/issue", headers=headers, content=body)
                doc = r.json()
                if isinstance(doc, dict) and doc.get("coupon_id") is not None:
                    doc["coupon_id"] -= cid << 32
                out.append((r.status_code, json.dumps(doc).replace(f"campaign {cid}", "campaign CID")))
        return out

    fast_campaign = scope.campaigns.create("fuzz-fast", quantity=25).id
    slow_campaign = scope.campaigns.create("fuzz-slow", quantity=25).id
    fast, slow = run(answers(True, fast_campaign)), run(answers(False, slow_campaign))
    for i, (f, s_) in enumerate(zip(fast, slow)):
        assert f == s_, (i, plan[i], f, s_)
    statuses = {f[0] for f in fast}
    assert {200, 401, 422} <= statuses, statuses  # the plan reached the answers that matter
    assert engine.drain(30)
    assert scope.stats(fast_campaign).rows == scope.stats(slow_campaign).rows > 0


def test_openapi_document_is_meaningful(engine: couponcore.Engine) -> None:
    schema = create_app(engine).openapi()
    paths = schema["paths"]
    for p in (
        "/campaigns",
        "/campaigns/{campaign_id}/issue",
        "/coupons/{coupon_id}",
        "/coupons/{coupon_id}/use",
        "/coupons/{coupon_id}/cancel",
        "/users/{user_id}/coupons",
        "/users/{user_id}/points",
        "/users/{user_id}/points/use",
    ):
        assert p in paths, p
    issue = paths["/campaigns/{campaign_id}/issue"]["post"]
    assert "IssueOut" in str(issue["responses"]["200"]) and "401" in issue["responses"]


def test_real_uvicorn_process_on_loopback(tmp_path: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "couponcore",
            "serve",
            "--port",
            str(port),
            "--path",
            str(tmp_path / "s.db"),
            "--create-partner",
            "shop",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        key = line.strip().rsplit(" ", 1)[-1]
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        H = {"X-API-KEY": key}
        cid = httpx.post(f"http://127.0.0.1:{port}/campaigns", json={"name": "live", "quantity": 3}, headers=H).json()[
            "id"
        ]

        async def burst() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=H) as c:
                rs = await asyncio.gather(
                    *(c.post(f"/campaigns/{cid}/issue", json={"user_id": f"u{i}"}) for i in range(20))
                )
                return [r.json() for r in rs]

        answers = run(burst())
        assert sorted(a["seq"] for a in answers if a["status"] == "ISSUED") == [1, 2, 3]
        assert sum(a["status"] == "SOLD_OUT" for a in answers) == 17
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit status -15).
    assert proc.returncode in (0, -15)
