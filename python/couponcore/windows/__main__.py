"""``python -m couponcore.windows``: the live windows' aggregator as a process of its own.

  couponcore windows --sqlite sale.db [--once] [--every-s 0.5]   (or python -m couponcore.windows)
  python -m couponcore.windows --redis URL --postgres DSN [--key-prefix cc:] [--once]

It folds the answer records into final windows (docs/windows.md) until stopped (SIGTERM /
Ctrl-C: the batch in hand is committed or not at all). More than one may run: each batch is
committed only if no other aggregator committed since it read the state, and in production only
the process holding the deployment's aggregator lock aggregates (the others wait and take over
when it ends; ``--once`` waits for the lock too; ``couponcore worker`` runs one, unless
``--no-windows``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Optional

from .. import _core
from . import open_parts
from ._aggregate import BATCH_RECORDS, LATENESS_MS_DEFAULT, Aggregator


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="couponcore windows", description="Aggregate the live windows.")
    ap.add_argument("--sqlite", help="the embedded engine's file")
    ap.add_argument("--redis", help="production: the Redis URL")
    ap.add_argument("--postgres", help="production: the PostgreSQL URL")
    ap.add_argument("--key-prefix", default="cc:")
    ap.add_argument("--once", action="store_true", help="consume what is there, then exit")
    ap.add_argument("--every-s", type=float, default=0.5, help="pause when there is nothing new")
    ap.add_argument("--batch", type=int, default=BATCH_RECORDS, help="records per commit")
    ap.add_argument("--lateness-ms", type=int, default=LATENESS_MS_DEFAULT)
    a = ap.parse_args(argv)
    if a.sqlite:
        store = ("sqlite", a.sqlite)
    elif a.redis and a.postgres:
        store = ("postgres", a.postgres)
    else:
        ap.error("give --sqlite, or --redis and --postgres")
    stop: list[int] = []
    agg: Optional[Aggregator] = None
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        source, sink = open_parts(store, a.redis, a.key_prefix)
        agg = Aggregator(source, sink, lateness_ms=a.lateness_ms, batch_records=a.batch)
        while not stop:
            if not sink.hold_lock():  # another process aggregates: wait for its lock (--once too)
                time.sleep(a.every_s)
                continue
            n = agg.run_once()
            if n == 0:
                if a.once:
                    break
                time.sleep(a.every_s)
    except KeyboardInterrupt:
        pass
    except _core.Error as e:
        print(f"couponcore windows: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    print(f"answers aggregated: {agg.answers if agg else 0}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
