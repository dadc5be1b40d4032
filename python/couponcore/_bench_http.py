"""`couponcore bench http`: the whole service under HTTP load against the hand-built baseline
(bench/baseline). Split from bench.py, which lists every benchmark."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

from ._engine import open
from .bench import _bench_servers, _cleanup_prefix


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _post_json(url: str, body: dict[str, Any], headers: Optional[dict[str, str]] = None) -> Any:
    import json
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _wrk(url: str, connections: int, duration_s: int, users: int, headers: dict[str, str]) -> dict[str, Any]:
    import json
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "_wrk_issue.lua")
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s", "-s", script]
    for k, v in {"Content-Type": "application/json", **headers}.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        cmd + [url], capture_output=True, text=True, check=True, env={**os.environ, "USERS": str(users)}
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    return json.loads(line[len("WRKJSON ") :])


def bench_http(
    connections: int = 500, duration_s: int = 15, quantity: int = 10_000, users: int = 100_000
) -> dict[str, Any]:
    """The whole service under HTTP load: wrk with ``connections`` connections for
    ``duration_s`` seconds against couponcore's FastAPI service (uvicorn, production deployment)
    and, in the same run, against the baseline (FastAPI + redis-py Lua per request + a psycopg
    consumer, bench/baseline), once on the same uvicorn settings as ours (asyncio loop) and once
    on uvicorn's defaults (uvloop). Afterwards PostgreSQL must hold exactly ``quantity`` coupons."""
    import shutil as _sh
    import subprocess

    import psycopg

    if _sh.which("wrk") is None:
        raise SystemExit("couponcore bench http needs wrk (apt-get install wrk)")
    srv = _bench_servers()
    repo = os.environ.get("COUPONCORE_REPO", os.getcwd())
    out: dict[str, Any] = {
        "benchmark": "http",
        "connections": connections,
        "duration_s": duration_s,
        "quantity": quantity,
        "users": users,
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # --- couponcore: `couponcore serve` on the production deployment --------------------
        with open(redis=srv["redis"], postgres=srv["postgres"], key_prefix=srv["key_prefix"]) as e:
            key = e.partners.create("bench-http")
            scope = e.partner(key.partner)
            c = scope.campaigns.create("http flash sale", quantity=quantity)
            port = _free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "couponcore",
                        "serve",
                        "--port",
                        str(port),
                        "--redis",
                        srv["redis"],
                        "--postgres",
                        srv["postgres"],
                        "--key-prefix",
                        srv["key_prefix"],
                        "--loop",
                        "asyncio",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            ours = _wrk(
                f"http://127.0.0.1:{port}/campaigns/{c.id}/issue",
                connections,
                duration_s,
                users,
                {"X-API-KEY": key.api_key},
            )
            procs.pop().terminate()
            assert e.drain(120)
            out["rows_in_store"] = scope.stats(c.id).rows
        out["ours_per_s"] = round(ours["requests"] / (ours["duration_us"] / 1e6))
        out["ours_p50_ms"], out["ours_p95_ms"], out["ours_p99_ms"] = (
            ours[k] / 1000 for k in ("p50_us", "p95_us", "p99_us")
        )
        out["ours_errors"] = ours["socket_errors"] + ours["non2xx"]
        # --- the baseline ---------------------------------------------------------------------
        env = {
            **os.environ,
            "BASELINE_REDIS_URL": srv["redis"],
            "BASELINE_PREFIX": srv["key_prefix"] + "base:",
            "BASELINE_POSTGRES_URL": srv["postgres"],
            "PYTHONPATH": repo,
        }
        # Twice: with the same server settings as ours (uvicorn on the asyncio loop), then on
        # uvicorn's defaults (uvloop when installed), which is what a team would get unasked.
        for campaign, (loop, key) in enumerate((("asyncio", "baseline"), ("auto", "baseline_uvloop")), start=1):
            port = _free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "bench.baseline.app:app", "--port", str(port)]
                + ["--log-level", "warning", "--loop", loop],
                env=env,
                cwd=repo,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(server)
            _wait_http(f"http://127.0.0.1:{port}/docs")
            _post_json(f"http://127.0.0.1:{port}/campaigns", {"id": campaign, "quantity": quantity})
            with psycopg.connect(srv["postgres"]) as conn:
                conn.execute("DROP TABLE IF EXISTS baseline_coupons")
                conn.commit()
            consumer = subprocess.Popen(
                [sys.executable, "-m", "bench.baseline.consumer", str(campaign), "--idle-exit-s", "3"],
                env=env,
                cwd=repo,
            )
            procs.append(consumer)
            base = _wrk(f"http://127.0.0.1:{port}/campaigns/{campaign}/issue", connections, duration_s, users, {})
            server.terminate()
            consumer.wait(timeout=300)
            with psycopg.connect(srv["postgres"]) as conn:
                out[f"{key}_rows_in_store"] = conn.execute("SELECT count(*) FROM baseline_coupons").fetchone()[0]
                conn.execute("DROP TABLE baseline_coupons")
            out[f"{key}_per_s"] = round(base["requests"] / (base["duration_us"] / 1e6))
            out[f"{key}_p50_ms"], out[f"{key}_p95_ms"], out[f"{key}_p99_ms"] = (
                base[k] / 1000 for k in ("p50_us", "p95_us", "p99_us")
            )
            out[f"{key}_errors"] = base["socket_errors"] + base["non2xx"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        _cleanup_prefix(srv["redis"], srv["key_prefix"])
    out["ratio"] = round(out["ours_per_s"] / out["baseline_per_s"], 2)
    out["ratio_to_uvloop_baseline"] = round(out["ours_per_s"] / out["baseline_uvloop_per_s"], 2)
    out["published"] = {
        "spring_before": {"rps": 177, "p95_ms": 4170},
        "spring_redis_queue": {"rps": 4300, "p95_ms": 225},
    }
    return out
