"""Event schemas and webhooks against real engines (both deployments): every event type a real
engine writes validates against its shipped schema and decodes; a v2 consumer reads the v1
coupon.issued events a real engine writes; the webhook runner delivers real events, signed, to a
real HTTP receiver and acknowledges them; events it gives up on land in the group's dead letters
with the reason.

Production tests share one PostgreSQL database (one outbox) with the rest of the run: every
check filters by this test's campaigns and users."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import couponcore
import pytest
from conftest import production_kwargs
from couponcore import events
from couponcore.events import webhooks
from couponcore.events.webhooks import WebhookRunner, group_of
from test_webhooks import SECRET, Receiver


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def read_all(engine: couponcore.Engine, group: str, mine: set[str], n: int, timeout_s: float = 20.0) -> list:
    """Events of this test (by subject) from a fresh group, acknowledged, until n came."""
    got = []
    stream = engine.events.consume(group, block_ms=100, idle_timeout_s=timeout_s)
    for e in stream:
        e.ack()
        if e.subject in mine:
            got.append(e)
        if len(got) >= n:
            break
    return got


def make_every_type(engine: couponcore.Engine) -> tuple[set[str], couponcore.IssueResult]:
    """One real change of each of the ten types; returns the subjects they carry."""
    c = engine.campaigns.create("schemas", quantity=2, discount_kind="fixed", discount_value=500, valid_days=7)
    a, b = uid("a"), uid("b")
    ra, rb = engine.issue(c.id, a, request_id=f"r-{a}"), engine.issue(c.id, b)  # the second sells it out
    assert engine.drain(30)
    engine.coupons.use(ra.coupon_id, a, "order-1", 10_000)
    engine.coupons.cancel_use(ra.coupon_id, "order-1")
    engine.expire_coupons(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=8))
    p = engine.points
    u, v = uid("alice"), uid("bob")
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    p.earn(u, 100, idempotency_key=f"{u}-e1", reason="signup")
    p.earn(u, 5, idempotency_key=f"{u}-e2", expires_at=soon)
    p.use(u, 30, idempotency_key=f"{u}-u1", order_id="o-1")
    p.cancel(u, use_key=f"{u}-u1", idempotency_key=f"{u}-c1")
    p.transfer(u, v, 20, idempotency_key=f"{u}-t1")
    p.expire(now=soon + dt.timedelta(seconds=1))
    # the transfer draws the soon-expiring lot first, so the expiry may hit either wallet
    subjects = {
        f"coupon/{ra.coupon_id}",
        f"coupon/{rb.coupon_id}",
        f"campaign/{c.id}",
        f"wallet/0/{u}",
        f"wallet/0/{v}",
    }
    return subjects, ra


def test_every_type_a_real_engine_writes_matches_its_schema(engine: couponcore.Engine) -> None:
    import jsonschema

    subjects, ra = make_every_type(engine)
    # 2 issued, sold out, used, use_cancelled, 2 expired; 2 earned, used, cancelled, transferred, expired
    got = read_all(engine, uid("g"), subjects, 13)
    assert {e.type for e in got} == set(events.EVENT_TYPES), " ".join(e.type for e in got)
    for e in got:
        raw = json.loads(e.raw)
        jsonschema.Draft202012Validator(events.load_schema("cloudevent", 1)).validate(raw)
        schema = events.load_schema(e.type, 1)
        jsonschema.Draft202012Validator(schema).validate(raw["data"])
        # no field the schema does not name: the schemas and the writer agree exactly
        assert set(raw["data"]) == set(schema["properties"]), (e.type, sorted(raw["data"]))
        d = events.decode(e)
        assert (d.id, d.type, d.sequence, d.subject) == (e.id, e.type, e.sequence, e.subject)
        assert isinstance(d.data, events.DATA_CLASSES[(e.type, 1)])

    # a consumer of coupon.issued v2 reads the v1 events the engine wrote
    (issued,) = [e for e in got if e.type == "coupon.issued" and e.subject == f"coupon/{ra.coupon_id}"]
    v1, v2 = events.decode(issued), events.decode(issued, version=2)
    assert v1.version == 1 and v2.version == 2 and v2.written_version == 1
    assert isinstance(v2.data, events.CouponIssuedV2)
    assert (v2.data.coupon_id, v2.data.seq, v2.data.request_id) == (ra.coupon_id, ra.seq, v1.data.request_id)
    assert round(v2.data.issued_at_dt.timestamp() * 1_000_000) == v1.data.issued_at_us
    assert round(v2.data.valid_until_dt.timestamp() * 1_000_000) == v1.data.valid_until_us
    assert v2.data.valid_until_dt - v2.data.issued_at_dt == pytest.approx(
        dt.timedelta(days=7), abs=dt.timedelta(days=1)
    )


def deliver_until(
    runner: WebhookRunner, receiver: Receiver, want: int, campaign_id: int, timeout_s: float = 30.0
) -> list:
    """Runs the runner's first endpoint until ``want`` requests with events of ``campaign_id`` arrived
    (other tests' events may come too: production shares the outbox)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runner.run_once(0, block_ms=200)
        got = [r for r in receiver.requests if json.loads(r[2])["data"].get("campaign_id") == campaign_id]
        if len(got) >= want:
            return got
    raise AssertionError(f"{want} deliveries of campaign {campaign_id} did not arrive in {timeout_s} s")


def test_runner_delivers_real_events_signed_and_acks_them(engine: couponcore.Engine, receiver: Receiver) -> None:
    c = engine.campaigns.create("hooks", quantity=3)
    results = [engine.issue(c.id, uid("u")) for _ in range(3)]
    ep = webhooks.WebhookEndpoint(
        name=uid("crm"),
        url=receiver.url,
        secret=SECRET,
        event_types=["coupon.issued", "campaign.sold_out"],
        allow_private_networks=True,
    )
    receiver.script = [(503, {})]  # the first request fails once: retried
    runner = WebhookRunner(engine, [ep], block_ms=100)
    got = deliver_until(runner, receiver, 4, c.id)
    by_id = {}
    for _, headers, body in got:
        assert webhooks.verify(SECRET, headers, body) == json.loads(body)["id"]
        by_id[json.loads(body)["id"]] = events.decode(body)
    assert set(by_id) == {f"coupon.issued:{c.id}:{s}" for s in (1, 2, 3)} | {f"campaign.sold_out:{c.id}:3"}
    assert {by_id[f"coupon.issued:{c.id}:{r.seq}"].data.coupon_id for r in results} == {r.coupon_id for r in results}
    snap = runner.metrics.snapshot()
    assert snap["deliveries"][ep.name]["delivered"] >= 4 and snap["attempts"][ep.name]["retryable_status"] == 1
    # acknowledged: the group gives them out no more
    again = engine.events.consume(group_of(ep), list(ep.event_types), block_ms=100, idle_timeout_s=1.0)
    assert [e.id for e in again if e.id in by_id] == []


def test_runner_dead_letters_into_the_group_with_the_reason(engine: couponcore.Engine, receiver: Receiver) -> None:
    c = engine.campaigns.create("hooks-dl", quantity=1)
    engine.issue(c.id, uid("u"))
    ep = webhooks.WebhookEndpoint(
        name=uid("crm"),
        url=receiver.url,
        secret=SECRET,
        event_types=["coupon.issued"],
        max_attempts=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        allow_private_networks=True,
    )
    receiver.script = [(400, {})] * 1000  # every request refused
    runner = WebhookRunner(engine, [ep], block_ms=100)
    deliver_until(runner, receiver, 1, c.id)
    dead = [
        d
        for d in engine.events.list_dead_letters(group_of(ep), limit=10_000)
        if d.event_id == f"coupon.issued:{c.id}:1"
    ]
    assert len(dead) == 1
    assert dead[0].reason == f"webhook {ep.name}: HTTP 400 (not retried)"
    assert dead[0].event["data"]["campaign_id"] == c.id
    again = engine.events.consume(group_of(ep), ["coupon.issued"], block_ms=100, idle_timeout_s=1.0)
    assert [e.id for e in again if e.id == dead[0].event_id] == []


def test_runner_threads_deliver_to_each_endpoint_and_stop(engine: couponcore.Engine) -> None:
    """Two endpoints, each with its own group and thread: each gets the types it asked for; stop()
    ends both threads promptly, mid-retry included (that event is not acknowledged)."""
    crm, shop = Receiver(), Receiver()
    try:
        c = engine.campaigns.create("hooks-threads", quantity=2)
        for _ in range(2):
            engine.issue(c.id, uid("u"))
        eps = [
            webhooks.WebhookEndpoint(
                name=uid("crm"), url=crm.url, secret=SECRET, event_types=["coupon.issued"], allow_private_networks=True
            ),
            webhooks.WebhookEndpoint(
                name=uid("shop"),
                url=shop.url,
                secret=SECRET,
                event_types=["campaign.sold_out"],
                allow_private_networks=True,
            ),
        ]
        runner = WebhookRunner(engine, eps, block_ms=100).start()

        def of_mine(r: Receiver) -> list[dict]:
            bodies = [json.loads(b) for _, _, b in r.requests]
            return [b for b in bodies if b["data"].get("campaign_id") == c.id]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(of_mine(crm)) < 2 or len(of_mine(shop)) < 1):
            time.sleep(0.05)
        assert sorted(b["id"] for b in of_mine(crm)) == [f"coupon.issued:{c.id}:1", f"coupon.issued:{c.id}:2"]
        assert [b["id"] for b in of_mine(shop)] == [f"campaign.sold_out:{c.id}:2"]
        assert {json.loads(body)["type"] for _, _, body in crm.requests} == {"coupon.issued"}
        # the next event meets a receiver asking for a long wait: stop() must not wait for it
        crm.script = [(503, {"Retry-After": "60"})] * 100
        engine.issue(engine.campaigns.create("hooks-threads-2", quantity=1).id, uid("u"))
        time.sleep(0.5)
        t0 = time.monotonic()
        runner.stop()
        assert runner.join(10.0) and time.monotonic() - t0 < 10.0
        assert runner.errors == []
    finally:
        crm.close()
        shop.close()


