"""Signed webhooks against a real HTTP receiver (a server thread on a free loopback port): signatures,
retries with backoff, Retry-After, dead letters, no retry on 4xx, URL checks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import couponcore
import pytest
from couponcore.events import example_event, webhooks
from couponcore.events.webhooks import (
    MemoryDeadLetters,
    WebhookEndpoint,
    WebhookMetrics,
    WebhookSender,
    WebhookVerificationError,
)


class Receiver:
    """Answers POSTs with the scripted (status, headers[, seconds to wait first]) in turn, then 204;
    records every request. A subclass may answer otherwise (:meth:`answer`)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.script: list[tuple[Any, ...]] = []
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, headers = receiver.answer(dict(self.headers.items()), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/couponcore"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append((time.monotonic(), headers, body))
            status, answer_headers, *wait = self.script.pop(0) if self.script else (204, {})
        if wait:
            time.sleep(wait[0])
        return status, answer_headers

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


SECRET = webhooks.generate_secret()


def endpoint(url: str, **kw: Any) -> WebhookEndpoint:
    opts: dict[str, Any] = {"max_attempts": 4, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}
    opts["allow_private_networks"] = True  # the receiver is on loopback
    opts.update(kw)
    return WebhookEndpoint(name="crm", url=url, secret=SECRET, **opts)


def sender(ep: WebhookEndpoint, dl: Optional[MemoryDeadLetters] = None) -> WebhookSender:
    return WebhookSender(ep, dl if dl is not None else MemoryDeadLetters(), metrics=WebhookMetrics())


def test_signature_verifies_with_the_secret_and_fails_with_another(receiver: Receiver) -> None:
    event = example_event("coupon.issued")
    with sender(endpoint(receiver.url)) as s:
        out = s.deliver(event)
    assert (out.outcome, out.attempts, out.status) == ("delivered", 1, 204)
    ((_, headers, body),) = receiver.requests
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["webhook-id"] == event["id"] == "coupon.issued:example"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    assert json.loads(body) == event
    assert couponcore.events.decode(body).data.coupon_id == 30064771075  # the body is the CloudEvent
    assert webhooks.verify(SECRET, headers, body) == event["id"]
    # several secrets (a rotation): one matching is enough
    assert webhooks.verify([webhooks.generate_secret(), SECRET], headers, body) == event["id"]
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        webhooks.verify(webhooks.generate_secret(), headers, body)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        webhooks.verify(SECRET, headers, body.replace(b"user-42", b"user-43"))
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        webhooks.verify(SECRET, {**headers, "webhook-id": "coupon.issued:other"}, body)
    with pytest.raises(WebhookVerificationError, match="from now"):
        webhooks.verify(SECRET, headers, body, now=time.time() + 301)
    with pytest.raises(WebhookVerificationError, match="missing header webhook-signature"):
        webhooks.verify(SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, body)
    assert issubclass(WebhookVerificationError, couponcore.Unauthenticated)


def test_secret_rotation_signs_with_both_until_the_old_one_is_dropped(receiver: Receiver) -> None:
    new = webhooks.generate_secret()
    ep = WebhookEndpoint(
        name="crm", url=receiver.url, secret=new, previous_secrets=[SECRET], allow_private_networks=True
    )
    with sender(ep) as s:
        assert s.deliver(example_event("coupon.used")).outcome == "delivered"
    ((_, headers, body),) = receiver.requests
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert webhooks.verify(SECRET, headers, body) and webhooks.verify(new, headers, body)  # old and new receivers
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(webhooks.generate_secret(), headers, body)
    with pytest.raises(couponcore.InvalidArgument):
        WebhookEndpoint(
            name="crm", url=receiver.url, secret=new, previous_secrets=["whsec_short"], allow_private_networks=True
        )


def test_signature_matches_an_independent_computation() -> None:
    """The Standard Webhooks construction, spelled out with hashlib: key = base64-decoded secret."""
    import base64
    import hashlib
    import hmac

    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    body = b'{"id":"msg_1"}'
    mac = hmac.new(bytes(range(32)), b"msg_1.1674087231." + body, hashlib.sha256).digest()
    assert webhooks.sign(secret, "msg_1", 1674087231, body) == "v1," + base64.b64encode(mac).decode()
    h = webhooks.signature_headers(secret, "msg_1", body, timestamp=1674087231)
    assert webhooks.verify(secret, h, body, now=1674087231 + 299) == "msg_1"


def test_retried_until_success_after_two_500s(receiver: Receiver) -> None:
    receiver.script = [(500, {}), (503, {})]
    dl = MemoryDeadLetters()
    s = sender(endpoint(receiver.url), dl)
    out = s.deliver(example_event("points.earned"))
    assert (out.outcome, out.attempts, out.status) == ("delivered", 3, 204)
    assert len(receiver.requests) == 3 and dl.items == []
    ids = {r[1]["webhook-id"] for r in receiver.requests}
    assert ids == {"points.earned:example"}  # the same id on every retry: receivers dedupe by it
    for _, headers, body in receiver.requests:
        webhooks.verify(SECRET, headers, body)  # each attempt signed afresh
    gaps = [b[0] - a[0] for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert gaps[0] >= 0.005 and gaps[1] >= 0.01  # backoff 0.01 then 0.02, half of it fixed
    snap = s.metrics.snapshot()
    assert snap["deliveries"] == {"crm": {"delivered": 1}}
    assert snap["attempts"] == {"crm": {"2xx": 1, "retryable_status": 2}}
    assert 'couponcore_webhook_deliveries_total{endpoint="crm",outcome="delivered"} 1' in s.metrics.render()
    s.close()


def test_429_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "1"})]
    with sender(endpoint(receiver.url)) as s:
        out = s.deliver(example_event("coupon.used"))
    assert (out.outcome, out.attempts) == ("delivered", 2)
    first, second = receiver.requests
    assert second[0] - first[0] >= 0.95  # the receiver asked for 1 s; the backoff alone is 0.01 s


