"""Delivering events to one webhook endpoint: httpx, retries with backoff, dead letters, metrics.

:class:`WebhookSender` ``.deliver(event)`` posts the event (CloudEvents structured mode,
``application/cloudevents+json``, the bytes exactly as signed) and returns only when the event is
settled: ``delivered`` (a 2xx) or ``dead_lettered`` (after ``max_attempts``, or at once on an
answer that a retry cannot change, such as 400), or ``stopped`` when the sender was stopped
during a wait (the caller does not ack: the event is delivered again after a restart).

Retried: network errors and timeouts, 408, 429 and 5xx. The wait is the endpoint's exponential
backoff with jitter, or ``Retry-After`` (seconds or an HTTP date) when the receiver sent a longer one.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol

from .._core import InvalidArgument
from ._webhook_net import guarded_transport, log

if TYPE_CHECKING:  # webhooks.py imports this module at its end: no import back at run time
    from .webhooks import WebhookEndpoint

#: Outcomes of a delivery (the label of couponcore_webhook_deliveries_total).
OUTCOMES = ("delivered", "dead_lettered", "stopped")
#: Results of one attempt (the label of couponcore_webhook_attempts_total).
ATTEMPT_RESULTS = ("2xx", "retryable_status", "rejected_status", "network_error")

_RETRYABLE = frozenset({408, 429})
_CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True)
class DeliveryOutcome:
    endpoint: str
    event_id: str
    outcome: str  # one of OUTCOMES
    attempts: int
    status: Optional[int]  # the last HTTP status (None: no answer)
    reason: str  # "" when delivered; else why it was not


@dataclass(frozen=True)
class DeadLetteredDelivery:
    """An event given up on for one endpoint, as a sink receives it."""

    endpoint: str
    event_id: str
    body: bytes = field(repr=False)
    reason: str  # e.g. "HTTP 502 after 8 attempt(s)", "HTTP 400 (not retried)"
    attempts: int
    status: Optional[int]  # the last HTTP status (None: no answer)
    at: float  # Unix time
    event: Any = field(default=None, repr=False, compare=False)  # what deliver() was given


class DeadLetterSink(Protocol):
    """Where events that could not be delivered go: engine.events' dead letters in a deployment
    (EngineDeadLetters), or any object with this method."""

    def dead_letter(self, delivery: DeadLetteredDelivery) -> None: ...


class MemoryDeadLetters:
    """A dead-letter sink in memory (tests, and embedding code that handles them itself)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[DeadLetteredDelivery] = []

    def dead_letter(self, delivery: DeadLetteredDelivery) -> None:
        with self._lock:
            self.items.append(delivery)


