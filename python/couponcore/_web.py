"""What the web integrations (couponcore.fastapi, couponcore.django) share: the mapping of
couponcore errors onto HTTP statuses, the one JSON error shape, and JSON values of results.

The JSON of a value type is derived from its one definition (couponcore._types): the fields
of :func:`json_fields`, the same list FastAPI's response models are made from."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import threading
import time
from typing import Any, Optional

from . import _core

STATUS_BY_ERROR = {
    "InvalidArgument": 422,
    "InvalidType": 422,
    "Unauthenticated": 401,
    "NotFound": 404,
    "Conflict": 409,
    "InsufficientFunds": 409,
    "Unavailable": 503,
    "Closed": 503,
    "InternalError": 500,
}


def error_status(exc: _core.Error) -> int:
    return STATUS_BY_ERROR.get(type(exc).__name__, 500)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


_ISSUE_RESULT_FIELDS = _core.fields("IssueResult")


def json_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a value type's JSON (and HTTP schema): every field but the secrets, which
    are the fields left out of repr (like an API key)."""
    return [f for f in dataclasses.fields(cls) if f.repr]


def to_json(value: Any) -> Any:
    """couponcore's dataclasses, datetimes, enums and issue results as JSON values. Secrets
    (fields left out of repr, like an API key) are left out here too."""
    if isinstance(value, _core.IssueResult):
        return {name: to_json(getattr(value, name)) for name in _ISSUE_RESULT_FIELDS}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in json_fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


# ---- rate limits at the HTTP layer (docs/rate-limits.md) -----------------------------------


def issue_status_code(result: Any) -> tuple[int, dict[str, str]]:
    """The HTTP status and headers of an issue answer: 429 with ``Retry-After`` (seconds, rounded
    up) for RATE_LIMITED, else 200."""
    ms = getattr(result, "retry_after_ms", None)
    if ms:
        return 429, {"Retry-After": str(retry_after_s(ms / 1000.0))}
    return 200, {}


def retry_after_s(seconds: float) -> int:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


class AddressLimiter:
    """At most ``limit`` issue requests per client address per fixed window of ``window_s``
    seconds. With a production engine (``engine``) the count is the deployment's: kept in Redis
    under the engine's key prefix (one Lua call per request, windows on the Redis clock), so every
    app process shares one budget per address. Otherwise (no engine, or an embedded one) it is
    this process's: thread-safe, memory bounded by the addresses seen in one window (dropped when
    it ends).

    The address is the socket's peer, which behind a reverse proxy or load balancer is the
    proxy's: then name the header your proxy sets (``client_address_header``, e.g.
    ``"X-Forwarded-For"``); its LAST comma-separated entry is used (the one your proxy appended;
    the earlier ones are whatever the client sent). Only configure it behind a proxy that sets it,
    or any client can pick its own address."""

    def __init__(
        self, limit: int, window_s: float = 1.0, client_address_header: Optional[str] = None, engine: Any = None
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1_000_000:
            raise _core.InvalidArgument(f"address_rate_limit must be 0..1,000,000 requests per window, got {limit!r}")
        if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not 0.01 <= window_s <= 3600:
            raise _core.InvalidArgument(f"address_rate_window_s must be 0.01..3600 seconds, got {window_s!r}")
        self.limit = limit
        self.window_s = float(window_s)
        self.header = client_address_header.lower() if client_address_header else None
        # The deployment's count (production); None: counted in this process.
        self._shared = engine._core if engine is not None and engine.kind == "production" else None
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}

    @property
    def shared(self) -> bool:
        """True when the count is the deployment's (in Redis): then refuse() makes a round trip."""
        return self._shared is not None

    def address(self, peer: Optional[str], header_value: Optional[str]) -> str:
        if self.header and header_value:
            address = header_value.split(",")[-1].strip() or (peer or "")
        else:
            address = peer or ""
        return address[:_ADDRESS_CHARS_MAX]

    def refuse(self, address: str, now: Optional[float] = None) -> Optional[int]:
        """None when the request is admitted (and counted), else the Retry-After seconds. A
        shared count's Redis failure raises couponcore.Unavailable (HTTP 503)."""
        if self.limit == 0:
            return None
        if self._shared is not None:  # on the Redis clock: ``now`` is for the in-process count
            ms = self._shared.count_address(address, self.limit, max(10, round(self.window_s * 1000)))
            return retry_after_s(ms / 1000.0) if ms else None
        t = time.time() if now is None else now
        window = int(t // self.window_s)
        with self._lock:
            if window != self._window:
                self._window = window
                self._counts = {}
            n = self._counts.get(address, 0)
            if n >= self.limit:
                return retry_after_s((window + 1) * self.window_s - t)
            self._counts[address] = n + 1
        return None


# An IPv6 address with a zone fits; anything longer is cut (64 characters are at most 256 bytes
# of UTF-8, Engine.count_address's bound).
_ADDRESS_CHARS_MAX = 64


def address_limited_body(retry_s: int) -> dict[str, Any]:
    return error_body("RateLimited", f"too many requests from this address; retry after {retry_s} s")