def test_retry_after_forms() -> None:
    from email.utils import formatdate

    from couponcore.events._webhook_delivery import retry_after_s

    assert retry_after_s("7") == 7.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(30)
    assert retry_after_s(formatdate(1_000_000, usegmt=True), now=1_000_030) == 0.0


def test_dead_lettered_after_n_failures_with_the_reason(receiver: Receiver) -> None:
    receiver.script = [(502, {})] * 10
    dl = MemoryDeadLetters()
    s = sender(endpoint(receiver.url, max_attempts=3), dl)
    event = example_event("points.transferred")
    out = s.deliver(event)
    assert (out.outcome, out.attempts, out.status) == ("dead_lettered", 3, 502)
    assert len(receiver.requests) == 3
    (d,) = dl.items
    assert (d.endpoint, d.event_id, d.attempts) == ("crm", event["id"], 3)
    assert d.reason == "HTTP 502 after 3 attempt(s)" == out.reason
    assert json.loads(d.body) == event
    assert s.metrics.snapshot()["deliveries"] == {"crm": {"dead_lettered": 1}}


def test_network_errors_are_retried_then_dead_lettered() -> None:
    r = Receiver()
    url = r.url
    r.close()  # nothing listens on that port any more: connection refused
    dl = MemoryDeadLetters()
    out = sender(endpoint(url, max_attempts=2), dl).deliver(example_event("campaign.sold_out"))
    assert (out.outcome, out.attempts, out.status) == ("dead_lettered", 2, None)
    assert dl.items[0].reason.startswith("network error: ConnectError")


def test_a_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script = [(204, {}, 1.5)]  # the first answer comes after the sender's timeout
    s = sender(endpoint(receiver.url, timeout_s=0.3))
    out = s.deliver(example_event("points.used"))
    assert (out.outcome, out.attempts, out.status) == ("delivered", 2, 204)
    assert s.metrics.snapshot()["attempts"] == {"crm": {"network_error": 1, "2xx": 1}}
    s.close()


def test_a_400_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [(400, {}), (500, {})]
    dl = MemoryDeadLetters()
    s = sender(endpoint(receiver.url), dl)
    out = s.deliver(example_event("coupon.expired"))
    assert (out.outcome, out.attempts, out.status) == ("dead_lettered", 1, 400)
    assert len(receiver.requests) == 1
    assert dl.items[0].reason == "HTTP 400 (not retried)"
    assert s.metrics.snapshot()["attempts"] == {"crm": {"rejected_status": 1}}


