"""A REST API over couponcore for FastAPI apps.

    from couponcore.fastapi import create_app
    app = create_app(couponcore.open())          # or include create_router(engine) in your app

Every partner route authenticates the ``X-API-KEY`` header through ``engine.authenticate``
(a missing, unknown, revoked or malformed key is 401 with one message) and works in that
partner's scope: another partner's campaign, coupon or wallet is 404, exactly like an unknown
one. Errors have one JSON shape, ``{"error": {"type": "NotFound", "message": "..."}}``:

    InvalidArgument/InvalidType 422 · Unauthenticated 401 · NotFound 404 · Conflict 409 ·
    InsufficientFunds 409 · Unavailable 503 (with Retry-After) · Closed 503 · InternalError 500

Issue answers are 200, except ``RATE_LIMITED`` (the campaign's rate limits): 429 with the same
JSON and ``Retry-After`` (seconds, rounded up). ``create_app(address_rate_limit=N)`` also limits
issue requests per client address (counted in Redis for the whole deployment with a production
engine): 429 ``{"error": {"type": "RateLimited"}}`` with ``Retry-After``. See docs/rate-limits.md.

``GET /healthz`` and ``GET /metrics`` (Prometheus text) need no key. Issue endpoints are async
and never block the event loop (``aissue``); the other calls run in the default executor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import typing
from typing import Any, Optional, Union

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, create_model
from starlette.routing import Route

from . import _core
from ._engine import Engine
from ._health import health
from ._types import (
    ISSUE_RESULT_TYPES,
    Campaign,
    CampaignStats,
    Coupon,
    CouponCounts,
    CouponPage,
    UseResult,
)
from ._wallet import Balance, CheckoutCancelResult, CheckoutResult, HistoryPage, WalletEntry, WalletResult
from ._web import (
    AddressLimiter,
    address_limited_body,
    error_body,
    error_status,
    issue_status_code,
    json_fields,
    to_json,
)
from .tracing import TraceContextMiddleware

# ---- request bodies and response models (they make the OpenAPI document) ------------------
# Request bodies are written here (they carry the HTTP layer's limits); response models are
# derived from the value types (below).


class ErrorBody(BaseModel):
    type: str = Field(examples=["NotFound"])
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["10:00 flash sale"])
    quantity: int = Field(gt=0, le=1_000_000_000)
    per_user_limit: int = Field(1, ge=1, le=1000)
    starts_at: Optional[dt.datetime] = None
    ends_at: Optional[dt.datetime] = None
    discount_kind: str = Field("none", pattern="^(none|fixed|percent)$")
    discount_value: int = 0
    discount_max: Optional[int] = None
    min_order_amount: int = 0
    valid_until: Optional[dt.datetime] = None
    valid_days: Optional[int] = None
    shards: int = Field(1, ge=1, le=16, description="production: spread the stock over this many Redis hash tags")
    rate_limit_per_user: int = Field(0, description="issue requests per user per window; 0 = no limit")
    rate_limit_per_partner: int = Field(0, description="issue requests per window, all users together; 0 = no limit")
    rate_window_ms: int = Field(1000, description="the rate limits' fixed window, ms")


class RateLimitsIn(BaseModel):
    # Ranges are the engine's (docs/limits.md): out of range is InvalidArgument (422), nothing written.
    per_user: int = Field(0, description="issue requests per user per window; 0 = no limit")
    per_partner: int = Field(0, description="issue requests per window, all users together; 0 = no limit")
    window_ms: int = Field(1000, description="the fixed window, ms")


class QuantityIn(BaseModel):
    quantity: int = Field(gt=0, le=1_000_000_000)


class IssueIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=128, examples=["user-42"])
    request_id: Optional[str] = Field(None, max_length=128, description="retry key: a repeat gets the first answer")


class UseIn(BaseModel):
    user_id: str
    order_id: str
    order_amount: int


class CancelIn(BaseModel):
    order_id: str


# Response models: derived from the value types' one definition (couponcore._types, _wallet),
# field by field (json_fields: what to_json writes), under the names the OpenAPI document has
# always used. Nested value types become their own models.
_OUT_NAMES: dict[type, str] = {
    Campaign: "CampaignOut",
    CampaignStats: "StatsOut",
    Coupon: "CouponOut",
    UseResult: "UseOut",
    CouponPage: "CouponPageOut",
    CouponCounts: "CountsOut",
    WalletResult: "WalletResultOut",
    Balance: "BalanceOut",
    WalletEntry: "EntryOut",
    HistoryPage: "HistoryOut",
    CheckoutResult: "CheckoutOut",
    CheckoutCancelResult: "CheckoutCancelOut",
}
_OUT_MODELS: dict[type, type[BaseModel]] = {}


def response_model(cls: type) -> type[BaseModel]:
    """The pydantic model of a value type's JSON (couponcore._web.to_json), made from its
    dataclass: the same fields, names and types."""
    model = _OUT_MODELS.get(cls)
    if model is None:
        hints = typing.get_type_hints(cls)
        fields: dict[str, Any] = {f.name: (_out_type(hints[f.name]), ...) for f in json_fields(cls)}
        doc = (cls.__doc__ or "").strip()
        model = _OUT_MODELS[cls] = create_model(
            _OUT_NAMES.get(cls, f"{cls.__name__}Out"), __doc__=doc or None, **fields
        )
    return model


def _out_type(tp: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return response_model(tp)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        return list[_out_type(args[0])]  # type: ignore[misc]
    if typing.get_origin(tp) is Union:
        return Union[tuple(_out_type(a) for a in args)]
    return tp


# _core.IssueResult is a native class (the hot path): its model is made from its record's
# fields and their Python types (couponcore._types.ISSUE_RESULT_TYPES).
IssueOut = create_model(
    "IssueOut",
    __doc__="The gate's answer: status, and seq (first-come rank 1..quantity) and coupon_id when issued; "
    "retry_after_ms when RATE_LIMITED (HTTP 429).",
    **{name: (ISSUE_RESULT_TYPES[name], ...) for name in _core.fields("IssueResult")},  # type: ignore[call-overload]
)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, unknown, revoked or malformed X-API-KEY"},
    404: {"model": ErrorOut, "description": "no such object in this partner's scope"},
    409: {"model": ErrorOut, "description": "the object's state forbids it"},
    422: {"model": ErrorOut, "description": "invalid input; nothing changed"},
    503: {"model": ErrorOut, "description": "a server is unavailable; retry with the same ids"},
}


# ---- authentication and the issue hot path -------------------------------------------------


class _Authenticator:
    """``X-API-KEY`` -> the partner's :class:`Scope`, for every partner route.

    The engine's own cache (C++, TTL-bounded) would answer a known key in microseconds, but a
    miss goes to Redis or the database, so the call runs in the executor; a small cache of
    recent keys (1 s) keeps that executor hop off the steady state. Revocation still takes
    effect within the engine's bound + 1 s."""

    _RECENT_MAX = 10_000

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._recent: dict[str, tuple[float, Any]] = {}

    async def scope(self, api_key: Optional[str]) -> Any:
        if not api_key:
            raise _core.Unauthenticated("missing X-API-KEY header")
        now = time.monotonic()
        hit = self._recent.get(api_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        partner = await _offload(self._engine.authenticate, api_key)
        s = self._engine.partner(partner)
        if len(self._recent) >= self._RECENT_MAX:
            self._recent.clear()
        self._recent[api_key] = (now + 1.0, s)
        return s


def _issue_body(body: bytes) -> Optional[tuple[str, Optional[str]]]:
    """(user_id, request_id) of a body that IssueIn accepts as it is; None for anything else."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    user_id = data.get("user_id")
    request_id = data.get("request_id")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 128 or not _is_text(user_id):
        return None
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > 128 or not _is_text(request_id)
    ):
        return None
    return user_id, request_id


def _is_text(s: str) -> bool:
    """False for a str pydantic refuses as a string: one holding a lone surrogate."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _FastIssue:
    """``POST /campaigns/{campaign_id}/issue`` as a plain ASGI endpoint inside the app.

    Measured on FastAPI 0.165 (bench/RESULTS.md), dependency solving, model validation and
    response encoding cost several times the engine's own answer, and this is the route a flash
    sale hits. The endpoint reads the key, the Idempotency-Key and a JSON body that IssueIn would
    accept unchanged, asks the engine, and writes the same JSON the documented route writes.
    Anything else (another content type, a body that does not parse or validate) goes to the
    documented FastAPI route with the body replayed, so every validation error is FastAPI's own;
    couponcore errors are raised to the app's exception handlers, as from any route. The app's
    middleware applies as to every route."""

    def __init__(self, auth: _Authenticator, documented: Any) -> None:
        self._auth = auth
        self._documented = documented

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        api_key = idempotency_key = content_type = None
        for name, value in scope["headers"]:
            if name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"idempotency-key" and idempotency_key is None:
                idempotency_key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value
        parsed = None
        if content_type is None or content_type.split(b";")[0].strip().lower() == b"application/json":
            parsed = _issue_body(body)
        if parsed is None:
            replayed = False

            async def replay() -> Any:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self._documented.handle(scope, replay, send)
            return
        user_id, request_id = parsed
        s = await self._auth.scope(api_key)
        r = await s.aissue(scope["path_params"]["campaign_id"], user_id, request_id or idempotency_key)
        status, headers = issue_status_code(r)
        await _send_json(send, status, to_json(r), headers)


class _AddressGate:
    """The per-client-address limit in front of the issue route (fast or documented), before
    anything else looks at the request (its key included): 429 with Retry-After beyond it."""

    def __init__(self, limiter: AddressLimiter, inner: Any) -> None:
        self._limiter = limiter
        self._inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        address = _client_address(self._limiter, scope)
        # The deployment's count is a Redis round trip: off the event loop.
        retry = await _offload(self._limiter.refuse, address) if self._limiter.shared else self._limiter.refuse(address)
        if retry is not None:
            await _send_json(send, 429, address_limited_body(retry), {"Retry-After": str(retry)})
            return
        await self._inner(scope, receive, send)


def _client_address(limiter: AddressLimiter, scope: Any) -> str:
    """The client address of an ASGI request as the limiter keys it."""
    peer = scope.get("client")
    value = None
    if limiter.header:
        name = limiter.header.encode("latin-1")
        value = next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)
    return limiter.address(peer[0] if peer else None, value)


