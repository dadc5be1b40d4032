"""Metrics of every stage: `couponcore worker --metrics-port` (the standalone writer's counters and
the grant log's backlog, the same series an engine exports), the stdlib metrics endpoint
(couponcore.metrics_http) and its bad input, and the coupon-use counters of both deployments."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import couponcore
import pytest
from conftest import metric_samples, production_kwargs
from couponcore.metrics import CouponcoreCollector
from couponcore.metrics_http import serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(r.read().decode())


def _get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), bytes(e.read())


# ---- the endpoint ------------------------------------------------------------------------------


def test_serve_metrics_answers_metrics_only_and_survives_a_failing_render() -> None:
    calls = []

    def render() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise couponcore.Unavailable("redis: connection refused")
        return "couponcore_x_total 1\n"

    with serve_metrics(render, port=0) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        assert _scrape(server.url) == "couponcore_x_total 1\n"
        status, body = _get(server.url)
        assert status == 500 and b"Unavailable: redis: connection refused" in body
        assert _scrape(server.url) == "couponcore_x_total 1\n"  # the next scrape works again
        assert _get(f"http://127.0.0.1:{server.port}/other")[0] == 404
    assert len(calls) == 3  # the 404 did not render
    with pytest.raises(OSError):  # closed: the port is free, nobody answers
        urllib.request.urlopen(server.url, timeout=2)


@pytest.mark.parametrize(
    ("port", "error"),
    [(-1, couponcore.InvalidArgument), (65536, couponcore.InvalidArgument), ("9100", couponcore.InvalidType),
     (True, couponcore.InvalidType), (9100.0, couponcore.InvalidType)],
)
def test_serve_metrics_bad_port_is_a_typed_error(port: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        serve_metrics(lambda: "", port=port)  # type: ignore[arg-type]


def test_serve_metrics_port_in_use_is_invalid_argument() -> None:
    with serve_metrics(lambda: "", port=0) as first:
        with pytest.raises(couponcore.InvalidArgument, match="cannot serve metrics on 127.0.0.1"):
            serve_metrics(lambda: "", port=first.port)
        assert _scrape(first.url) == ""  # the first one is untouched


# ---- couponcore worker --metrics-port ------------------------------------------------------------


@pytest.mark.parametrize("port", ["0", "65536", "-5", "nine"])
def test_worker_bad_metrics_port_is_a_usage_error(port: str) -> None:
    kw = production_kwargs()
    r = subprocess.run(
        [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"],
         "--metrics-port", port],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "--metrics-port" in r.stderr and "grants" not in r.stdout  # nothing ran


def test_worker_metrics_port_in_use_fails_before_writing() -> None:
    kw = production_kwargs()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"],
             "--key-prefix", kw["key_prefix"], "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert r.returncode == 3, r.stderr
    assert "InvalidArgument: cannot serve metrics on 127.0.0.1" in r.stderr
    assert "writing grants" not in r.stderr  # the writer never started


def test_worker_exports_its_writer_counters_and_the_backlog_an_engine_exports() -> None:
    kw = production_kwargs()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with couponcore.open(
        redis=kw["redis"], postgres=kw["postgres"], key_prefix=kw["key_prefix"], writer_threads=0
    ) as engine:
        c = engine.campaigns.create("worker-metrics", quantity=100)
        for i in range(25):
            assert engine.issue(c.id, f"u{i}").status == "ISSUED"
        # nothing writes yet: the 25 grants wait in the log, as both endpoints say
        backlog = engine.log_backlog()
        assert [(b.campaign_id, b.entries) for b in backlog if b.campaign_id == c.id] == [(c.id, 25)]
        worker = subprocess.Popen(
            [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"],
             "--key-prefix", kw["key_prefix"], "--report-s", "0", "--metrics-port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            samples: dict[str, float] = {}
            while time.monotonic() < deadline:
                assert worker.poll() is None, worker.communicate()
                try:
                    samples = metric_samples(_scrape(url))
                except OSError:  # not listening yet
                    samples = {}
                if samples.get("couponcore_grants_written_total", 0) >= 25:
                    break
                time.sleep(0.2)
            assert samples.get("couponcore_grants_written_total") == 25, samples
            assert samples["couponcore_worker_up"] == 1 and samples["couponcore_writer_threads"] == 1
            assert samples["couponcore_writer_batches_total"] >= 1
            assert samples["couponcore_writer_failures_total"] == 0
            assert samples["couponcore_writer_breaker_open"] == 0
            assert "couponcore_dead_lettered_total" in samples and "couponcore_writer_claimed_total" in samples
            assert engine.drain(30) and engine.stats(c.id).rows == 25
            # the backlog gauges: the engine's series, the same values once the log is settled
            worker_text, engine_text = _scrape(url), engine.metrics_text()
            for name in ("log_entries", "log_pending", "log_oldest_pending_seconds", "dead_letters"):
                series = f'couponcore_{name}{{campaign="{c.id}"}}'
                assert metric_samples(worker_text)[series] == metric_samples(engine_text)[series] == 0, series
            assert worker_text.count("# TYPE couponcore_log_entries gauge") == 1
        finally:
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert f"metrics at {url}" in err
    with pytest.raises(OSError):  # the endpoint went with the worker
        urllib.request.urlopen(url, timeout=2)


# ---- coupon-use counters ---------------------------------------------------------------------------


def test_coupon_use_counters(engine: couponcore.Engine) -> None:
    def uses() -> dict[str, float]:
        s = metric_samples(engine.metrics_text())
        return {o: s[f'couponcore_coupon_uses_total{{outcome="{o}"}}'] for o in ("used", "cancelled", "refused")}

    before = uses()
    c = engine.campaigns.create("uses", 10, discount_kind="fixed", discount_value=100, min_order_amount=500)
    user = f"u-{uuid.uuid4().hex[:12]}"
    coupon_id = engine.issue(c.id, user).coupon_id
    assert coupon_id is not None and engine.drain(30)
    engine.coupons.use(coupon_id, user, "o-1", 1000)
    engine.coupons.use(coupon_id, user, "o-1", 1000)  # a replay: answered, counted as a use
    with pytest.raises(couponcore.Conflict):
        engine.coupons.use(coupon_id, user, "o-2", 1000)  # used already: refused
    with pytest.raises(couponcore.NotFound):
        engine.coupons.use(coupon_id + 1, user, "o-3", 1000)  # no such coupon: refused
    engine.coupons.cancel_use(coupon_id, "o-1")
    after = uses()
    assert {o: after[o] - before[o] for o in after} == {"used": 2, "cancelled": 1, "refused": 2}
    k = engine.counters()
    assert (k["coupon_uses"], k["coupon_cancels"], k["coupon_uses_refused"]) == (
        after["used"], after["cancelled"], after["refused"])
    # the prometheus_client collector exports the same family
    fams = {f.name: f for f in CouponcoreCollector(engine).collect()}
    got = {s.labels["outcome"]: s.value for s in fams["couponcore_coupon_uses"].samples if s.name.endswith("_total")}
    assert got == after

