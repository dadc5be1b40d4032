"""``couponcore events webhooks --config FILE``: deliver the events to the configured webhooks."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any, Callable


def add_parser(sub: Any, servers: Callable[..., None]) -> None:
    ev = sub.add_parser("events", help="domain events: webhooks", description="couponcore's domain events.")
    evsub = ev.add_subparsers(dest="events_command", metavar="EVENTS_COMMAND")
    evsub.required = True
    w = evsub.add_parser(
        "webhooks",
        help="deliver events to HTTP webhooks (signed, retried, dead-lettered)",
        description="Deliver the deployment's events to the webhooks of a JSON config file "
        '({"webhooks": [{"name", "url", "secret_env", "event_types", "max_attempts", ...}]}, '
        "docs/webhooks.md): one consumer group webhook:<name> per endpoint. Runs until SIGTERM or SIGINT.",
    )
    w.add_argument("--config", required=True, help="the JSON config file")
    w.add_argument("--path", default=None, help="SQLite file of an embedded deployment")
    w.add_argument("--consumer-name", default=None, help="this process's name in each group (default host-pid)")
    w.add_argument("--report-s", type=float, default=10.0, help="print the counters every this many seconds (0: never)")
    w.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics at GET /metrics on this port"
    )
    w.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (127.0.0.1)")
    servers(w, "the production deployment whose events to deliver")


def run(args: argparse.Namespace) -> int:
    from .._engine import open as open_engine
    from .webhooks import WebhookRunner, load_config

    endpoints = load_config(args.config)
    if (args.redis is None) != (args.postgres is None) or (args.redis is None) == (args.path is None):
        print("couponcore events webhooks: give --redis and --postgres, or --path", file=sys.stderr)
        return 2
    if args.redis is not None:
        engine = open_engine(redis=args.redis, postgres=args.postgres, key_prefix=args.key_prefix)
    else:
        engine = open_engine(args.path)
    server = None
    try:
        runner = WebhookRunner(engine, endpoints, consumer=args.consumer_name)
        if args.metrics_port is not None:
            from ..metrics_http import serve_metrics

            server = serve_metrics(runner.metrics.render, host=args.metrics_host, port=args.metrics_port)
            print(f"couponcore events webhooks: metrics at {server.url}", file=sys.stderr, flush=True)

        def on_signal(signum: int, _frame: object) -> None:
            print(f"couponcore events webhooks: {signal.Signals(signum).name}, stopping", file=sys.stderr)
            runner.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        runner.start()
        names = ", ".join(e.name for e in endpoints)
        print(f"couponcore events webhooks: delivering to {names}", file=sys.stderr, flush=True)
        last = time.monotonic()
        while not runner.join(0.2):
            if args.report_s > 0 and time.monotonic() - last >= args.report_s:
                last = time.monotonic()
                print(json.dumps(runner.metrics.snapshot()), file=sys.stderr, flush=True)
        print(json.dumps(runner.metrics.snapshot()), flush=True)
        for e in runner.errors:
            print(f"couponcore events webhooks: {type(e).__name__}: {e}", file=sys.stderr)
        return 3 if runner.errors else 0
    finally:
        if server is not None:
            server.close()
        engine.close()