def test_stop_interrupts_the_wait_and_does_not_settle(receiver: Receiver) -> None:
    receiver.script = [(503, {"Retry-After": "30"})]
    dl = MemoryDeadLetters()
    s = sender(endpoint(receiver.url), dl)
    threading.Timer(0.2, s.stop).start()
    t0 = time.monotonic()
    out = s.deliver(example_event("coupon.issued"))
    assert out.outcome == "stopped" and time.monotonic() - t0 < 10
    assert dl.items == [] and len(receiver.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.com/hook",
        "http://",
        "https:///path-only",
        "https://user:pw@example.com/hook",
        "https://token@example.com/hook",
        "https://example.com:99999/hook",
        "https://example.com:0/hook",
        "https://example.com/hook#frag",
        "https://example.com/ho ok",
        "https://example.com/\nhook",
        "https://example.com/" + "a" * 2100,
        "",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(couponcore.InvalidArgument):
        webhooks.validate_url(url)
    with pytest.raises(couponcore.InvalidArgument):
        WebhookEndpoint(name="crm", url=url, secret=SECRET)


def test_good_urls_pass() -> None:
    for url in ("https://hooks.example.com/couponcore", "http://127.0.0.1:8080/h?x=1", "https://[::1]:8443/h"):
        assert webhooks.validate_url(url) == url


def test_endpoint_and_config_checks(tmp_path: Any) -> None:
    for bad in (
        {"secret": "plain-text-secret"},
        {"secret": "whsec_" + "A" * 8},  # 6 bytes: too short
        {"event_types": ["coupon.regifted"]},
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"backoff_initial_s": -1},
        {"backoff_initial_s": float("nan")},
        {"backoff_initial_s": 10, "backoff_max_s": 1},
        {"name": "has space"},
    ):
        with pytest.raises(couponcore.InvalidArgument):
            WebhookEndpoint(**{"name": "crm", "url": "https://h.example/x", "secret": SECRET, **bad})
    ep = WebhookEndpoint(name="crm", url="https://h.example/x", secret=SECRET, event_types=["coupon.used"])
    assert ep.wants("coupon.used") and not ep.wants("coupon.issued") and ep.event_types == ("coupon.used",)
    assert SECRET not in repr(ep)

    path = tmp_path / "hooks.json"
    entry = {"name": "crm", "url": "https://h.example/x", "secret_env": "CRM_SECRET"}
    path.write_text(json.dumps({"webhooks": [entry]}))
    (loaded,) = webhooks.load_config(str(path), environ={"CRM_SECRET": SECRET})
    assert loaded.secret == SECRET and loaded.max_attempts == 8
    with pytest.raises(couponcore.InvalidArgument, match="CRM_SECRET"):
        webhooks.load_config(str(path), environ={})
    old = webhooks.generate_secret()
    path.write_text(json.dumps({"webhooks": [{**entry, "previous_secrets_env": ["CRM_OLD"]}]}))
    (rotating,) = webhooks.load_config(str(path), environ={"CRM_SECRET": SECRET, "CRM_OLD": old})
    assert rotating.signing_secrets == (SECRET, old)
    path.write_text(json.dumps({"webhooks": [{"name": "a", "url": "https://h.example/x", "secret": SECRET}] * 2}))
    with pytest.raises(couponcore.InvalidArgument, match="unique"):
        webhooks.load_config(str(path))
    path.write_text(json.dumps({"webhooks": [{"name": "a", "url": "https://h.example/x", "secret": SECRET, "x": 1}]}))
    with pytest.raises(couponcore.InvalidArgument, match="unknown key"):
        webhooks.load_config(str(path))


def test_cli_refuses_a_bad_config_before_opening_anything(tmp_path: Any, capsys: Any) -> None:
    from couponcore.cli import main

    db = tmp_path / "c.db"
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps({"webhooks": [{"name": "crm", "url": "ftp://h.example/x", "secret": SECRET}]}))
    assert main(["events", "webhooks", "--config", str(path), "--path", str(db)]) == 3
    assert "InvalidArgument" in capsys.readouterr().err and not db.exists()
    assert main(["events", "webhooks", "--config", str(tmp_path / "missing.json"), "--path", str(db)]) == 3
    path.write_text(json.dumps({"webhooks": [{"name": "crm", "url": "https://h.example/x", "secret": SECRET}]}))
    assert main(["events", "webhooks", "--config", str(path)]) == 2  # neither --path nor the servers
    assert not db.exists()


def test_jsonl_dead_letters_keep_the_event_and_the_reason(receiver: Receiver, tmp_path: Any) -> None:
    receiver.script = [(410, {})]
    sink = webhooks.JsonlDeadLetters(str(tmp_path / "dead.jsonl"))
    event = example_event("points.cancelled")
    with WebhookSender(endpoint(receiver.url), sink) as s:
        assert s.deliver(event).outcome == "dead_lettered"
        assert s.deliver(example_event("points.used")).outcome == "delivered"
    (line,) = (tmp_path / "dead.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert (rec["endpoint"], rec["event_id"], rec["attempts"], rec["status"]) == ("crm", event["id"], 1, 410)
    assert rec["reason"] == "HTTP 410 (not retried)" and rec["event"] == event
