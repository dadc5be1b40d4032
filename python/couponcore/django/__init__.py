"""couponcore as a Django app.

    INSTALLED_APPS = [..., "couponcore.django"]
    COUPONCORE = {"PATH": "couponcore.db"}                       # embedded (default)
    COUPONCORE = {"REDIS": "redis://127.0.0.1:6379/0",           # production: Redis +
                  "POSTGRES": "postgresql://.../db"}             #   PostgreSQL by URL, or
    COUPONCORE = {"REDIS": "redis://...", "DATABASE": "default"} #   reuse a configured database
    # either may add "OPTIONS": {"wallet_committers": 3, ...}: couponcore.open() keyword arguments
    urlpatterns = [path("api/", include("couponcore.django.urls"))]

``couponcore.django.get_engine()`` opens the engine lazily, once per process (again in a
child after fork: an engine never crosses a fork). Management commands: ``couponcore_migrate``
and ``couponcore_worker``.
"""

from .engine import close_engine, get_engine

__all__ = ["close_engine", "get_engine"]
default_app_config = "couponcore.django.apps.CouponcoreConfig"