async def _send_json(send: Any, status: int, body: Any, headers: dict[str, str]) -> None:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    raw = [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


# ---- the router ----------------------------------------------------------------------------


def create_router(
    engine: Engine,
    *,
    fast_issue: bool = True,
    address_rate_limit: int = 0,
    address_rate_window_s: float = 1.0,
    client_address_header: Optional[str] = None,
) -> APIRouter:
    """The REST routes over ``engine``; include it in any FastAPI app.

    ``fast_issue`` serves ``POST /campaigns/{id}/issue``, the flash-sale hot path, without
    FastAPI's per-request machinery (see :class:`_FastIssue`); the answers are the same.

    ``address_rate_limit`` > 0 admits at most that many issue requests per client address per
    ``address_rate_window_s`` (429 with Retry-After beyond), counted in Redis for the whole
    deployment with a production engine, in this process with an embedded one. Behind a proxy the
    address is the proxy's unless ``client_address_header`` names the header it sets (its last
    entry is used): see couponcore._web.AddressLimiter and docs/rate-limits.md."""
    router = APIRouter()
    limiter = (
        AddressLimiter(address_rate_limit, address_rate_window_s, client_address_header, engine)
        if address_rate_limit
        else None
    )

    auth = _Authenticator(engine)

    async def scope(x_api_key: Optional[str] = Header(None, alias="X-API-KEY")) -> Any:
        return await auth.scope(x_api_key)

    Scope = Depends(scope)

    @router.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        return await _offload(health, engine)  # degraded (200) without a live grant writer: _health.py

    @router.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> str:
        return engine.metrics_text()

    @router.post(
        "/campaigns",
        status_code=201,
        response_model=response_model(Campaign),
        responses=_ERRORS,
        tags=["campaigns"],
    )
    async def create_campaign(body: CampaignIn, s: Any = Scope) -> Any:
        return to_json(await _offload(lambda: s.campaigns.create(**body.model_dump())))

    @router.get(
        "/campaigns",
        response_model=list[response_model(Campaign)],  # type: ignore[misc]
        responses=_ERRORS,
        tags=["campaigns"],
    )
    async def list_campaigns(s: Any = Scope) -> Any:
        return to_json(await _offload(s.campaigns.list))

    @router.get(
        "/campaigns/{campaign_id}",
        response_model=response_model(Campaign),
        responses=_ERRORS,
        tags=["campaigns"],
    )
    async def get_campaign(campaign_id: int, s: Any = Scope) -> Any:
        return to_json(await _offload(s.campaigns.get, campaign_id))

    for action in ("pause", "resume", "close"):

        def make(action: str) -> Any:
            async def change_state(campaign_id: int, s: Any = Scope) -> Any:
                return to_json(await _offload(getattr(s.campaigns, action), campaign_id))

            change_state.__name__ = f"{action}_campaign"
            return change_state

        router.post(
            f"/campaigns/{{campaign_id}}/{action}",
            response_model=response_model(Campaign),
            responses=_ERRORS,
            tags=["campaigns"],
            summary=f"{action.capitalize()} a campaign",
        )(make(action))

    @router.put(
        "/campaigns/{campaign_id}/quantity",
        response_model=response_model(Campaign),
        responses=_ERRORS,
        tags=["campaigns"],
    )
    async def set_quantity(campaign_id: int, body: QuantityIn, s: Any = Scope) -> Any:
        return to_json(await _offload(s.campaigns.set_quantity, campaign_id, body.quantity))

    @router.put(
        "/campaigns/{campaign_id}/rate-limits",
        response_model=response_model(Campaign),
        responses=_ERRORS,
        tags=["campaigns"],
    )
    async def set_rate_limits(campaign_id: int, body: RateLimitsIn, s: Any = Scope) -> Any:
        return to_json(
            await _offload(s.campaigns.set_rate_limits, campaign_id, body.per_user, body.per_partner, body.window_ms)
        )

    @router.get(
        "/campaigns/{campaign_id}/stats",
        response_model=response_model(CampaignStats),
        responses=_ERRORS,
        tags=["campaigns"],
    )
    async def campaign_stats(campaign_id: int, s: Any = Scope) -> Any:
        return to_json(await _offload(s.stats, campaign_id))

    @router.get(
        "/campaigns/{campaign_id}/counts",
        response_model=response_model(CouponCounts),
        responses=_ERRORS,
        tags=["coupons"],
    )
    async def campaign_counts(campaign_id: int, s: Any = Scope) -> Any:
        return to_json(await _offload(s.coupons.counts, campaign_id))

    @router.post(
        "/campaigns/{campaign_id}/issue",
        response_model=None,  # the hot path: documented below, serialized directly
        response_class=JSONResponse,
        responses={
            200: {"model": IssueOut, "description": "the gate's answer"},
            429: {
                "model": IssueOut,
                "description": "RATE_LIMITED by the campaign's rate limits (Retry-After: seconds), or, with "
                "the body {'error': {'type': 'RateLimited'}}, too many requests from this client address",
            },
            **_ERRORS,
        },
        tags=["issue"],
        summary="Ask for a coupon (first come, first served)",
    )
    async def issue(
        campaign_id: int,
        body: IssueIn,
        s: Any = Scope,
        idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key"),
    ) -> Any:
        r = await s.aissue(campaign_id, body.user_id, body.request_id or idempotency_key)
        status, headers = issue_status_code(r)
        return JSONResponse(to_json(r), status_code=status, headers=headers or None)

    # The issue route as served: _FastIssue (fast_issue) or the documented route, behind the
    # per-address limit when there is one. The documented route stays in the OpenAPI document
    # and answers whatever the fast path does not recognise as well formed.
    documented = next(r for r in router.routes if getattr(r, "path", "") == "/campaigns/{campaign_id}/issue")
    served: Any = _FastIssue(auth, documented) if fast_issue else None
    if limiter is not None:
        served = _AddressGate(limiter, served if served is not None else documented.handle)
    if served is not None:
        router.routes.insert(
            router.routes.index(documented), Route("/campaigns/{campaign_id:int}/issue", served, methods=["POST"])
        )

    @router.get("/coupons/{coupon_id}", response_model=response_model(Coupon), responses=_ERRORS, tags=["coupons"])
    async def get_coupon(coupon_id: int, s: Any = Scope) -> Any:
        return to_json(await _offload(s.coupons.get, coupon_id))

    @router.post(
        "/coupons/{coupon_id}/use",
        response_model=response_model(UseResult),
        responses=_ERRORS,
        tags=["coupons"],
        summary="Redeem a coupon at checkout (idempotent per order_id)",
    )
    async def use_coupon(coupon_id: int, body: UseIn, s: Any = Scope) -> Any:
        return to_json(await _offload(s.coupons.use, coupon_id, body.user_id, body.order_id, body.order_amount))

    @router.post(
        "/coupons/{coupon_id}/cancel",
        response_model=response_model(Coupon),
        responses=_ERRORS,
        tags=["coupons"],
        summary="Cancel an order's use of a coupon (idempotent)",
    )
    async def cancel_coupon(coupon_id: int, body: CancelIn, s: Any = Scope) -> Any:
        return to_json(await _offload(s.coupons.cancel_use, coupon_id, body.order_id))

    @router.get(
        "/users/{user_id}/coupons",
        response_model=response_model(CouponPage),
        responses=_ERRORS,
        tags=["coupons"],
    )
    async def user_coupons(
        user_id: str,
        s: Any = Scope,
        state: Optional[str] = Query(None, pattern="^(issued|used|expired)$"),
        cursor: Optional[int] = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> Any:
        return to_json(
            await _offload(lambda: s.coupons.list_for_user(user_id, state=state, cursor=cursor, limit=limit))
        )

    _add_wallet_routes(router, Scope)
    return router


class EarnIn(BaseModel):
    amount: int = Field(gt=0)
    expires_at: Optional[dt.datetime] = None
    expires_in_days: Optional[float] = Field(None, gt=0)
    reason: str = Field("", max_length=200)
    idempotency_key: Optional[str] = Field(None, description="or the Idempotency-Key header")


class PointsUseIn(BaseModel):
    amount: int = Field(gt=0)
    order_id: str = ""
    idempotency_key: Optional[str] = None


class PointsCancelIn(BaseModel):
    entry_id: Optional[int] = None
    use_key: Optional[str] = Field(None, description="the use's idempotency key")
    idempotency_key: Optional[str] = None


class TransferIn(BaseModel):
    to_user_id: str
    amount: int = Field(gt=0)
    idempotency_key: Optional[str] = None


class CheckoutIn(BaseModel):
    user_id: str
    order_id: str
    order_amount: int = Field(gt=0)
    coupon_id: Optional[int] = Field(None, gt=0)
    points: int = Field(0, ge=0)
    idempotency_key: Optional[str] = Field(None, description="or the Idempotency-Key header")


class CheckoutCancelIn(BaseModel):
    user_id: str
    checkout_key: Optional[str] = Field(None, description="the checkout's idempotency key (or order_id)")
    order_id: Optional[str] = Field(None, description="cancel the order's latest checkout (or checkout_key)")
    idempotency_key: Optional[str] = None


def _key(body_key: Optional[str], header_key: Optional[str]) -> str:
    key = body_key or header_key
    if not key:
        raise _core.InvalidArgument("an idempotency key is required (Idempotency-Key header or idempotency_key)")
    return key


def _add_wallet_routes(router: APIRouter, Scope: Any) -> None:
    """Point routes under /users/{user_id}/points."""
    IdemHeader = Header(None, alias="Idempotency-Key")

    @router.get("/users/{user_id}/points", response_model=response_model(Balance), responses=_ERRORS, tags=["points"])
    async def balance(user_id: str, s: Any = Scope) -> Any:
        return to_json(await _offload(s.points.balance, user_id))

    @router.get(
        "/users/{user_id}/points/history",
        response_model=response_model(HistoryPage),
        responses=_ERRORS,
        tags=["points"],
    )
    async def history(
        user_id: str, s: Any = Scope, cursor: Optional[int] = None, limit: int = Query(50, ge=1, le=1000)
    ) -> Any:
        return to_json(await _offload(s.points.history, user_id, cursor, limit))

    @router.post(
        "/users/{user_id}/points/earn",
        response_model=response_model(WalletResult),
        responses=_ERRORS,
        tags=["points"],
    )
    async def earn(user_id: str, body: EarnIn, s: Any = Scope, idem: Optional[str] = IdemHeader) -> Any:
        key = _key(body.idempotency_key, idem)
        return to_json(
            await _offload(
                lambda: s.points.earn(
                    user_id,
                    body.amount,
                    idempotency_key=key,
                    expires_at=body.expires_at,
                    expires_in_days=body.expires_in_days,
                    reason=body.reason,
                )
            )
        )

    @router.post(
        "/users/{user_id}/points/use",
        response_model=response_model(WalletResult),
        responses=_ERRORS,
        tags=["points"],
    )
    async def use(user_id: str, body: PointsUseIn, s: Any = Scope, idem: Optional[str] = IdemHeader) -> Any:
        key = _key(body.idempotency_key, idem)
        return to_json(
            await _offload(lambda: s.points.use(user_id, body.amount, idempotency_key=key, order_id=body.order_id))
        )

    @router.post(
        "/users/{user_id}/points/cancel",
        response_model=response_model(WalletResult),
        responses=_ERRORS,
        tags=["points"],
    )
    async def cancel(user_id: str, body: PointsCancelIn, s: Any = Scope, idem: Optional[str] = IdemHeader) -> Any:
        key = _key(body.idempotency_key, idem)
        return to_json(
            await _offload(
                lambda: s.points.cancel(user_id, idempotency_key=key, entry_id=body.entry_id, use_key=body.use_key)
            )
        )

    @router.post(
        "/users/{user_id}/points/transfer",
        response_model=response_model(WalletResult),
        responses=_ERRORS,
        tags=["points"],
    )
    async def transfer(user_id: str, body: TransferIn, s: Any = Scope, idem: Optional[str] = IdemHeader) -> Any:
        key = _key(body.idempotency_key, idem)
        return to_json(
            await _offload(lambda: s.points.transfer(user_id, body.to_user_id, body.amount, idempotency_key=key))
        )

    @router.post("/checkout", response_model=response_model(CheckoutResult), responses=_ERRORS, tags=["checkout"])
    async def checkout(body: CheckoutIn, s: Any = Scope, idem: Optional[str] = IdemHeader) -> Any:
        """Use a coupon and points for one order in one transaction: both or neither."""
        key = _key(body.idempotency_key, idem)
        return to_json(
            await _offload(
                lambda: s.checkout(
                    body.user_id, body.order_id, body.order_amount, body.coupon_id, body.points, idempotency_key=key
                )
            )
        )

    @router.post(
        "/checkout/cancel",
        response_model=response_model(CheckoutCancelResult),
        responses=_ERRORS,
        tags=["checkout"],
    )
    async def cancel_checkout(body: CheckoutCancelIn, s: Any = Scope, idem: Optional[str] = IdemHeader) -> Any:
        """Undo a checkout, named by its key or by its order id: its coupon and its points come
        back together."""
        key = _key(body.idempotency_key, idem)
        return to_json(
            await _offload(
                lambda: s.cancel_checkout(body.user_id, body.checkout_key, order_id=body.order_id, idempotency_key=key)
            )
        )


async def _offload(fn: Any, *args: Any) -> Any:
    import asyncio
    import contextvars
    import functools

    # In the request's context: its trace context (couponcore.tracing) is the call's.
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(None, call)


def create_app(
    engine: Engine,
    *,
    title: str = "couponcore",
    close_engine_on_shutdown: bool = False,
    fast_issue: bool = True,
    operator_key: Optional[str] = None,
    address_rate_limit: int = 0,
    address_rate_window_s: float = 1.0,
    client_address_header: Optional[str] = None,
) -> FastAPI:
    """A FastAPI app serving ``create_router(engine, ...)`` (the keyword arguments as there)
    with couponcore's error mapping, and the ops page at ``/ops`` when an operator key is given
    (``operator_key``, else the COUPONCORE_OPERATOR_KEY environment variable; without one ``/ops``
    is 404). See docs/ops-page.md; the per-address limit: docs/rate-limits.md."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        if close_engine_on_shutdown:
            engine.close()

    app = FastAPI(
        title=title,
        version=_version(),
        description="First-come-first-served coupon drops and point wallets. Partner routes take an "
        "`X-API-KEY` header.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(TraceContextMiddleware, engine=engine)  # each request under its traceparent (docs/tracing.md)
    app.include_router(
        create_router(
            engine,
            fast_issue=fast_issue,
            address_rate_limit=address_rate_limit,
            address_rate_window_s=address_rate_window_s,
            client_address_header=client_address_header,
        )
    )
    app.state.couponcore_engine = engine
    from .ops import operator_key_from_env
    from .ops.asgi import add_ops_page

    app.state.couponcore_ops = add_ops_page(
        app, engine, operator_key if operator_key is not None else operator_key_from_env()
    )
    return app


def install_error_handlers(app: FastAPI) -> None:
    """Map couponcore errors (and request validation) onto the one JSON error shape."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(_core.Error)
    async def couponcore_error(_: Request, exc: _core.Error) -> JSONResponse:
        status = error_status(exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(error_body("InvalidArgument", f"{where}: {first['msg']}"), status_code=422)


def _version() -> str:
    from . import __version__

    return __version__
