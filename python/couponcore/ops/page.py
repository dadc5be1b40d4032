"""The ops page as a framework-neutral handler: an :class:`OpsRequest` in, an
:class:`OpsResponse` out. couponcore.fastapi and couponcore.django adapt it (a few lines each).

Routes, below the mount point (``base``, e.g. ``/ops``)::

    GET  {base}                          the page (login form without a session)
    POST {base}/login                    form field ``key``: the operator key -> session cookie
    POST {base}/logout                   ends the session (clears the cookie)
    POST {base}/action                   form: ``csrf``, ``action`` and its fields (below)
    GET  {base}/deadletters/{cid}/{id}   one dead letter, every field
    GET  {base}/static/ops.css|ops.js    the page's assets (shipped in the package)

Security:

- Nothing is served without a configured operator key: every route is 404.
- The operator key is compared in constant time (``hmac.compare_digest`` of SHA-256 digests,
  so not even its length leaks). It is the only key that opens the page: partner API keys are
  never looked up here.
- A login sets a session cookie (HttpOnly, SameSite=Strict, Path=base, Secure over https):
  ``expires.nonce.mac``, the MAC an HMAC-SHA256 under the operator key. Stateless: changing the
  key ends every session; a session ends after ``SESSION_S``.
- Every POST action carries a CSRF token (a hidden form field): an HMAC of the session cookie
  under the operator key, compared in constant time. Missing or wrong: 403, nothing done.
- Failed logins are limited per client address: after ``LOGIN_FAILURES_MAX`` in
  ``LOGIN_WINDOW_S``, every login from it is 429 until the window ends.
- Responses carry a Content-Security-Policy that allows only the page's own CSS and JS
  (no inline script), ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``.

Actions (``action`` field): ``redrive`` / ``drop`` (``campaign_id``, ``id``: a dead letter),
``redrive_all`` (optional ``campaign_id``), ``rerun`` (``job_id``), ``audit`` (the wallet
audit). Each answers with a redirect to the page and a one-line message; a couponcore error
(NotFound, ...) is that message, and nothing changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import threading
import time
from importlib import resources
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

from .. import _core
from . import render
from .snapshot import SnapshotTaker, api

SESSION_S = 8 * 3600
COOKIE = "couponcore_ops"
OPERATOR_KEY_MIN_CHARS = 16
OPERATOR_KEY_MAX_CHARS = 4096
FORM_BYTES_MAX = 16 * 1024  # the adapters read at most this much of a POST body
LOGIN_FAILURES_MAX = 10  # failed logins per client address and LOGIN_WINDOW_S; then 429
LOGIN_WINDOW_S = 60.0
_LOGIN_CLIENTS_MAX = 10_000  # addresses remembered; when full, the oldest windows are forgotten
_MESSAGE_MAX = 300
ENV_OPERATOR_KEY = "COUPONCORE_OPERATOR_KEY"
_STATIC = {
    "ops.css": "text/css; charset=utf-8",
    "ops.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_SECURITY_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
]


@dataclasses.dataclass
class OpsRequest:
    """What the page needs of an HTTP request, whatever the framework."""

    method: str
    path: str  # below the mount point, without a leading "/": "", "login", "static/ops.css", ...
    base: str  # the mount point as the browser sees it, e.g. "/ops" (no trailing "/")
    query: dict[str, str] = dataclasses.field(default_factory=dict)
    cookies: dict[str, str] = dataclasses.field(default_factory=dict)
    form: dict[str, str] = dataclasses.field(default_factory=dict)
    secure: bool = False  # https: the cookie gets Secure
    client: str = ""  # the client's address, for the failed-login limit ("" : one shared bucket)


@dataclasses.dataclass(frozen=True)
class SessionCookie:
    """The session cookie to set: always HttpOnly and SameSite=Strict; an empty value with
    max_age 0 deletes it."""

    name: str
    value: str
    path: str
    max_age: int
    secure: bool

    def header(self) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{self.name}={self.value}; Path={self.path}; Max-Age={self.max_age}; HttpOnly; SameSite=Strict{secure}"


@dataclasses.dataclass
class OpsResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    cookie: Optional[SessionCookie] = None  # the adapter sets it (with its framework's cookie API)


def check_operator_key(key: Optional[str]) -> Optional[str]:
    """The key as the page uses it (surrounding whitespace removed), None for no key;
    InvalidArgument for a key too short to be a secret."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise _core.InvalidType("the operator key must be a str")
    key = key.strip()
    if not key:
        return None
    if not OPERATOR_KEY_MIN_CHARS <= len(key) <= OPERATOR_KEY_MAX_CHARS:
        raise _core.InvalidArgument(
            f"the operator key must have {OPERATOR_KEY_MIN_CHARS}..{OPERATOR_KEY_MAX_CHARS} characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def operator_key_from_env() -> Optional[str]:
    return check_operator_key(os.environ.get(ENV_OPERATOR_KEY))


def read_operator_key_file(path: str) -> str:
    """The operator key in a file (its first line); InvalidArgument if empty or too short."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(OPERATOR_KEY_MAX_CHARS + 2)
    except OSError as e:
        raise _core.InvalidArgument(f"cannot read the operator key file: {e}") from None
    key = check_operator_key(text.splitlines()[0] if text.strip() else "")
    if key is None:
        raise _core.InvalidArgument("the operator key file is empty")
    return key


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class OpsPage:
    """The ops page of one engine. ``operator_key`` None (or empty) disables it: 404."""

    def __init__(self, engine: Any, operator_key: Optional[str], *, refresh_s: float = 5.0) -> None:
        self._engine = engine
        self._key = check_operator_key(operator_key)
        self._key_digest = _digest(self._key) if self._key else b""
        self._mac_key = hashlib.sha256(b"couponcore-ops\0" + self._key.encode()).digest() if self._key else b""
        self.refresh_s = refresh_s
        self.snapshots = SnapshotTaker(engine, min_interval_s=min(2.0, refresh_s))
        self._failures: dict[str, tuple[float, int]] = {}  # client -> (window start, failed logins)
        self._failures_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._key is not None

    # ---- sessions and CSRF -----------------------------------------------------------------

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._mac_key, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    def _new_session(self) -> str:
        expires = str(int(time.time()) + SESSION_S)
        nonce = secrets.token_urlsafe(16)
        return f"{expires}.{nonce}.{self._mac('session', expires, nonce)}"

    def _session_ok(self, cookie: Optional[str]) -> bool:
        if not cookie or len(cookie) > 200:
            return False
        parts = cookie.split(".")
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 12:
            return False
        expires, nonce, mac = parts
        if not _same(mac, self._mac("session", expires, nonce)):
            return False
        return int(expires) > time.time()

    def csrf_token(self, cookie: str) -> str:
        return self._mac("csrf", cookie)

    def key_matches(self, given: Optional[str]) -> bool:
        """Constant time: the digests are compared, so neither content nor length leaks."""
        if not self._key or given is None:
            return False
        return hmac.compare_digest(_digest(given.strip()), self._key_digest)

    # ---- dispatch --------------------------------------------------------------------------

    def handle(self, req: OpsRequest) -> OpsResponse:
        if not self.enabled:
            return _text(404, "Not Found")
        path = req.path.strip("/")
        if path.startswith("static/"):
            return _static(path[len("static/") :])
        cookie = req.cookies.get(COOKIE)
        if path == "login":
            return self._login(req) if req.method == "POST" else _redirect(req.base + "/")
        if not self._session_ok(cookie):
            if req.method == "POST":
                return _text(401, "Not logged in: open the page and log in with the operator key")
            if path:
                return _redirect(req.base + "/")
            return self._html(401, render.login_page(req.base, error=None))
        assert cookie is not None
        if path == "logout":
            if req.method != "POST" or not self._csrf_ok(req, cookie):
                return _text(403, "CSRF token missing or invalid")
            resp = _redirect(req.base + "/")
            resp.cookie = self._cookie(req, "", max_age=0)
            return resp
        if path == "action":
            if req.method != "POST":
                return _text(405, "POST only")
            if not self._csrf_ok(req, cookie):
                return _text(403, "CSRF token missing or invalid: nothing was done")
            return self._action(req)
        if req.method != "GET":
            return _text(405, "GET only")
        csrf = self.csrf_token(cookie)
        if path == "":
            snap = self.snapshots.take()
            body = render.page(
                snap,
                base=req.base,
                csrf=csrf,
                message=self._message(req, cookie),
                refresh_s=self.refresh_s,
                last_audit=self.snapshots.last_audit,
            )
            return self._html(200, body)
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "deadletters":
            return self._dead_letter(req, parts[1], parts[2], csrf)
        return _text(404, "Not Found")

    def _message(self, req: OpsRequest, cookie: str) -> str:
        """The result line of the last action, if the page signed it for this session."""
        message = req.query.get("msg", "")
        if not message or len(message) > _MESSAGE_MAX:
            return ""
        return message if _same(req.query.get("sig", ""), self._mac("msg", cookie, message)) else ""

    def _csrf_ok(self, req: OpsRequest, cookie: str) -> bool:
        token = req.form.get("csrf")
        return bool(token) and _same(token or "", self.csrf_token(cookie))

    def _cookie(self, req: OpsRequest, value: str, *, max_age: int) -> SessionCookie:
        return SessionCookie(COOKIE, value, req.base or "/", max_age, req.secure)

    def _login_allowed(self, client: str) -> bool:
        with self._failures_lock:
            start, n = self._failures.get(client, (0.0, 0))
            return n < LOGIN_FAILURES_MAX or time.monotonic() - start >= LOGIN_WINDOW_S

    def _login_failed(self, client: str) -> None:
        now = time.monotonic()
        with self._failures_lock:
            start, n = self._failures.get(client, (now, 0))
            if now - start >= LOGIN_WINDOW_S:
                start, n = now, 0
            if client not in self._failures and len(self._failures) >= _LOGIN_CLIENTS_MAX:
                self._failures = {c: w for c, w in self._failures.items() if now - w[0] < LOGIN_WINDOW_S}
                if len(self._failures) >= _LOGIN_CLIENTS_MAX:
                    self._failures.clear()
            self._failures[client] = (start, n + 1)

    def _login(self, req: OpsRequest) -> OpsResponse:
        # Guessing is bounded: LOGIN_FAILURES_MAX failures per address and window, then every
        # attempt (the right key too) is 429 until the window ends; the key is not even compared.
        if not self._login_allowed(req.client):
            return _text(429, f"Too many failed logins: try again in {LOGIN_WINDOW_S:g} s")
        if not self.key_matches(req.form.get("key")):
            self._login_failed(req.client)
            return self._html(401, render.login_page(req.base, error="That is not the operator key."))
        resp = _redirect(req.base + "/")
        resp.cookie = self._cookie(req, self._new_session(), max_age=SESSION_S)
        return resp

    def _html(self, status: int, body: str) -> OpsResponse:
        return OpsResponse(status, body.encode(), [("content-type", "text/html; charset=utf-8"), *_SECURITY_HEADERS])

    # ---- actions ---------------------------------------------------------------------------

    def _action(self, req: OpsRequest) -> OpsResponse:
        form = req.form
        action = form.get("action", "")
        handlers: dict[str, Callable[[dict[str, str]], str]] = {
            "redrive": self._redrive,
            "drop": self._drop,
            "redrive_all": self._redrive_all,
            "rerun": self._rerun,
            "audit": self._audit,
        }
        handler = handlers.get(action)
        if handler is None:
            message = f"unknown action {action[:40]!r}"
        else:
            try:
                message = handler(form)
            except _core.Error as e:
                message = f"{action}: {type(e).__name__}: {e}"
            self.snapshots.invalidate()
        # The message rides in the redirect's URL, signed for this session: the page shows only
        # messages it wrote itself (a crafted link cannot put text on it).
        message = message[:_MESSAGE_MAX]
        cookie = req.cookies.get(COOKIE, "")
        return _redirect(f"{req.base}/?{urlencode({'msg': message, 'sig': self._mac('msg', cookie, message)})}")

    def _dead_letter_api(self) -> Any:
        return api(self._engine, "dead_letters")

    def _redrive(self, form: dict[str, str]) -> str:
        cid, dl_id = _int_field(form, "campaign_id"), _str_field(form, "id")
        dl = self._dead_letter_api().redrive(cid, dl_id)
        return f"re-driven: dead letter {dl.id} of campaign {dl.campaign_id} (user {dl.user_id}, seq {dl.seq})"

    def _drop(self, form: dict[str, str]) -> str:
        cid, dl_id = _int_field(form, "campaign_id"), _str_field(form, "id")
        dl = self._dead_letter_api().drop(cid, dl_id)
        return f"dropped: dead letter {dl.id} of campaign {dl.campaign_id} (user {dl.user_id}, seq {dl.seq})"

    def _redrive_all(self, form: dict[str, str]) -> str:
        cid = _int_field(form, "campaign_id") if form.get("campaign_id") else None
        n = self._dead_letter_api().redrive_all(cid)
        return f"re-driven: {n} dead letter(s)" + (f" of campaign {cid}" if cid is not None else "")

    def _rerun(self, form: dict[str, str]) -> str:
        run = api(self._engine, "jobs").rerun(_int_field(form, "job_id"))
        return f"re-run: job {run.name} queued as run {run.id}"

    def _audit(self, form: dict[str, str]) -> str:
        result = self.snapshots.run_audit()
        return f"wallet audit: {result.get('wallets', '?')} wallet(s), {'ok' if result.get('ok') else 'NOT OK'}"

    def _dead_letter(self, req: OpsRequest, cid_text: str, dl_id: str, csrf: str) -> OpsResponse:
        try:
            cid = _int_field({"campaign_id": cid_text}, "campaign_id")
            dl = self._dead_letter_api().get(cid, dl_id)
        except _core.NotFound as e:
            return self._html(404, render.message_page(req.base, f"NotFound: {e}"))
        except _core.Error as e:
            return self._html(422, render.message_page(req.base, f"{type(e).__name__}: {e}"))
        return self._html(200, render.dead_letter_page(req.base, dl, csrf))


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of a value from the request (any text) and one we made."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def _int_field(form: dict[str, str], name: str) -> int:
    text = form.get(name, "")
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise _core.InvalidArgument(f"{name} must be a positive whole number")
    return int(text)


def _str_field(form: dict[str, str], name: str) -> str:
    text = form.get(name, "")
    if not text or len(text) > 64:
        raise _core.InvalidArgument(f"{name} is required (at most 64 characters)")
    return text


def _text(status: int, text: str) -> OpsResponse:
    return OpsResponse(status, text.encode(), [("content-type", "text/plain; charset=utf-8"), *_SECURITY_HEADERS])


def _redirect(location: str) -> OpsResponse:
    return OpsResponse(303, b"", [("location", location), *_SECURITY_HEADERS])


def _static(name: str) -> OpsResponse:
    content_type = _STATIC.get(name)
    if content_type is None:
        return _text(404, "Not Found")
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return OpsResponse(200, body, [("content-type", content_type), ("cache-control", "max-age=300")])


def dead_letter_path(base: str, campaign_id: int, dl_id: str) -> str:
    return f"{base}/deadletters/{campaign_id}/{quote(dl_id, safe='')}"
