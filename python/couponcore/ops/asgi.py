"""The ops page in a Starlette / FastAPI app: ``app.router.routes.extend(ops_routes(page))``,
or simply ``couponcore.fastapi.create_app(engine, operator_key=...)``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .page import FORM_BYTES_MAX, OpsPage, OpsRequest

_FORM_FIELDS_MAX = 50


def ops_routes(page: OpsPage, path: str = "/ops") -> list[BaseRoute]:
    """The page's routes at ``path`` (no trailing "/"): ``path``, ``path/`` and below."""
    path = "/" + path.strip("/")

    async def endpoint(request: Request) -> Response:
        form: dict[str, str] = {}
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > FORM_BYTES_MAX:
                    return PlainTextResponse("the form is too large", status_code=413)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if body and ctype != "application/x-www-form-urlencoded":
                return PlainTextResponse("a form (application/x-www-form-urlencoded) is expected", status_code=415)
            try:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_FORM_FIELDS_MAX))
            except (ValueError, UnicodeDecodeError):
                return PlainTextResponse("the form does not parse", status_code=400)
        req = OpsRequest(
            method=request.method,
            path=request.path_params.get("rest", ""),
            base=request.scope.get("root_path", "").rstrip("/") + path,
            query=dict(request.query_params),
            cookies=dict(request.cookies),
            form=form,
            secure=request.url.scheme == "https",
            client=request.client.host if request.client else "",
        )
        resp = await run_in_threadpool(page.handle, req)
        out = Response(resp.body, status_code=resp.status, headers=dict(resp.headers))
        if resp.cookie is not None:
            out.headers.append("set-cookie", resp.cookie.header())
        return out

    methods = ["GET", "POST"]
    return [
        Route(path, endpoint, methods=methods, include_in_schema=False),
        Route(path + "/{rest:path}", endpoint, methods=methods, include_in_schema=False),
    ]


def add_ops_page(app: Any, engine: Any, operator_key: Any, path: str = "/ops") -> OpsPage:
    """Serve the ops page of ``engine`` in ``app`` (a Starlette or FastAPI app) at ``path``.
    Without an operator key nothing is added (the path stays 404)."""
    page = OpsPage(engine, operator_key)
    if page.enabled:
        app.router.routes.extend(ops_routes(page, path))
    return page
