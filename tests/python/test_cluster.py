"""The production deployment on the test Redis Cluster (scripts/cluster.sh, whose seeds
scripts/with-test-env.sh exports as COUPONCORE_TEST_REDIS_CLUSTER): a smoke run across masters,
and the URL and cluster errors as Python sees them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import couponcore
import pytest
from conftest import production_kwargs, stats

CLUSTER = os.environ.get("COUPONCORE_TEST_REDIS_CLUSTER", "")
needs_cluster = pytest.mark.skipif(not CLUSTER, reason="COUPONCORE_TEST_REDIS_CLUSTER is not set")


def cluster_kwargs() -> dict[str, str]:
    kw = production_kwargs()
    kw["redis"] = CLUSTER
    return kw


@needs_cluster
def test_campaigns_across_masters_issue_drain_and_reconcile() -> None:
    with couponcore.open(**cluster_kwargs()) as e:
        campaigns = [e.campaigns.create(f"cluster-{i}", quantity=200) for i in range(6)]
        got: dict[int, list[int]] = {c.id: [] for c in campaigns}
        lock = threading.Lock()

        def worker(t: int) -> None:
            for c in campaigns:
                results = e.issue_many(c.id, [f"u{t}-{i}" for i in range(60)])
                with lock:
                    got[c.id].extend(r.seq for r in results if r.issued)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for c in campaigns:
            assert sorted(got[c.id]) == list(range(1, 201))  # 240 asked, 200 issued, seqs 1..200
            st = stats(e, c.id)
            assert st.rows == 200 and st.distinct_users == 200 and st.max_seq == 200
            rep = e.reconcile(c.id)
            assert rep["consistent"] and rep["gate_issued"] == 200


@needs_cluster
def test_standalone_worker_drains_every_master() -> None:
    kw = cluster_kwargs()
    with couponcore.open(**kw, writer_threads=0) as e:
        campaigns = [e.campaigns.create(f"worker-{i}", quantity=300) for i in range(6)]
        for c in campaigns:
            assert all(r.issued for r in e.issue_many(c.id, [f"w{i}" for i in range(300)]))
        worker = subprocess.Popen(
            [sys.executable, "-m", "couponcore", "worker", "--redis", kw["redis"], "--postgres", kw["postgres"]]
            + ["--key-prefix", kw["key_prefix"], "--threads", "2", "--report-s", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert e.drain(60.0)
            for c in campaigns:
                st = e.stats(c.id)
                assert (st.rows, st.distinct_users, st.max_seq) == (300, 300, 300)
        finally:
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["grants_written"] == 1800


def test_mixed_url_is_invalid_argument() -> None:
    kw = production_kwargs()
    for url in ("redis://127.0.0.1:7100,127.0.0.1:7101", "redis+cluster://127.0.0.1:7100,redis://127.0.0.1:6379"):
        kw["redis"] = url
        with pytest.raises(couponcore.InvalidArgument, match="mixes the cluster and single-node forms"):
            couponcore.open(**kw)


def test_no_reachable_seed_is_unavailable() -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    kw = production_kwargs()
    kw["redis"] = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    with pytest.raises(couponcore.Unavailable, match="no seed answered CLUSTER SLOTS"):
        couponcore.open(**kw)
