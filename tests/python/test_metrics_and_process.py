"""Metrics (Prometheus text and prometheus_client), native logging, and the process model:
an engine opened before fork() refuses to work in the child."""

from __future__ import annotations

import logging
import os
import re
from typing import Callable

import couponcore
import pytest
from conftest import production_kwargs
from couponcore.metrics import PRODUCTION_ONLY_SERIES, render_worker


def test_metrics_text_counts_what_happened(engine: couponcore.Engine) -> None:
    c = engine.campaigns.create("m", quantity=2)
    engine.issue_many(c.id, ["a", "b", "c", "a"])
    text = engine.metrics_text()
    assert 'couponcore_issue_requests_total{outcome="issued"} 2' in text
    assert 'couponcore_issue_requests_total{outcome="sold_out"} 1' in text
    assert 'couponcore_issue_requests_total{outcome="already_issued"} 1' in text
    assert re.search(r"^couponcore_commits_total 1$", text, re.M)
    assert re.search(r'^couponcore_issue_latency_seconds_bucket\{le="\+Inf"\} 4$', text, re.M)
    assert re.search(r"^couponcore_issue_latency_seconds_count 4$", text, re.M)
    # Every sample line is "name{labels} value" and every family has a TYPE line.
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^couponcore_[a-z_]+(\{[^}]*\})? [0-9.e+-]+$", line), line


def test_prometheus_client_collector(engine: couponcore.Engine) -> None:
    import prometheus_client
    from couponcore.metrics import CouponcoreCollector

    c = engine.campaigns.create("m", quantity=1)
    engine.issue_many(c.id, ["a", "b"])
    reg = prometheus_client.CollectorRegistry()
    reg.register(CouponcoreCollector(engine))
    assert reg.get_sample_value("couponcore_issue_requests_total", {"outcome": "issued"}) == 1
    assert reg.get_sample_value("couponcore_issue_requests_total", {"outcome": "sold_out"}) == 1
    assert reg.get_sample_value("couponcore_batch_requests_count") == 1


def test_authentication_counters_are_exported(engine: couponcore.Engine) -> None:
    import prometheus_client
    from couponcore.metrics import CouponcoreCollector

    key = engine.partners.create("metered").api_key
    for _ in range(3):
        engine.authenticate(key)
    for bad in ("cc_live_unknown", "nonsense"):
        with pytest.raises(couponcore.Unauthenticated):
            engine.authenticate(bad)
    text = engine.metrics_text()
    assert re.search(r"^couponcore_auth_requests_total 5$", text, re.M)
    assert re.search(r"^couponcore_auth_failures_total 2$", text, re.M)
    # The first lookup of the good key misses the in-process cache; the next two hit it.
    assert int(re.search(r"^couponcore_auth_cache_hits_total (\d+)$", text, re.M).group(1)) >= 2  # type: ignore[union-attr]
    assert int(re.search(r"^couponcore_auth_db_queries_total (\d+)$", text, re.M).group(1)) >= 1  # type: ignore[union-attr]
    reg = prometheus_client.CollectorRegistry()
    reg.register(CouponcoreCollector(engine))
    assert reg.get_sample_value("couponcore_auth_requests_total") == 5
    assert reg.get_sample_value("couponcore_auth_failures_total") == 2


def test_grant_log_backlog_gauges(open_deployment: Callable[..., couponcore.Engine]) -> None:
    """Production: the grant log's backlog by campaign, in the text and through the collector,
    with the values engine.log_backlog() reports; embedded: no log, no series."""
    import prometheus_client
    from couponcore.metrics import CouponcoreCollector

    e = open_deployment(writer_threads=0)  # nobody writes: the grants wait in the log
    try:
        c = e.campaigns.create("backlog", quantity=10)
        e.issue_many(c.id, ["a", "b", "c"])
        e.issue(c.id, "d")
        text = e.metrics_text()
        reg = prometheus_client.CollectorRegistry()
        reg.register(CouponcoreCollector(e))
        if e.kind == "embedded":
            assert e.log_backlog() == []
            assert not re.search(r"^couponcore_(log_|dead_letters)", text, re.M)
            assert reg.get_sample_value("couponcore_log_entries", {"campaign": str(c.id)}) is None
            return
        (b,) = e.log_backlog()
        assert isinstance(b, couponcore.LogBacklog)
        assert (b.campaign_id, b.pending, b.oldest_pending_age_ms, b.dead_letters) == (c.id, 0, 0, 0)
        assert 2 <= b.entries <= 4  # one entry per Lua call: issue_many's batch and the single issue
        label = f'{{campaign="{c.id}"}}'
        assert f"couponcore_log_entries{label} {b.entries}\n" in text
        assert f"couponcore_log_pending{label} 0\n" in text
        assert f"couponcore_log_oldest_pending_seconds{label} 0\n" in text
        assert f"couponcore_dead_letters{label} 0\n" in text
        assert "# TYPE couponcore_log_oldest_pending_seconds gauge" in text
        for line in text.splitlines():
            assert line.startswith("#") or re.match(r"^couponcore_[a-z_]+(\{[^}]*\})? [0-9.e+-]+$", line), line
        assert reg.get_sample_value("couponcore_log_entries", {"campaign": str(c.id)}) == b.entries
        assert reg.get_sample_value("couponcore_log_pending", {"campaign": str(c.id)}) == 0
        assert reg.get_sample_value("couponcore_dead_letters", {"campaign": str(c.id)}) == 0
        # A writer on the deployment drains the log: nothing left, in every engine's view.
        with open_deployment(writer_threads=1) as w:
            assert w.drain(30)
            assert w.log_backlog() == [couponcore.LogBacklog(c.id, 0, 0, 0, 0)]
        assert f"couponcore_log_entries{label} 0\n" in e.metrics_text()
        assert reg.get_sample_value("couponcore_log_entries", {"campaign": str(c.id)}) == 0
    finally:
        e.close()


