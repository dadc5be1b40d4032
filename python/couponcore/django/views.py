"""JSON views for the same REST API as couponcore.fastapi (see there for routes and errors).
Partner routes authenticate the X-API-KEY header and work in that partner's scope.

Rate limits (docs/rate-limits.md): a RATE_LIMITED issue answer is 429 with ``Retry-After``; the
per-client-address limit of issue requests is configured in ``settings.COUPONCORE``:
``ADDRESS_RATE_LIMIT`` (requests per window, 0 = off), ``ADDRESS_RATE_WINDOW_S`` (default 1) and
``CLIENT_ADDRESS_HEADER`` (e.g. ``"X-Forwarded-For"`` behind a proxy; else REMOTE_ADDR, which is
the proxy's address there)."""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any, Callable, Optional

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .. import _core
from .._engine import Campaigns
from .._health import health
from .._web import AddressLimiter, address_limited_body, error_body, error_status, issue_status_code, to_json
from ..tracing import incoming
from .engine import _settings, get_engine


def _json(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise _core.InvalidArgument("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _core.InvalidArgument("the request body must be a JSON object")
    return body


def _scope(request: HttpRequest) -> Any:
    key = request.headers.get("X-API-KEY")
    if not key:
        raise _core.Unauthenticated("missing X-API-KEY header")
    engine = get_engine()
    return engine.partner(engine.authenticate(key))


def api(methods: dict[str, Callable[..., Any]], status: int = 200) -> Callable[..., HttpResponse]:
    """A view dispatching on the HTTP method; couponcore errors become the JSON error shape."""

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        if handler is None:
            return JsonResponse(error_body("MethodNotAllowed", f"{request.method} is not allowed here"), status=405)
        try:
            traceparent = request.headers.get("traceparent")  # docs/tracing.md
            with incoming(traceparent, request.method or "HTTP", {"url.path": request.path}, get_engine()):
                result = handler(request, **kwargs)
        except _core.Error as exc:
            code = error_status(exc)
            resp = JsonResponse(error_body(type(exc).__name__, str(exc)), status=code)
            if code == 503:
                resp["Retry-After"] = "1"
            return resp
        if isinstance(result, HttpResponse):
            return result
        return JsonResponse(to_json(result), status=status if request.method == "POST" else 200, safe=False)

    return view


def _req(body: dict[str, Any], key: str) -> Any:
    if key not in body:
        raise _core.InvalidArgument(f"{key} is required")
    return body[key]


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse(health(get_engine()))  # degraded (200) without a live grant writer: _health.py


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(get_engine().metrics_text(), content_type="text/plain; version=0.0.4")


# What POST /campaigns accepts: the parameters of Campaigns.create (partner_id comes from the key).
_CREATE = inspect.signature(Campaigns.create).parameters
CAMPAIGN_FIELDS = tuple(p for p in _CREATE if p != "self")
_TIME_FIELDS = tuple(p for p in CAMPAIGN_FIELDS if "TimeLike" in str(_CREATE[p].annotation))  # ISO 8601 in JSON


def _create_campaign(request: HttpRequest) -> Any:
    body = _json(request)
    unknown = set(body) - set(CAMPAIGN_FIELDS)
    if unknown:
        raise _core.InvalidArgument(f"unknown fields: {sorted(unknown)}")
    import datetime as dt

    for k in _TIME_FIELDS:
        if isinstance(body.get(k), str):
            try:
                body[k] = dt.datetime.fromisoformat(body[k].replace("Z", "+00:00"))
            except ValueError:
                raise _core.InvalidArgument(f"{k} must be an ISO 8601 time") from None
    return _scope(request).campaigns.create(**body)


campaigns = api({"POST": _create_campaign, "GET": lambda r: _scope(r).campaigns.list()}, status=201)
campaign = api({"GET": lambda r, campaign_id: _scope(r).campaigns.get(campaign_id)})


def _campaign_action(action: str) -> Callable[..., HttpResponse]:
    return api({"POST": lambda r, campaign_id: getattr(_scope(r).campaigns, action)(campaign_id)}, status=200)


campaign_action = {a: _campaign_action(a) for a in ("pause", "resume", "close")}
campaign_quantity = api(
    {"PUT": lambda r, campaign_id: _scope(r).campaigns.set_quantity(campaign_id, _req(_json(r), "quantity"))}
)


def _set_rate_limits(request: HttpRequest, campaign_id: int) -> Any:
    b = _json(request)
    return _scope(request).campaigns.set_rate_limits(
        campaign_id, b.get("per_user", 0), b.get("per_partner", 0), b.get("window_ms", 1000)
    )


campaign_rate_limits = api({"PUT": _set_rate_limits})
campaign_stats = api({"GET": lambda r, campaign_id: _scope(r).stats(campaign_id)})
campaign_counts = api({"GET": lambda r, campaign_id: _scope(r).coupons.counts(campaign_id)})


_limiter_lock = threading.Lock()
_limiter: Optional[tuple[tuple[Any, ...], Optional[AddressLimiter]]] = None


def address_limiter() -> Optional[AddressLimiter]:
    """The per-address limiter of settings.COUPONCORE (rebuilt when those settings or the engine
    change); with a production engine it counts for the deployment, in Redis."""
    global _limiter
    conf = _settings()
    engine = get_engine() if conf.get("ADDRESS_RATE_LIMIT", 0) else None  # production: counted in its Redis
    key = (
        conf.get("ADDRESS_RATE_LIMIT", 0),
        conf.get("ADDRESS_RATE_WINDOW_S", 1.0),
        conf.get("CLIENT_ADDRESS_HEADER"),
        id(engine),
    )
    with _limiter_lock:
        if _limiter is None or _limiter[0] != key:
            limiter = AddressLimiter(int(key[0]), float(key[1]), key[2], engine) if key[0] else None
            _limiter = (key, limiter)
        return _limiter[1]


def _issue(request: HttpRequest, campaign_id: int) -> Any:
    limiter = address_limiter()
    if limiter is not None:
        header = request.headers.get(limiter.header) if limiter.header else None
        retry = limiter.refuse(limiter.address(request.META.get("REMOTE_ADDR"), header))
        if retry is not None:
            resp = JsonResponse(address_limited_body(retry), status=429)
            resp["Retry-After"] = str(retry)
            return resp
    body = _json(request)
    request_id = body.get("request_id") or request.headers.get("Idempotency-Key")
    r = _scope(request).issue(campaign_id, _req(body, "user_id"), request_id)
    status, headers = issue_status_code(r)
    if status == 200:
        return r
    resp = JsonResponse(to_json(r), status=status)
    for k, v in headers.items():
        resp[k] = v
    return resp


issue = api({"POST": _issue}, status=200)
coupon = api({"GET": lambda r, coupon_id: _scope(r).coupons.get(coupon_id)})


def _use(request: HttpRequest, coupon_id: int) -> Any:
    b = _json(request)
    return _scope(request).coupons.use(coupon_id, _req(b, "user_id"), _req(b, "order_id"), _req(b, "order_amount"))


coupon_use = api({"POST": _use}, status=200)
coupon_cancel = api(
    {"POST": lambda r, coupon_id: _scope(r).coupons.cancel_use(coupon_id, _req(_json(r), "order_id"))}, status=200
)


def _user_coupons(request: HttpRequest, user_id: str) -> Any:
    q = request.GET
    try:
        cursor = int(q["cursor"]) if q.get("cursor") else None
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise _core.InvalidArgument("cursor and limit must be integers") from None
    return _scope(request).coupons.list_for_user(user_id, state=q.get("state") or None, cursor=cursor, limit=limit)


user_coupons = api({"GET": _user_coupons})


def _idem(request: HttpRequest, body: dict[str, Any]) -> str:
    key = body.get("idempotency_key") or request.headers.get("Idempotency-Key")
    if not key:
        raise _core.InvalidArgument("an idempotency key is required (Idempotency-Key header or idempotency_key)")
    return str(key)


def _earn(request: HttpRequest, user_id: str) -> Any:
    b = _json(request)
    return _scope(request).points.earn(
        user_id,
        _req(b, "amount"),
        idempotency_key=_idem(request, b),
        expires_in_days=b.get("expires_in_days"),
        reason=b.get("reason", ""),
    )


def _points_use(request: HttpRequest, user_id: str) -> Any:
    b = _json(request)
    return _scope(request).points.use(
        user_id, _req(b, "amount"), idempotency_key=_idem(request, b), order_id=b.get("order_id", "")
    )


def _points_cancel(request: HttpRequest, user_id: str) -> Any:
    b = _json(request)
    return _scope(request).points.cancel(
        user_id, idempotency_key=_idem(request, b), entry_id=b.get("entry_id"), use_key=b.get("use_key")
    )


def _transfer(request: HttpRequest, user_id: str) -> Any:
    b = _json(request)
    return _scope(request).points.transfer(
        user_id, _req(b, "to_user_id"), _req(b, "amount"), idempotency_key=_idem(request, b)
    )


def _checkout(request: HttpRequest) -> Any:
    b = _json(request)
    return _scope(request).checkout(
        _req(b, "user_id"),
        _req(b, "order_id"),
        _req(b, "order_amount"),
        b.get("coupon_id"),
        b.get("points", 0),
        idempotency_key=_idem(request, b),
    )


def _cancel_checkout(request: HttpRequest) -> Any:
    b = _json(request)
    return _scope(request).cancel_checkout(
        _req(b, "user_id"), b.get("checkout_key"), order_id=b.get("order_id"), idempotency_key=_idem(request, b)
    )


def _history(request: HttpRequest, user_id: str) -> Any:
    try:
        cursor = int(request.GET["cursor"]) if request.GET.get("cursor") else None
        limit = int(request.GET.get("limit", "50"))
    except ValueError:
        raise _core.InvalidArgument("cursor and limit must be integers") from None
    return _scope(request).points.history(user_id, cursor, limit)


points_balance = api({"GET": lambda r, user_id: _scope(r).points.balance(user_id)})
points_history = api({"GET": _history})
points_earn = api({"POST": _earn}, status=200)
points_use = api({"POST": _points_use}, status=200)
points_cancel = api({"POST": _points_cancel}, status=200)
points_transfer = api({"POST": _transfer}, status=200)
checkout = api({"POST": _checkout}, status=200)
cancel_checkout = api({"POST": _cancel_checkout}, status=200)
