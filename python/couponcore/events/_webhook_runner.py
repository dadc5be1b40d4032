"""Running webhooks off an engine's events: one consumer group and one thread per endpoint.

Each endpoint's thread reads its group ``webhook:<name>`` (only the endpoint's event types) from
``engine.events``, delivers each event with a :class:`WebhookSender`, and acknowledges it once it
is delivered; an event given up on goes to the group's dead letters through
``engine.events.dead_letter`` (which acknowledges it too). Events of one endpoint are delivered
one at a time in the order the group reads them, so a subject's events arrive in order.
``couponcore events webhooks --config FILE`` runs this until SIGTERM / SIGINT.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from ._webhook_delivery import DeadLetteredDelivery, WebhookMetrics, WebhookSender

if TYPE_CHECKING:  # webhooks.py imports this module at its end: no import back at run time
    from .webhooks import WebhookEndpoint

GROUP_PREFIX = "webhook:"


def group_of(endpoint: WebhookEndpoint) -> str:
    """The consumer group of an endpoint: ``webhook:<name>``."""
    return GROUP_PREFIX + endpoint.name


class EngineDeadLetters:
    """Dead letters of an endpoint into its group's (``engine.events.dead_letter``; it acks)."""

    def __init__(self, engine: Any, group: str) -> None:
        self._engine = engine
        self.group = group

    def dead_letter(self, delivery: DeadLetteredDelivery) -> None:
        self._engine.events.dead_letter(self.group, delivery.event, f"webhook {delivery.endpoint}: {delivery.reason}")


class WebhookRunner:
    """Delivers an engine's events to ``endpoints``; ``start()`` a thread per endpoint, ``stop()``
    and ``join()``. ``consumer`` names this process in each group (default: the events API's)."""

    def __init__(
        self,
        engine: Any,
        endpoints: Sequence[WebhookEndpoint],
        *,
        metrics: Optional[WebhookMetrics] = None,
        consumer: Optional[str] = None,
        block_ms: int = 500,
        batch: int = 100,
    ) -> None:
        self.engine = engine
        self.endpoints = list(endpoints)
        self.metrics = metrics if metrics is not None else WebhookMetrics()
        self._consumer = consumer
        self._block_ms = block_ms
        self._batch = batch
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        # Opened here, in the caller's thread: a bad group or type fails start-up, not a thread.
        self._streams = [
            engine.events.consume(
                group_of(ep), list(ep.event_types) or None, consumer=consumer, batch=batch, block_ms=block_ms
            )
            for ep in self.endpoints
        ]

    def start(self) -> WebhookRunner:
        for ep, stream in zip(self.endpoints, self._streams):
            t = threading.Thread(target=self._run, args=(ep, stream), name=f"webhook-{ep.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: Optional[float] = None) -> bool:
        """True once every endpoint's thread has ended."""
        for t in self._threads:
            t.join(timeout_s)
        return not any(t.is_alive() for t in self._threads)

    def run_once(self, endpoint_index: int = 0, block_ms: int = 0) -> int:
        """Deliver what one read of an endpoint's group returns, in this thread; returns how many
        events were settled (for scripts and tests)."""
        ep, stream = self.endpoints[endpoint_index], self._streams[endpoint_index]
        with WebhookSender(ep, EngineDeadLetters(self.engine, group_of(ep)), metrics=self.metrics) as sender:
            return self._deliver_batch(sender, stream.read(block_ms))

    def _run(self, ep: WebhookEndpoint, stream: Any) -> None:
        sink = EngineDeadLetters(self.engine, group_of(ep))
        try:
            with WebhookSender(ep, sink, metrics=self.metrics, stop=self._stop) as sender:
                while not self._stop.is_set():
                    self._deliver_batch(sender, stream.read(self._block_ms))
        except BaseException as e:  # reported by the command; the other endpoints go on
            self.errors.append(e)

    def _deliver_batch(self, sender: WebhookSender, batch: Sequence[Any]) -> int:
        settled = 0
        for event in batch:
            out = sender.deliver(event)
            if out.outcome == "stopped":
                break  # not acknowledged: delivered again after a restart
            if out.outcome == "delivered":
                event.ack()
            settled += 1
        return settled