class JsonlDeadLetters:
    """A dead-letter sink appending one JSON line per event to a file (flushed and fsynced)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def dead_letter(self, delivery: DeadLetteredDelivery) -> None:
        record = {k: v for k, v in asdict(delivery).items() if k not in ("body", "event")}
        record["event"] = json.loads(delivery.body)
        line = json.dumps(record, ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


class WebhookMetrics:
    """Counters of deliveries by outcome and of attempts by result, per endpoint (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.deliveries: dict[tuple[str, str], int] = {}
        self.attempts: dict[tuple[str, str], int] = {}

    def _add(self, table: dict[tuple[str, str], int], key: tuple[str, str]) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{"deliveries": {endpoint: {outcome: n}}, "attempts": {endpoint: {result: n}}}``."""
        with self._lock:
            out: dict[str, dict[str, dict[str, int]]] = {"deliveries": {}, "attempts": {}}
            for name, table in (("deliveries", self.deliveries), ("attempts", self.attempts)):
                for (ep, label), n in sorted(table.items()):
                    out[name].setdefault(ep, {})[label] = n
            return out

    def render(self) -> str:
        """Prometheus text exposition of both counters."""
        lines = []
        for metric, label, table, what in (
            ("couponcore_webhook_deliveries_total", "outcome", self.deliveries, "events settled, by outcome"),
            ("couponcore_webhook_attempts_total", "result", self.attempts, "HTTP attempts, by result"),
        ):
            lines += [f"# HELP {metric} Webhook {what}.", f"# TYPE {metric} counter"]
            with self._lock:
                items = sorted(table.items())
            lines += [f'{metric}{{endpoint="{ep}",{label}="{lab}"}} {n}' for (ep, lab), n in items]
        return "\n".join(lines) + "\n"


def retry_after_s(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date); None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class WebhookSender:
    """Delivers events to one endpoint, one at a time (use one sender per thread)."""

    def __init__(
        self,
        endpoint: WebhookEndpoint,
        dead_letters: DeadLetterSink,
        *,
        metrics: Optional[WebhookMetrics] = None,
        client: Any = None,
        stop: Optional[threading.Event] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - the [webhooks] extra
            raise InvalidArgument(f"webhooks need httpx: pip install 'couponcore[webhooks]' ({e})") from None
        from .webhooks import signature_headers

        self._httpx = httpx
        self._signature_headers = signature_headers
        self.endpoint = endpoint
        self.dead_letters = dead_letters
        self.metrics = metrics if metrics is not None else WebhookMetrics()
        self._own_client = client is None
        if client is None and endpoint.allow_private_networks:
            client = httpx.Client(timeout=endpoint.timeout_s, follow_redirects=False)
        elif client is None:  # connects only to public addresses, checked at each connection
            transport = guarded_transport(endpoint.name)
            client = httpx.Client(
                timeout=endpoint.timeout_s, follow_redirects=False, transport=transport, trust_env=False
            )
        self._client = client
        self.stop_event = stop if stop is not None else threading.Event()
        self._rng = rng if rng is not None else random.Random()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Interrupt a wait between attempts; deliver() then returns ``stopped``."""
        self.stop_event.set()

    def deliver(self, event: Any) -> DeliveryOutcome:
        body, event_id = _body_and_id(event)
        ep = self.endpoint
        status: Optional[int] = None
        reason = ""
        for attempt in range(1, ep.max_attempts + 1):
            wait, status, reason, done = self._attempt(body, event_id)
            if done:
                return self._settle(event_id, "delivered", attempt, status, "")
            if wait is None:  # an answer a retry cannot change
                return self._dead_letter(event, event_id, body, attempt, status, reason + " (not retried)")
            if attempt == ep.max_attempts:
                break
            wait = max(wait, ep.backoff_s(attempt, self._rng.random()))
            if self.stop_event.wait(wait):
                return self._settle(event_id, "stopped", attempt, status, "stopped while waiting to retry: " + reason)
        reason = f"{reason} after {ep.max_attempts} attempt(s)"
        return self._dead_letter(event, event_id, body, ep.max_attempts, status, reason)

    def _attempt(self, body: bytes, event_id: str) -> tuple[Optional[float], Optional[int], str, bool]:
        """One POST: (the minimum wait before a retry or None for no retry, status, reason, delivered)."""
        ep = self.endpoint
        headers = {"content-type": _CONTENT_TYPE}
        headers.update(self._signature_headers(ep.signing_secrets, event_id, body))
        try:
            # Streamed and closed unread: only the status and headers matter, and a receiver's
            # answer body (of any size) is never loaded.
            with self._client.stream("POST", ep.url, content=body, headers=headers, timeout=ep.timeout_s) as r:
                status, retry_after = r.status_code, r.headers.get("retry-after")
        except self._httpx.HTTPError as e:  # connection refused, reset, timeout, a refused address, ...
            self.metrics._add(self.metrics.attempts, (ep.name, "network_error"))
            log.info("webhook %s: event %s: %s: %s", ep.name, event_id, type(e).__name__, e)
            return 0.0, None, f"network error: {type(e).__name__}: {e}", False
        if 200 <= status < 300:
            self.metrics._add(self.metrics.attempts, (ep.name, "2xx"))
            return None, status, "", True
        reason = f"HTTP {status}"
        if status in _RETRYABLE or status >= 500:
            self.metrics._add(self.metrics.attempts, (ep.name, "retryable_status"))
            asked = retry_after_s(retry_after)
            wait = 0.0 if asked is None else min(asked, ep.retry_after_max_s)
            return wait, status, reason if asked is None else f"{reason} (Retry-After {asked:g} s)", False
        self.metrics._add(self.metrics.attempts, (ep.name, "rejected_status"))
        return None, status, reason, False

    def _dead_letter(
        self, event: Any, event_id: str, body: bytes, attempts: int, status: Optional[int], reason: str
    ) -> DeliveryOutcome:
        self.dead_letters.dead_letter(
            DeadLetteredDelivery(self.endpoint.name, event_id, body, reason, attempts, status, time.time(), event)
        )
        return self._settle(event_id, "dead_lettered", attempts, status, reason)

    def _settle(
        self, event_id: str, outcome: str, attempts: int, status: Optional[int], reason: str
    ) -> DeliveryOutcome:
        self.metrics._add(self.metrics.deliveries, (self.endpoint.name, outcome))
        return DeliveryOutcome(self.endpoint.name, event_id, outcome, attempts, status, reason)


def _body_and_id(event: Any) -> tuple[bytes, str]:
    """The request body (stored JSON bytes are sent as they are) and the event's id. ``event``: an
    event from ``engine.events.consume`` (its ``raw`` JSON), a mapping, or JSON as bytes / str."""
    raw = getattr(event, "raw", None)
    if isinstance(raw, (bytes, bytearray)) and raw:
        event = bytes(raw)
    if isinstance(event, Mapping):
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        parsed: Any = event
    else:
        body = event.encode("utf-8") if isinstance(event, str) else bytes(event)
        try:
            parsed = json.loads(body)
        except ValueError:
            raise InvalidArgument("a webhook event is a JSON object") from None
    event_id = parsed.get("id") if isinstance(parsed, Mapping) else None
    if not isinstance(event_id, str) or not event_id:
        raise InvalidArgument("a webhook event needs its CloudEvent id")
    return body, event_id
