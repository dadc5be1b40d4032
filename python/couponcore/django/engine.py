"""The engine of this process, opened lazily from settings.COUPONCORE.

One engine per process: gunicorn/uwsgi workers forked after the first request get their own
(the pid is checked on every call, so an engine opened in the parent is never used in a child).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional
from urllib.parse import quote

from .. import Engine
from .. import open as open_engine

_lock = threading.Lock()
_engine: Optional[Engine] = None
_pid: Optional[int] = None


def _settings() -> dict[str, Any]:
    from django.conf import settings

    return dict(getattr(settings, "COUPONCORE", {}))


def database_url(alias: str) -> str:
    """A libpq URL for a configured Django database (PostgreSQL only)."""
    from django.conf import settings

    db = settings.DATABASES[alias]
    if "postgresql" not in db.get("ENGINE", ""):
        raise ValueError(f"COUPONCORE DATABASE {alias!r} is not a PostgreSQL database")
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{db['NAME']}"


def engine_kwargs(conf: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """couponcore.open()'s keyword arguments from the COUPONCORE settings; ``OPTIONS`` (a dict)
    adds tuning options as couponcore.open() takes them (``wallet_committers``, ...)."""
    conf = _settings() if conf is None else conf
    if conf.get("REDIS"):
        postgres = conf.get("POSTGRES") or database_url(conf.get("DATABASE", "default"))
        kw: dict[str, Any] = {
            "redis": conf["REDIS"],
            "postgres": postgres,
            "key_prefix": conf.get("KEY_PREFIX", "cc:"),
            "writer_threads": int(conf.get("WRITER_THREADS", 1)),
        }
    else:
        kw = {"path": conf.get("PATH", "couponcore.db")}
    options = conf.get("OPTIONS") or {}
    if not isinstance(options, dict):
        raise TypeError("COUPONCORE['OPTIONS'] must be a dict of couponcore.open() keyword arguments")
    clash = sorted(set(options) & set(kw))
    if clash:
        raise ValueError(f"COUPONCORE['OPTIONS'] repeats {clash}: set them with their own COUPONCORE keys")
    return {**kw, **options}


def get_engine() -> Engine:
    """This process's engine (opened on first use)."""
    global _engine, _pid
    with _lock:
        if _engine is None or _pid != os.getpid():
            _engine = open_engine(**engine_kwargs())
            _pid = os.getpid()
        return _engine


def close_engine() -> None:
    global _engine, _pid
    with _lock:
        if _engine is not None and _pid == os.getpid():
            _engine.close()
        _engine, _pid = None, None
