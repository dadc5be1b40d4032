"""Running webhooks off an engine's events: one consumer group per endpoint, read by one thread
and delivered by ``concurrency`` threads.

Each endpoint's reader thread reads its group ``webhook:<name>`` (only the endpoint's event types)
from ``engine.events`` and hands the events to a :class:`SubjectLanes`: one lane per subject, in
the order read (by ``sequence``). The endpoint's delivery threads each take the head of a lane no
other thread is delivering, deliver it with a :class:`WebhookSender`, acknowledge it once it is
delivered (``engine.events.ack``), and only then release the lane's next event. So at most
``concurrency`` deliveries are in flight, a subject's events reach the receiver one after another
in order, and a slow or retried subject holds up only its own lane. An event given up on goes to
the group's dead letters through ``engine.events.dead_letter`` (which acknowledges it too).
``couponcore events webhooks --config FILE`` runs this until SIGTERM / SIGINT.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from ._webhook_delivery import DeadLetteredDelivery, WebhookMetrics, WebhookSender

if TYPE_CHECKING:  # webhooks.py imports this module at its end: no import back at run time
    from .webhooks import WebhookEndpoint

GROUP_PREFIX = "webhook:"
#: Events read ahead per endpoint, at most (delivering, or waiting behind their subject's earlier
#: events): the reader waits beyond it, so a subject with more events than this in hand, all
#: waiting behind a slow one, would hold the endpoint up again.
IN_HAND_MAX = 1000


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


class SubjectLanes:
    """Events in hand for one endpoint, a FIFO lane per subject; a lane's head is handed to one
    deliverer at a time (:meth:`take`), its next event only after :meth:`done`. At most ``room``
    events are in hand: :meth:`wait_for_room` holds the reader back."""

    def __init__(self, room: int) -> None:
        self._cond = threading.Condition()
        self._lanes: dict[str, deque[Any]] = {}
        self._ready: deque[str] = deque()  # subjects whose head is free to deliver
        self._room = room
        self.in_hand = 0
        self.closed = False

    def put(self, events: Sequence[Any]) -> None:
        with self._cond:
            for event in events:
                subject = event.subject or event.id  # no subject: an order of its own
                lane = self._lanes.get(subject)
                if lane is None:
                    self._lanes[subject] = deque([event])
                    self._ready.append(subject)
                else:
                    lane.append(event)
                self.in_hand += 1
            self._cond.notify_all()

    def take(self) -> Optional[tuple[str, Any]]:
        """The next (subject, event) to deliver; None once closed."""
        with self._cond:
            while not self._ready and not self.closed:
                self._cond.wait()
            if self.closed:
                return None
            subject = self._ready.popleft()
            return subject, self._lanes[subject][0]

    def done(self, subject: str) -> None:
        """The lane's head is settled: release its next event."""
        with self._cond:
            lane = self._lanes[subject]
            lane.popleft()
            self.in_hand -= 1
            if lane:
                self._ready.append(subject)
            else:
                del self._lanes[subject]
            self._cond.notify_all()

    def wait_for_room(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.closed or self.in_hand < self._room, timeout_s) and not self.closed

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class WebhookRunner:
    """Delivers an engine's events to ``endpoints``; ``start()`` a reader thread and
    ``endpoint.concurrency`` delivery threads per endpoint, ``stop()`` and ``join()``.
    ``consumer`` names this process in each group (default: the events API's)."""

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
        self._lanes: list[SubjectLanes] = []
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
            lanes = SubjectLanes(room=max(IN_HAND_MAX, 2 * self._batch))
            self._lanes.append(lanes)
            targets = [(self._read, f"webhook-{ep.name}")]
            targets += [(self._deliver, f"webhook-{ep.name}-{i}") for i in range(ep.concurrency)]
            for target, name in targets:
                t = threading.Thread(target=target, args=(ep, stream, lanes), name=name, daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for lanes in self._lanes:
            lanes.close()

    def join(self, timeout_s: Optional[float] = None) -> bool:
        """True once every endpoint's threads have ended."""
        for t in self._threads:
            t.join(timeout_s)
        return not any(t.is_alive() for t in self._threads)

    def run_once(self, endpoint_index: int = 0, block_ms: int = 0) -> int:
        """Deliver what one read of an endpoint's group returns, in this thread, one event at a
        time; returns how many events were settled (for scripts and tests)."""
        ep, stream = self.endpoints[endpoint_index], self._streams[endpoint_index]
        settled = 0
        with WebhookSender(ep, EngineDeadLetters(self.engine, group_of(ep)), metrics=self.metrics) as sender:
            for event in stream.read(block_ms):
                if not self._settle(sender, ep, event):
                    break  # not acknowledged: delivered again after a restart
                settled += 1
        return settled

    def _fail(self, e: BaseException, lanes: SubjectLanes) -> None:
        """An endpoint's failure (reported by the command): its threads end, the others go on."""
        self.errors.append(e)
        lanes.close()

    def _read(self, ep: WebhookEndpoint, stream: Any, lanes: SubjectLanes) -> None:
        try:
            while not self._stop.is_set() and not lanes.closed:
                if lanes.wait_for_room(self._block_ms / 1000):
                    lanes.put(stream.read(self._block_ms))
        except BaseException as e:
            self._fail(e, lanes)

    def _deliver(self, ep: WebhookEndpoint, stream: Any, lanes: SubjectLanes) -> None:
        sink = EngineDeadLetters(self.engine, group_of(ep))
        try:
            with WebhookSender(ep, sink, metrics=self.metrics, stop=self._stop) as sender:
                while (got := lanes.take()) is not None:
                    subject, event = got
                    if not self._settle(sender, ep, event):
                        return  # stopped: the lane stays held, its events unacknowledged
                    lanes.done(subject)
        except BaseException as e:
            self._fail(e, lanes)

    def _settle(self, sender: WebhookSender, ep: WebhookEndpoint, event: Any) -> bool:
        """Delivers one event and acknowledges it; False when stopped (not acknowledged). The
        acknowledgement goes through engine.events, safe beside the reader's blocking read."""
        out = sender.deliver(event)
        if out.outcome == "stopped":
            return False
        if out.outcome == "delivered":
            self.engine.events.ack(group_of(ep), [event])
        return True
