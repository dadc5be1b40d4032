"""HTTP webhooks for couponcore's events: endpoint configuration, URL checks, Standard Webhooks signing
and the receiver's verify function. Delivery (httpx, retries, dead letters) is in
:mod:`couponcore.events._webhook_delivery`, re-exported here.

Signing follows the Standard Webhooks specification (https://www.standardwebhooks.com/): every
request carries ``webhook-id`` (the event's id: the same on every retry, so a receiver dedupes by
it), ``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature`` (``v1,<base64 of
HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``, several space-separated during a key rotation).
The secret is ``whsec_`` + base64 of 24..64 random bytes; the HMAC key is those bytes.

A receiver in Python::

    from couponcore.events.webhooks import verify
    verify(secret, request.headers, raw_body)   # WebhookVerificationError when not authentic
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from .._core import InvalidArgument, Unauthenticated
from ._schema import EVENT_TYPES
from ._webhook_net import check_literal_host, refused_kind

SECRET_PREFIX = "whsec_"
SECRET_BYTES_MIN = 24
SECRET_BYTES_MAX = 64
URL_LENGTH_MAX = 2048
DEFAULT_TOLERANCE_S = 300  # the Standard Webhooks recommendation: five minutes either way
NAME_LENGTH_MAX = 56  # the consumer group is webhook:<name>, 64 characters at most
CONCURRENCY_MAX = 64  # deliveries in flight per endpoint


class WebhookVerificationError(Unauthenticated):
    """A webhook request that is not authentic: a header missing, a timestamp out of tolerance, or no
    signature that matches (answer it with 401 and do not act on it)."""


# ---- secrets and URLs -------------------------------------------------------------------------


def generate_secret(nbytes: int = 32) -> str:
    """A new endpoint secret: ``whsec_`` + base64 of ``nbytes`` random bytes (24..64)."""
    if not SECRET_BYTES_MIN <= nbytes <= SECRET_BYTES_MAX:
        raise InvalidArgument(f"a secret has {SECRET_BYTES_MIN}..{SECRET_BYTES_MAX} bytes, not {nbytes}")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; InvalidArgument for anything else."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidArgument("a webhook secret is 'whsec_' + base64 (couponcore.events.webhooks.generate_secret())")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("the webhook secret after 'whsec_' is not base64") from None
    if not SECRET_BYTES_MIN <= len(key) <= SECRET_BYTES_MAX:
        raise InvalidArgument(f"a webhook secret holds {SECRET_BYTES_MIN}..{SECRET_BYTES_MAX} bytes, not {len(key)}")
    return key


def validate_url(url: str) -> str:
    """``url`` if it is a webhook URL couponcore will call, else InvalidArgument: http or https only,
    a host, no user name or password in it, no fragment, a valid port, at most URL_LENGTH_MAX
    characters, no whitespace or control characters."""
    if not isinstance(url, str):
        raise InvalidArgument(f"a webhook URL is a string, not {type(url).__name__}")
    if not url or len(url) > URL_LENGTH_MAX:
        raise InvalidArgument(f"a webhook URL has 1..{URL_LENGTH_MAX} characters, not {len(url)}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidArgument("a webhook URL has no whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as e:
        raise InvalidArgument(f"webhook URL {url!r}: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidArgument(f"webhook URL {url!r}: the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise InvalidArgument(f"webhook URL {url!r} has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidArgument("a webhook URL carries no user name or password (sign with the secret instead)")
    if parts.fragment or url.endswith("#"):
        raise InvalidArgument(f"webhook URL {url!r}: no fragment (#...)")
    if port == 0:
        raise InvalidArgument(f"webhook URL {url!r}: port 0")
    return url


# ---- endpoint configuration -------------------------------------------------------------------


def _positive(name: str, value: Any, *, whole: bool = False, most: float = math.inf) -> None:
    ok_type = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (0 < value <= most) or value != value:
        kind = "a whole number" if whole else "a number"
        raise InvalidArgument(f"webhook {name} must be {kind} in (0, {most:g}], not {value!r}")


@dataclass(frozen=True)
class WebhookEndpoint:
    """One receiver. ``event_types`` empty: every type. Attempts: the first delivery and its retries,
    ``max_attempts`` in all; then the event is dead-lettered. The wait before retry n (n >= 1) is
    ``min(backoff_max_s, backoff_initial_s * 2**(n-1))`` with equal jitter (half fixed, half random),
    or the receiver's ``Retry-After`` when that is longer (capped at ``retry_after_max_s``)."""

    name: str
    url: str
    secret: str = field(repr=False)
    event_types: tuple[str, ...] = ()
    max_attempts: int = 8
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    retry_after_max_s: float = 3600.0
    timeout_s: float = 10.0
    #: while rotating: the old secret(s), still signed with (one signature each), until every
    #: receiver checks the new one; then drop them
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: deliveries in flight at once (1..64); one subject's events still go one after another
    concurrency: int = 4
    #: allow loopback, private, link-local addresses (a receiver inside your network; tests)
    allow_private_networks: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > NAME_LENGTH_MAX:
            raise InvalidArgument(f"a webhook name has 1..{NAME_LENGTH_MAX} characters: {self.name!r}")
        if not all(c.isalnum() or c in "-_." for c in self.name):
            raise InvalidArgument(f"a webhook name has letters, digits, '-', '_' and '.' only: {self.name!r}")
        validate_url(self.url)
        if not isinstance(self.allow_private_networks, bool):
            raise InvalidArgument(f"webhook {self.name}: allow_private_networks is true or false")
        if not self.allow_private_networks:
            check_literal_host(self.name, self.url, urlsplit(self.url).hostname or "")
        secret_key(self.secret)
        if isinstance(self.previous_secrets, str):
            raise InvalidArgument("previous_secrets is a list of secrets")
        object.__setattr__(self, "previous_secrets", tuple(self.previous_secrets))
        for old in self.previous_secrets:
            secret_key(old)
        types = (self.event_types,) if isinstance(self.event_types, str) else tuple(self.event_types)
        for t in types:
            if t not in EVENT_TYPES:
                raise InvalidArgument(f"webhook {self.name}: unknown event type {t!r}; known: {', '.join(EVENT_TYPES)}")
        object.__setattr__(self, "event_types", types)
        _positive("max_attempts", self.max_attempts, whole=True, most=1000)
        _positive("backoff_initial_s", self.backoff_initial_s, most=86400)
        _positive("backoff_max_s", self.backoff_max_s, most=86400)
        _positive("retry_after_max_s", self.retry_after_max_s, most=86400)
        _positive("timeout_s", self.timeout_s, most=600)
        _positive("concurrency", self.concurrency, whole=True, most=CONCURRENCY_MAX)
        if self.backoff_max_s < self.backoff_initial_s:
            raise InvalidArgument("webhook backoff_max_s must be at least backoff_initial_s")

    @property
    def signing_secrets(self) -> tuple[str, ...]:
        return (self.secret, *self.previous_secrets)

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def backoff_s(self, retry: int, rand: float) -> float:
        """The wait before retry ``retry`` (1, 2, ...), ``rand`` uniform in [0, 1)."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(retry - 1, 60))
        return base / 2 + base / 2 * rand

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None) -> WebhookEndpoint:
        """From one entry of a config file. The secret is ``secret`` or, better, ``secret_env``: the
        name of an environment variable holding it (likewise ``previous_secrets`` /
        ``previous_secrets_env``, lists)."""
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"a webhook entry is an object, not {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__} | {"secret_env", "previous_secrets_env"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(f"webhook entry: unknown key(s) {', '.join(unknown)}")
        args = dict(d)
        env = os.environ if environ is None else environ

        def from_env(name: Any) -> str:
            value = env.get(name) if isinstance(name, str) else None
            if value is None:
                raise InvalidArgument(f"webhook entry: environment variable {name} is not set")
            return value

        for plain, via_env in (("secret", "secret_env"), ("previous_secrets", "previous_secrets_env")):
            if via_env in args:
                if plain in args:
                    raise InvalidArgument(f"webhook entry: give {plain} or {via_env}, not both")
                names = args.pop(via_env)
                if plain == "previous_secrets" and not isinstance(names, list):
                    raise InvalidArgument("webhook entry: previous_secrets_env is a list of variable names")
                args[plain] = [from_env(n) for n in names] if isinstance(names, list) else from_env(names)
        for required in ("name", "url", "secret"):
            if required not in args:
                raise InvalidArgument(f"webhook entry: {required} is required")
        for listed in ("event_types", "previous_secrets"):
            if listed in args and not isinstance(args[listed], (list, tuple)):
                raise InvalidArgument(f"webhook entry: {listed} is a list")
        return cls(**args)


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> list[WebhookEndpoint]:
    """The endpoints of a JSON config file: ``{"webhooks": [{"name", "url", "secret_env", ...}]}``
    (docs/webhooks.md). Names must be unique: each is the consumer group's name. A top-level
    ``"allow_private_networks": true`` is every entry's default (an entry may still say false)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise InvalidArgument(f"webhook config {path}: {e.strerror}") from None
    except ValueError as e:
        raise InvalidArgument(f"webhook config {path}: not JSON: {e}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("webhooks"), list) or not doc["webhooks"]:
        raise InvalidArgument(f'webhook config {path}: expected {{"webhooks": [...]}} with at least one entry')
    unknown = sorted(set(doc) - {"webhooks", "allow_private_networks"})
    if unknown:
        raise InvalidArgument(f"webhook config {path}: unknown key(s) {', '.join(unknown)}")
    private = doc.get("allow_private_networks", False)
    if not isinstance(private, bool):
        raise InvalidArgument(f"webhook config {path}: allow_private_networks is true or false")
    entries = [{"allow_private_networks": private, **e} if isinstance(e, Mapping) else e for e in doc["webhooks"]]
    endpoints = [WebhookEndpoint.from_dict(e, environ) for e in entries]
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"webhook config {path}: names must be unique: {names}")
    return endpoints


