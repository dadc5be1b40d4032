"""Settings of the example project. COUPONCORE comes from the environment so the same project
runs on the embedded engine (COUPONCORE_PATH) or on servers (COUPONCORE_REDIS + _POSTGRES)."""

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "couponcore.django"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

if os.environ.get("COUPONCORE_REDIS"):
    COUPONCORE = {
        "REDIS": os.environ["COUPONCORE_REDIS"],
        "POSTGRES": os.environ["COUPONCORE_POSTGRES"],
        "KEY_PREFIX": os.environ.get("COUPONCORE_KEY_PREFIX", "cc:"),
    }
else:
    COUPONCORE = {"PATH": os.environ.get("COUPONCORE_PATH", "couponcore.db")}