def test_native_warnings_reach_python_logging_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="couponcore"):
        for i in range(50):
            couponcore._core._log_for_test("ratelimit", f"message {i}")
    records = [r for r in caplog.records if r.name == "couponcore.ratelimit"]
    assert 1 <= len(records) <= 20  # at most 10 per second pass; a burst of 50 is cut
    assert records[0].getMessage() == "message 0"


def test_engine_opened_before_fork_is_refused_in_child(db_path: str) -> None:
    # Embedded only: besides the fork guard it checks the file lock (one SQLite file, one engine),
    # which the production deployment (many engines on one Redis + PostgreSQL) does not have.
    engine = couponcore.open(db_path)
    c = engine.campaigns.create("fork", quantity=10)
    engine.issue(c.id, "parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must get Closed, and exit without touching the parent's engine
        os.close(r)
        code = b"?"
        try:
            engine.issue(c.id, "child")
            code = b"issued"
        except couponcore.Closed:
            code = b"closed"
        except BaseException:
            code = b"other"
        try:  # the file is the parent's while its engine is open: one file, one engine
            couponcore.open(db_path)
            code += b"+opened"
        except couponcore.Conflict:
            code += b"+conflict"
        except BaseException:
            code += b"+other"
        os.write(w, code)
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 100)
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert got == b"closed+conflict"
    assert engine.issue(c.id, "parent2").seq == 2  # the parent's engine is untouched
    engine.close()
    with couponcore.open(db_path) as again:  # closed: the file is free again
        assert again.issue(c.id, "third").seq == 3


def test_deploy_rules_and_dashboard_use_metrics_that_exist(engine: couponcore.Engine) -> None:
    """Every couponcore_* series the alert rules and the Grafana dashboard query is exported."""
    import json
    from pathlib import Path

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    engine.points.earn(f"m{os.getpid()}", 1, idempotency_key=f"m-{os.getpid()}-{id(engine)}")  # opens the wallets
    _ = engine.windows  # opened: the live windows' aggregator series too
    exported = set(re.findall(r"^(couponcore_[a-z_]+)", engine.metrics_text(), re.M))
    text = (deploy / "prometheus-rules.yml").read_text()
    text += json.dumps(json.loads((deploy / "grafana-dashboard.json").read_text()))
    used = set(re.findall(r"couponcore_[a-z_]+", text))
    assert used, "no metrics referenced"
    assert "couponcore_wallet_ops_total" in exported
    # The jobs' series: exported once the engine's runner has run a job (a scheduled one, so that
    # its schedule interval is exported too).
    engine.jobs.run("purge_idempotency")
    exported |= set(re.findall(r"^(couponcore_[a-z_]+)", engine.metrics_text(), re.M))
    assert "couponcore_job_last_success_timestamp_seconds" in exported
    worker_only = {"couponcore_writer_threads", "couponcore_writer_breaker_open"}
    if engine.kind == "embedded":
        used -= PRODUCTION_ONLY_SERIES | worker_only  # no grant log: its series are production's
    else:
        engine.campaigns.create("exported", quantity=1)  # a campaign with a grant log
        exported = set(re.findall(r"^(couponcore_[a-z_]+)", engine.metrics_text(), re.M))
        assert PRODUCTION_ONLY_SERIES <= exported
        kw = production_kwargs()  # the standalone writer's endpoint (couponcore worker --metrics-port)
        with couponcore.open(redis=kw["redis"], postgres=kw["postgres"], key_prefix=kw["key_prefix"]) as other:
            other.campaigns.create("exported", quantity=1)
        worker = couponcore._core.Worker(
            {"redis_url": kw["redis"], "postgres_url": kw["postgres"], "key_prefix": kw["key_prefix"]}
        )
        worker_text = render_worker(worker, threads=1)
        worker_exported = set(re.findall(r"^(couponcore_[a-z_]+)", worker_text, re.M))
        assert worker_only <= worker_exported and PRODUCTION_ONLY_SERIES <= worker_exported
        exported |= worker_exported
    missing = {m for m in used if m not in exported}
    assert not missing, missing
