"""The ``couponcore`` command.

Exit codes: 0 success; 1 the run finished but a check failed; 2 bad usage;
3 a couponcore error (for example a server that cannot be reached).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="couponcore",
        description="First-come-first-served coupon drops and point wallets: a native core for Python.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 bad usage, 3 couponcore error.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser(
        "demo",
        help="run a flash sale and verify the store",
        description="Run a flash sale (default: 10,000 coupons, 200,000 requests from 100,000 users, "
        "500 concurrent virtual users) on the embedded engine, then read the store back and check it.",
    )
    d.add_argument("--quantity", type=_positive_int, default=10_000, help="coupons in the campaign (10000)")
    d.add_argument("--users", type=_positive_int, default=100_000, help="distinct users (100000)")
    d.add_argument("--requests", type=_positive_int, default=200_000, help="requests in all (200000)")
    d.add_argument("--concurrency", type=_positive_int, default=500, help="concurrent virtual users (500)")
    d.add_argument("--per-user-limit", type=_positive_int, default=1, help="coupons per user (1)")
    d.add_argument("--seed", type=int, default=42, help="random seed of the traffic (42)")
    d.add_argument("--path", default=None, help="SQLite file to use (default: a temporary file)")
    d.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    b = sub.add_parser(
        "bench",
        help="side-by-side benchmarks (JSON)",
        description="Run a benchmark of couponcore and its baseline side by side, print one JSON object.",
    )
    b.add_argument("name", choices=["all", *sorted(_bench_names())], help="which benchmark")
    b.add_argument("--json", action="store_true", help="print JSON (the only format; accepted for scripts)")
    return p


def _bench_names() -> list[str]:
    from .bench import BENCHMARKS

    return list(BENCHMARKS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from . import Error

    try:
        if args.command == "demo":
            from .demo import DemoConfig
            from .demo import main as demo_main

            if args.requests < args.users:
                print("couponcore demo: --requests must be at least --users", file=sys.stderr)
                return EXIT_USAGE
            cfg = DemoConfig(
                quantity=args.quantity,
                users=args.users,
                requests=args.requests,
                concurrency=args.concurrency,
                per_user_limit=args.per_user_limit,
                seed=args.seed,
                path=args.path,
            )
            return demo_main(cfg, args.json)
        if args.command == "bench":
            import json

            from .bench import BENCHMARKS

            names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
            for name in names:
                print(json.dumps(BENCHMARKS[name]()), flush=True)
            return EXIT_OK
    except Error as e:
        print(f"couponcore: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE
