"""The production deployment end to end from Python: several processes on one campaign, the
standalone `couponcore worker`, reconcile, the demo on servers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import couponcore
from conftest import production_kwargs, run_worker_to_drain, stats


def _hammer(kw: dict[str, str], campaign_id: int, proc: int, out: mp.Queue[list[tuple[str, int]]]) -> None:
    import threading

    got: list[tuple[str, int]] = []
    lock = threading.Lock()
    with couponcore.open(**kw) as e:

        def worker(t: int) -> None:
            for i in range(150):
                user = f"u{(proc * 1000 + t * 37 + i * 11) % 4000}"
                r = e.issue(campaign_id, user)
                if r.issued:
                    with lock:
                        got.append((user, r.seq))

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    out.put(got)


def test_processes_hammer_one_campaign() -> None:
    kw = production_kwargs()
    with couponcore.open(**kw) as e:
        c = e.campaigns.create("multi-process", quantity=2500)
    ctx = mp.get_context("spawn")
    q: mp.Queue[list[tuple[str, int]]] = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(kw, c.id, p, q)) for p in range(4)]
    for p in procs:
        p.start()
    got = [pair for _ in procs for pair in q.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    users = [u for u, _ in got]
    assert len(set(users)) == len(users)  # limit 1 across processes
    assert sorted(s for _, s in got) == list(range(1, len(got) + 1))
    with couponcore.open(**kw) as e:
        st = stats(e, c.id)
        assert st.rows == len(got) and st.distinct_users == len(got) and st.max_seq == len(got)
        rep = e.reconcile(c.id)
        assert rep["consistent"] and rep["gate_issued"] == len(got)


def test_standalone_worker_writes_and_stops_on_sigterm() -> None:
    kw = production_kwargs()
    with couponcore.open(**kw, writer_threads=0) as e:  # web process: no in-process writer
        c = e.campaigns.create("worker", quantity=3000)
        results = e.issue_many(c.id, [f"w{i}" for i in range(3000)])
        assert all(r.issued for r in results)
        assert e.stats(c.id).rows == 0  # nothing writes yet: the grants wait in the stream
        run_worker_to_drain(e, kw, c.id, 3000, "--threads", "2")


def test_worker_cli_usage_errors() -> None:
    r = subprocess.run([sys.executable, "-m", "couponcore", "worker"], capture_output=True, text=True)
    assert r.returncode == 2 and "--redis" in r.stderr


def test_migrate_cli_is_idempotent() -> None:
    kw = production_kwargs()
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "couponcore", "migrate", "--postgres", kw["postgres"]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    assert couponcore.migrate(kw["postgres"]) == 0  # everything applied already


def test_unreachable_servers_raise_unavailable() -> None:
    t0 = time.monotonic()
    try:
        couponcore.open(
            redis="redis://127.0.0.1:1/0", postgres=production_kwargs()["postgres"], redis_connect_timeout_ms=500
        )
    except couponcore.Unavailable:
        pass
    else:
        raise AssertionError("no error for a Redis that is not there")
    assert time.monotonic() - t0 < 30


def test_demo_on_servers_json() -> None:
    kw = production_kwargs()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "couponcore",
            "demo",
            "--json",
            "--quantity",
            "800",
            "--users",
            "3000",
            "--requests",
            "6000",
            "--concurrency",
            "64",
            "--redis",
            kw["redis"],
            "--postgres",
            kw["postgres"],
            "--key-prefix",
            kw["key_prefix"],
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["engine"] == "production"
    assert (s["rows_in_store"], s["distinct_users"], s["max_seq"]) == (800, 800, 800)
    assert s["ok"] is True
