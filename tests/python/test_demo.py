"""The main job: `couponcore demo`, on a small run."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_json_small_run() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "couponcore",
            "demo",
            "--json",
            "--quantity",
            "500",
            "--users",
            "2000",
            "--requests",
            "5000",
            "--concurrency",
            "50",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    for key in (
        "requests",
        "issued",
        "sold_out",
        "already_issued",
        "rows_in_store",
        "distinct_users",
        "max_seq",
        "decisions_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    ):
        assert key in s
    assert s["requests"] == 5000
    assert s["rows_in_store"] == 500 and s["distinct_users"] == 500 and s["max_seq"] == 500
    assert s["issued_distinct_requests"] == 500
    assert s["issued"] + s["sold_out"] + s["already_issued"] == 5000
    assert s["ok"] is True


def test_demo_table_and_usage_errors() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "couponcore",
            "demo",
            "--quantity",
            "50",
            "--users",
            "200",
            "--requests",
            "300",
            "--concurrency",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "rows == quantity" in out.stdout and "FAILED" not in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "couponcore", "demo", "--quantity", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2
