"""Issuance latency during a large reconcile vs quiet, against whichever couponcore is installed.

    COUPONCORE_BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1/cc_bench \\
        .venv/bin/python bench/reconcile_load.py [--grants N] [--threads T] ...

The benchmark itself is ``bench_reconcile`` in python/couponcore/_bench_reconcile.py (``python -m couponcore
bench reconcile`` on a build that has it). This script loads that file from this checkout as a
module of the *installed* couponcore package, so the same benchmark runs against an older build
whose own bench module predates it (it uses only the public API: ``open``, ``issue``,
``issue_many``, ``reconcile``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import couponcore

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_PY = os.path.join(HERE, os.pardir, "python", "couponcore", "_bench_reconcile.py")


def _load_bench() -> object:
    spec = importlib.util.spec_from_file_location("couponcore._bench_checkout", BENCH_PY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grants", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--fill-budget-s", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--quiet-s", type=float, default=10.0)
    ap.add_argument("--per-thread-max", type=int, default=100_000)
    ap.add_argument("--control-probe", action="store_true", help="also time stats() calls during the reconcile")
    args = ap.parse_args()
    bench = _load_bench()
    out = bench.bench_reconcile(  # type: ignore[attr-defined]
        grants=args.grants,
        batch=args.batch,
        fill_budget_s=args.fill_budget_s,
        threads=args.threads,
        quiet_s=args.quiet_s,
        per_thread_max=args.per_thread_max,
        control_probe=args.control_probe,
    )
    out["couponcore"] = os.path.dirname(couponcore.__file__)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