def test_the_command_delivers_and_stops_on_sigterm(receiver: Receiver, tmp_path: Any) -> None:
    """`couponcore events webhooks` as its own process beside a production engine: it delivers the
    engine's events, serves its counters, and exits 0 on SIGTERM with the counters as JSON."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    kw = production_kwargs()
    name = uid("crm")
    config = tmp_path / "hooks.json"
    config.write_text(
        json.dumps(
            {
                "allow_private_networks": True,  # the receiver is on loopback
                "webhooks": [
                    {"name": name, "url": receiver.url, "secret_env": "HOOK_SECRET", "event_types": ["coupon.issued"]}
                ],
            }
        )
    )
    with couponcore.open(**kw) as engine:
        c = engine.campaigns.create("hooks-cli", quantity=2)
        for _ in range(2):
            engine.issue(c.id, uid("u"))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "couponcore",
                "events",
                "webhooks",
                "--config",
                str(config),
                "--redis",
                kw["redis"],
                "--postgres",
                kw["postgres"],
                "--key-prefix",
                kw["key_prefix"],
                "--metrics-port",
                "0",
                "--report-s",
                "0",
            ],
            env={**os.environ, "HOOK_SECRET": SECRET},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # printed before anything is delivered
            assert "metrics at http://" in line, line
            metrics_url = line.split("metrics at ", 1)[1].strip()
            deadline = time.monotonic() + 30
            mine: list[dict] = []
            while time.monotonic() < deadline and len(mine) < 2:
                time.sleep(0.1)
                mine = [json.loads(b) for _, _, b in receiver.requests]
                mine = [b for b in mine if b["data"].get("campaign_id") == c.id]
            assert sorted(b["id"] for b in mine) == [f"coupon.issued:{c.id}:1", f"coupon.issued:{c.id}:2"]
            text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
            assert f'couponcore_webhook_deliveries_total{{endpoint="{name}",outcome="delivered"}}' in text, text
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["deliveries"][name]["delivered"] >= 2
