"""The ops page in a Django project (see docs/ops-page.md)::

    COUPONCORE = {..., "OPERATOR_KEY": os.environ["COUPONCORE_OPERATOR_KEY"]}
    urlpatterns = [path("ops/", include("couponcore.django.ops"))]

The key is ``COUPONCORE["OPERATOR_KEY"]``, else the COUPONCORE_OPERATOR_KEY environment
variable; without one every ops URL is 404. The page does its own authentication (its session
cookie) and CSRF check (a token in each form), so its view is exempt from Django's CSRF
middleware; Django's session and user models are not involved.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ..ops import FORM_BYTES_MAX, OpsPage, OpsRequest, check_operator_key, operator_key_from_env
from .engine import _settings, get_engine

_lock = threading.Lock()
_page: Optional[tuple[Any, OpsPage]] = None  # (the engine it shows, the page)


def _operator_key() -> Optional[str]:
    key = _settings().get("OPERATOR_KEY")
    return check_operator_key(key) if key else operator_key_from_env()


def get_page() -> OpsPage:
    """This process's ops page (made on first use, again if the engine was reopened)."""
    global _page
    key = _operator_key()
    if key is None:
        return OpsPage(None, None)  # disabled: 404, and the engine is not opened for it
    engine = get_engine()
    with _lock:
        if _page is None or _page[0] is not engine:
            _page = (engine, OpsPage(engine, key))
        return _page[1]


@csrf_exempt
def ops(request: HttpRequest, rest: str = "") -> HttpResponse:
    page = get_page()
    form: dict[str, str] = {}
    if request.method == "POST" and page.enabled:
        if len(request.body) > FORM_BYTES_MAX:
            return HttpResponse("the form is too large", status=413, content_type="text/plain")
        form = {k: v for k, v in request.POST.items()}
    base = request.path[: len(request.path) - len(rest)].rstrip("/")
    resp = page.handle(
        OpsRequest(
            method=request.method or "GET",
            path=rest,
            base=base,
            query={k: v for k, v in request.GET.items()},
            cookies=dict(request.COOKIES),
            form=form,
            secure=request.is_secure(),
            client=request.META.get("REMOTE_ADDR", ""),
        )
    )
    out = HttpResponse(resp.body, status=resp.status)
    for name, value in resp.headers:
        out[name] = value
    if resp.cookie is not None:
        c = resp.cookie
        out.set_cookie(
            c.name, c.value, max_age=c.max_age, path=c.path, secure=c.secure, httponly=True, samesite="Strict"
        )
    return out


app_name = "couponcore_ops"
urlpatterns = [
    path("", ops, name="ops"),
    path("<path:rest>", ops, name="ops-path"),
]
