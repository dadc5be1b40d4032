"""Webhook deliveries in parallel per endpoint (both deployments, a real HTTP receiver): one slow
subject does not hold up the others, each subject's events arrive one after another and in
order, and no more than ``concurrency`` requests are ever in flight at once."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import couponcore
import pytest
from couponcore.events.webhooks import WebhookEndpoint, WebhookRunner, generate_secret, group_of
from test_webhooks import Receiver

SECRET = generate_secret()


class TimingReceiver(Receiver):
    """Records (subject, sequence, start, end) of every request and the most in flight at once; a
    subject in ``slow`` takes ``slow_s`` per request, the others ``fast_s``. Answers 204."""

    def __init__(self, slow: set[str], slow_s: float, fast_s: float) -> None:
        self.calls: list[tuple[str, int, float, float]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.slow, self.slow_s, self.fast_s = slow, slow_s, fast_s
        super().__init__()

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        event = json.loads(body)
        start = time.monotonic()
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.slow_s if event["subject"] in self.slow else self.fast_s)
        with self.lock:
            self.in_flight -= 1
            self.calls.append((event["subject"], int(event["sequence"]), start, time.monotonic()))
        return 204, {}


@pytest.fixture
def wallets(engine: couponcore.Engine) -> Iterator[tuple[list[str], str]]:
    """Seven wallets with 12 points.earned events each (their subject: wallet/0/<user>); the
    first wallet's subject is the slow one."""
    users = [f"w{i}-{uuid.uuid4().hex[:8]}" for i in range(7)]
    for round_ in range(12):
        for u in users:
            engine.points.earn(u, 1 + round_, idempotency_key=f"{u}-{round_}")
    yield [f"wallet/0/{u}" for u in users], f"wallet/0/{users[0]}"


def wait_until_published(engine: couponcore.Engine, subjects: list[str], n: int) -> None:
    """Until a fresh group can read the n events (production: the relay has published them)."""
    probe = engine.events.consume(f"probe-{uuid.uuid4().hex[:8]}", ["points.earned"], block_ms=100, idle_timeout_s=20)
    seen = 0
    for e in probe:
        seen += e.subject in subjects
        if seen >= n:
            return
    raise AssertionError(f"only {seen} of {n} events were published")


def test_a_slow_subject_holds_up_only_itself_order_and_bound_kept(
    engine: couponcore.Engine, wallets: tuple[list[str], str]
) -> None:
    subjects, slow = wallets
    concurrency = 4
    receiver = TimingReceiver({slow}, slow_s=0.4, fast_s=0.01)
    ep = WebhookEndpoint(
        name=f"par-{uuid.uuid4().hex[:8]}",
        url=receiver.url,
        secret=SECRET,
        event_types=["points.earned"],
        concurrency=concurrency,
        allow_private_networks=True,
    )
    wait_until_published(engine, subjects, len(subjects) * 12)  # the runner then has them all at hand
    runner = WebhookRunner(engine, [ep], block_ms=100, batch=20).start()
    try:
        want = len(subjects) * 12
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with receiver.lock:
                mine = [c for c in receiver.calls if c[0] in subjects]
            if len(mine) >= want:
                break
            time.sleep(0.05)
        runner.stop()
        assert runner.join(10.0) and runner.errors == []
    finally:
        receiver.close()
    mine = [c for c in receiver.calls if c[0] in subjects]
    assert len(mine) == want, f"{len(mine)} of {want} delivered"
    # Per subject: one request after another (no overlap), in sequence order, each event once.
    for s in subjects:
        calls = sorted((c for c in mine if c[0] == s), key=lambda c: c[2])
        seqs = [c[1] for c in calls]
        assert seqs == sorted(set(seqs)) and len(seqs) == 12, (s, seqs)
        for before, after in zip(calls, calls[1:]):
            assert after[2] >= before[3], f"{s}: a request started before the previous one ended"
    # The bound, and that it was used.
    assert 2 <= receiver.most_in_flight <= concurrency
    # The slow subject (12 x 0.4 s) did not hold up the others: all of theirs were done before its
    # eleventh request started (4 s in). One event at a time, in sequence order (the wallets
    # earned in turns), their last ones would come after its twelfth.
    slow_calls = sorted((c for c in mine if c[0] == slow), key=lambda c: c[2])
    fast_end = max(c[3] for c in mine if c[0] != slow)
    assert fast_end < slow_calls[-2][2], "the other subjects waited for the slow one"
    # Every delivery was acknowledged: the group hands out none of them again.
    again = engine.events.consume(group_of(ep), ["points.earned"], block_ms=100, idle_timeout_s=1.0)
    assert [e.id for e in again if e.subject in subjects] == []


def test_concurrency_is_checked() -> None:
    for bad in (0, 65, 2.5, True, "4"):
        with pytest.raises(couponcore.InvalidArgument):
            WebhookEndpoint(name="crm", url="https://h.example/x", secret=SECRET, concurrency=bad)
    assert WebhookEndpoint(name="crm", url="https://h.example/x", secret=SECRET).concurrency == 4