# ---- signing and verifying --------------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "<msg_id>.<timestamp>.<body>">``."""
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + bytes(body), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_headers(
    secret: Union[str, Iterable[str]], msg_id: str, body: bytes, timestamp: Optional[int] = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt. Several secrets (a rotation): one
    signature each, space-separated."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    keys = [secret] if isinstance(secret, str) else list(secret)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign(s, msg_id, ts, body) for s in keys),
    }


def verify(
    secret: Union[str, Iterable[str]],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: Optional[float] = None,
) -> str:
    """Check a received webhook; returns its ``webhook-id``. ``headers``: any mapping (names compared
    without case); ``body``: the raw bytes as received. Raises WebhookVerificationError when a header
    is missing, the timestamp is more than ``tolerance_s`` from ``now`` (replays), or no ``v1``
    signature matches one of the secrets (compared in constant time)."""
    lower = {k.lower(): v for k, v in headers.items()}
    for h in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lower.get(h):
            raise WebhookVerificationError(f"missing header {h}")
    msg_id, ts_text = lower["webhook-id"], lower["webhook-timestamp"]
    if not ts_text.isdigit() or len(ts_text) > 12:
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds")
    ts = int(ts_text)
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise WebhookVerificationError(f"webhook-timestamp {ts} is more than {tolerance_s:g} s from now")
    keys = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(s, msg_id, ts, body).encode() for s in keys]
    matched = False
    for candidate in lower["webhook-signature"].split(" "):
        if not candidate.startswith("v1,"):
            continue  # other schemes (v1a: asymmetric) are not ours
        for e in expected:
            matched |= hmac.compare_digest(candidate.encode(), e)
    if not matched:
        raise WebhookVerificationError("no webhook-signature matches")
    return msg_id


from ._webhook_delivery import (  # noqa: E402  (delivery builds on the definitions above)
    DeadLetteredDelivery,
    DeadLetterSink,
    DeliveryOutcome,
    JsonlDeadLetters,
    MemoryDeadLetters,
    WebhookMetrics,
    WebhookSender,
)
from ._webhook_runner import EngineDeadLetters, WebhookRunner, group_of  # noqa: E402

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "DeadLetterSink",
    "DeadLetteredDelivery",
    "DeliveryOutcome",
    "EngineDeadLetters",
    "JsonlDeadLetters",
    "MemoryDeadLetters",
    "WebhookEndpoint",
    "WebhookMetrics",
    "WebhookRunner",
    "WebhookSender",
    "WebhookVerificationError",
    "generate_secret",
    "group_of",
    "load_config",
    "refused_kind",
    "secret_key",
    "sign",
    "signature_headers",
    "validate_url",
    "verify",
]
