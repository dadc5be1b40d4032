"""``couponcore events webhooks --config FILE``: deliver the events to the configured webhooks.
``couponcore events prune --path FILE``: the embedded event log's retention (docs/events.md)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any, Callable


def add_parser(sub: Any, servers: Callable[..., None]) -> None:
    ev = sub.add_parser("events", help="domain events: webhooks, prune", description="couponcore's domain events.")
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
    p = evsub.add_parser(
        "prune",
        help="delete old events every consumer group acknowledged (the embedded log's retention)",
        description="Retention of an embedded deployment's event log: delete the events older than "
        "--retention-days that every consumer group reading their type has acknowledged, and, with "
        "--hard-cap-days, every event older than that (docs/events.md). Prints the result as JSON. "
        "The engine must not be open elsewhere (the file's lock); a running app schedules the "
        "prune_events job instead. Production has no log to prune (supported: false).",
    )
    p.add_argument("--path", default=None, help="SQLite file of an embedded deployment")
    p.add_argument("--retention-days", type=float, default=7.0, help="keep acknowledged events this long (7)")
    p.add_argument("--hard-cap-days", type=float, default=None, help="delete any event older than this (none)")
    p.add_argument("--chunk-rows", type=int, default=1000, help="events per transaction (1000)")
    servers(p, "the production deployment (nothing to prune there)")


def _open(args: argparse.Namespace, command: str) -> Any:
    """The engine of --path, or of --redis and --postgres; None (after a usage message) otherwise."""
    from .._engine import open as open_engine

    if (args.redis is None) != (args.postgres is None) or (args.redis is None) == (args.path is None):
        print(f"couponcore events {command}: give --redis and --postgres, or --path", file=sys.stderr)
        return None
    if args.redis is not None:
        return open_engine(redis=args.redis, postgres=args.postgres, key_prefix=args.key_prefix)
    return open_engine(args.path)


def run(args: argparse.Namespace) -> int:
    if args.events_command == "prune":
        return _prune(args)
    from .webhooks import WebhookRunner, load_config

    endpoints = load_config(args.config)
    engine = _open(args, "webhooks")
    if engine is None:
        return 2
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


def _prune(args: argparse.Namespace) -> int:
    engine = _open(args, "prune")
    if engine is None:
        return 2
    try:
        hard_cap = None if args.hard_cap_days is None else args.hard_cap_days * 86_400
        r = engine.events.prune(
            retention_s=args.retention_days * 86_400, hard_cap_s=hard_cap, chunk_rows=args.chunk_rows
        )
        print(json.dumps(r), flush=True)
        return 0
    finally:
        engine.close()
