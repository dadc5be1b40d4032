"""The aggregator's loop in a daemon thread: ``engine.windows.start()`` and ``couponcore worker``.

Each round it asks the store whether this process holds the lock (``hold_lock()``: PostgreSQL's advisory lock
per deployment, see ``_store``) and, if so, aggregates until the source has nothing new. A
process without it waits and asks again, so when the holder dies (its connection ends) a
standby takes over within one round.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from .. import _core

_log = logging.getLogger("couponcore.windows")


class Runner:
    def __init__(self, aggregate: Callable[[], int], hold_lock: Callable[[], bool], every_s: float) -> None:
        self._aggregate, self._hold_lock, self._every_s = aggregate, hold_lock, every_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.active = False  # this process holds the lock (it aggregates)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="couponcore-windows", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.active = self._hold_lock()
                if self.active:
                    self._aggregate()
            except _core.Error as e:  # the store or Redis is away: the next round retries
                _log.warning("live windows not aggregated: %s", e)

    def stop(self) -> None:
        """Stops after the batch in hand."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join()
        self.active = False
