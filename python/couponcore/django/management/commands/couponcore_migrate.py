from typing import Any

from django.core.management.base import BaseCommand, CommandError

from couponcore import migrate
from couponcore.django.engine import engine_kwargs


class Command(BaseCommand):
    help = "Apply couponcore's PostgreSQL migrations (production deployment; idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        kw = engine_kwargs()
        if "postgres" not in kw:
            raise CommandError("COUPONCORE has no REDIS/POSTGRES: the embedded engine migrates its file on open")
        n = migrate(kw["postgres"])
        self.stdout.write(f"couponcore: {n} migration(s) applied")
