"""The Django app, driven by Django's test client in the example project (examples/)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def django_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    sys.path.insert(0, str(REPO / "examples" / "django_project"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    os.environ["COUPONCORE_PATH"] = str(tmp_path_factory.mktemp("django") / "shop.db")
    import django

    django.setup()
    from couponcore.django import close_engine
    from django.test import Client

    yield Client()
    close_engine()


def test_django_views(django_client: object) -> None:
    from couponcore.django import get_engine
    from django.test import Client

    c: Client = django_client  # type: ignore[assignment]
    engine = get_engine()
    assert get_engine() is engine  # one engine per process
    key = engine.partners.create("django-shop").api_key
    other = engine.partners.create("other").api_key
    H = {"HTTP_X_API_KEY": key}
    assert c.get("/api/healthz").json()["status"] == "ok"
    assert c.post("/api/campaigns", data="{}", content_type="application/json").status_code == 401
    r = c.post("/api/campaigns", data=json.dumps({"name": "dj", "quantity": 2}), content_type="application/json", **H)
    assert r.status_code == 201, r.content
    cid = r.json()["id"]
    issued = c.post(
        f"/api/campaigns/{cid}/issue", data=json.dumps({"user_id": "u1"}), content_type="application/json", **H
    )
    assert issued.json()["status"] == "ISSUED"
    coupon = issued.json()["coupon_id"]
    assert c.get(f"/api/coupons/{coupon}", **H).json()["state"] == "issued"
    assert c.get(f"/api/coupons/{coupon}", HTTP_X_API_KEY=other).status_code == 404  # tenant isolation
    use = c.post(
        f"/api/coupons/{coupon}/use",
        data=json.dumps({"user_id": "u1", "order_id": "o", "order_amount": 100}),
        content_type="application/json",
        **H,
    )
    assert use.status_code == 200 and use.json()["order_id"] == "o"
    bad = c.post(
        f"/api/campaigns/{cid}/issue", data=json.dumps({"user_id": "x y"}), content_type="application/json", **H
    )
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "InvalidArgument"
    assert (
        c.post(f"/api/campaigns/{cid}/issue", data="not json", content_type="application/json", **H).status_code == 422
    )
    page = c.get("/api/users/u1/coupons", **H).json()
    assert [x["id"] for x in page["items"]] == [coupon]
    earn = c.post(
        "/api/users/u1/points/earn",
        data=json.dumps({"amount": 40}),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k1",
        **H,
    )
    assert earn.status_code == 200 and earn.json()["balance_after"] == 40
    assert c.get("/api/users/u1/points", **H).json()["total"] == 40
    assert "couponcore_issue_requests_total" in c.get("/api/metrics").content.decode()
    assert c.delete(f"/api/campaigns/{cid}", **H).status_code == 405


def test_management_command_migrate_needs_servers(django_client: object) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="embedded"):
        call_command("couponcore_migrate")


def test_django_checkout(django_client: object) -> None:
    """POST checkout and checkout/cancel: a coupon and points together, then both back."""
    from couponcore.django import get_engine
    from django.test import Client

    c: Client = django_client  # type: ignore[assignment]
    engine = get_engine()
    key = engine.partners.create("django-checkout").api_key
    H = {"HTTP_X_API_KEY": key}
    cid = c.post(
        "/api/campaigns",
        data=json.dumps({"name": "dj", "quantity": 2, "discount_kind": "fixed", "discount_value": 500}),
        content_type="application/json",
        **H,
    ).json()["id"]
    coupon = c.post(
        f"/api/campaigns/{cid}/issue", data=json.dumps({"user_id": "cu"}), content_type="application/json", **H
    ).json()["coupon_id"]
    c.post(
        "/api/users/cu/points/earn",
        data=json.dumps({"amount": 100, "idempotency_key": "dj-e"}),
        content_type="application/json",
        **H,
    )
    body = {
        "user_id": "cu",
        "order_id": "dj-o",
        "order_amount": 3000,
        "coupon_id": coupon,
        "points": 50,
        "idempotency_key": "dj-co",
    }
    r = c.post("/api/checkout", data=json.dumps(body), content_type="application/json", **H)
    assert r.status_code == 200, r.content
    assert r.json()["payable_amount"] == 2450 and r.json()["discount_amount"] == 500
    assert c.post("/api/checkout", data=json.dumps(body), content_type="application/json").status_code == 401
    r = c.post(
        "/api/checkout/cancel",
        data=json.dumps({"user_id": "cu", "checkout_key": "dj-co", "idempotency_key": "dj-c"}),
        content_type="application/json",
        **H,
    )
    assert r.status_code == 200, r.content
    assert r.json()["coupon_state"] == "issued" and r.json()["points_restored"] == 50
    # Checked out again, then cancelled by the order id.
    body["idempotency_key"] = "dj-co2"
    assert c.post("/api/checkout", data=json.dumps(body), content_type="application/json", **H).status_code == 200
    r = c.post(
        "/api/checkout/cancel",
        data=json.dumps({"user_id": "cu", "order_id": "dj-o", "idempotency_key": "dj-c2"}),
        content_type="application/json",
        **H,
    )
    assert r.status_code == 200, r.content
    assert r.json()["points_restored"] == 50 and r.json()["order_id"] == "dj-o"


def test_django_bad_text_numbers_and_refused_transfers_are_4xx_and_change_nothing(django_client: object) -> None:
    from couponcore.django import get_engine
    from django.test import Client

    c: Client = django_client  # type: ignore[assignment]
    engine = get_engine()
    partner = engine.partners.create("django-hardening")
    H = {"HTTP_X_API_KEY": partner.api_key}

    def post(path: str, body: object) -> object:
        raw = body if isinstance(body, str) else json.dumps(body)
        return c.post(path, data=raw, content_type="application/json", **H)

    for name in ("a\u202eb", "line\nbreak", "nul\u0000"):
        r = post("/api/campaigns", {"name": name, "quantity": 5})
        assert r.status_code == 422, r.content  # type: ignore[attr-defined]
        assert r.json()["error"]["type"] == "InvalidArgument"  # type: ignore[attr-defined]
        r = post("/api/users/du1/points/earn", {"amount": 5, "reason": name, "idempotency_key": "de1"})
        assert r.status_code == 422, r.content  # type: ignore[attr-defined]
    for raw in (
        '{"name": "t", "quantity": 5, "starts_at": 1e400}',
        '{"name": "t", "quantity": 5, "ends_at": NaN}',
        '{"name": "t", "quantity": 1e400}',
    ):
        r = post("/api/campaigns", raw)
        assert r.status_code == 422, r.content  # type: ignore[attr-defined]
    r = post("/api/users/du1/points/earn", '{"amount": 5, "expires_in_days": 1e400, "idempotency_key": "de2"}')
    assert r.status_code == 422, r.content  # type: ignore[attr-defined]
    assert engine.partner(partner.partner).campaigns.list() == []
    assert post("/api/users/du1/points/earn", {"amount": 5, "idempotency_key": "de3"}).status_code == 200  # type: ignore[attr-defined]
    r = post("/api/users/du1/points/transfer", {"to_user_id": "du2", "amount": 50, "idempotency_key": "dt1"})
    assert r.status_code == 409, r.content  # type: ignore[attr-defined]
    assert c.get("/api/users/du2/points", **H).status_code == 404
    assert engine.points.audit(partner.partner.id)["wallets"] == 1


def test_settings_options_reach_couponcore_open(tmp_path: Path) -> None:
    """COUPONCORE["OPTIONS"] is passed to couponcore.open(); a misspelt option fails the open."""
    import couponcore
    from conftest import production_kwargs
    from couponcore.django.engine import engine_kwargs

    path = str(tmp_path / "d.db")
    kw = engine_kwargs({"PATH": path, "OPTIONS": {"wallet_batch_ops_max": 2}})
    assert kw == {"path": path, "wallet_batch_ops_max": 2}
    with couponcore.open(**kw) as e:
        e.points.earn("u", 5, idempotency_key="k")
    servers = production_kwargs()
    kw = engine_kwargs({"REDIS": servers["redis"], "POSTGRES": servers["postgres"], "OPTIONS": {"answer_ttl_s": 60}})
    assert kw["answer_ttl_s"] == 60 and kw["redis"] == servers["redis"]
    with pytest.raises(couponcore.InvalidArgument, match="wallet_batch_opsmax"):
        couponcore.open(**engine_kwargs({"PATH": path, "OPTIONS": {"wallet_batch_opsmax": 2}}))
    with pytest.raises(ValueError, match="path"):
        engine_kwargs({"PATH": path, "OPTIONS": {"path": "other.db"}})
    with pytest.raises(TypeError):
        engine_kwargs({"PATH": path, "OPTIONS": [("wallet_batch_ops_max", 2)]})


def test_django_views_carry_the_traceparent_header(django_client: object) -> None:
    """A request's traceparent header: the server span is its child, the call's couponcore.issue
    span the server span's child, and the gate batch and the commit link to the call's span
    (docs/tracing.md)."""
    from couponcore.django import get_engine
    from django.test import Client
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    c: Client = django_client  # type: ignore[assignment]
    engine = get_engine()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if engine.tracing is not None:  # this test's provider instead of the global one
        engine.tracing.close()
        engine._tracing = None
    emitter = engine.enable_tracing(provider)
    H = {"HTTP_X_API_KEY": engine.partners.create("dj-traced").api_key}
    cid = c.post("/api/campaigns", data=json.dumps({"name": "t", "quantity": 3}), content_type="application/json", **H)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = c.post(
        f"/api/campaigns/{cid.json()['id']}/issue",
        data=json.dumps({"user_id": "traced"}),
        content_type="application/json",
        HTTP_TRACEPARENT=tp,
        **H,
    )
    assert r.json()["status"] == "ISSUED"
    emitter.flush()
    spans = exporter.get_finished_spans()
    tid = int(tp[3:35], 16)
    (server,) = [s for s in spans if s.kind == trace.SpanKind.SERVER and s.context.trace_id == tid]
    assert server.parent is not None and server.parent.span_id == int(tp[36:52], 16)
    (call,) = [s for s in spans if s.name == "couponcore.issue" and s.context.trace_id == tid]
    assert call.kind == trace.SpanKind.CLIENT and call.parent is not None
    assert call.parent.span_id == server.context.span_id
    linked = {s.name for s in spans for link in s.links if link.context.span_id == call.context.span_id}
    want = {"couponcore.gate.batch", "couponcore.writer.commit"}
    assert linked == want, [(s.name, s.links, engine.kind) for s in spans]
    # A malformed header: ignored, the call works.
    r = c.post(
        f"/api/campaigns/{cid.json()['id']}/issue",
        data=json.dumps({"user_id": "bad-header"}),
        content_type="application/json",
        HTTP_TRACEPARENT="00-garbage",
        **H,
    )
    assert r.json()["status"] == "ISSUED"
