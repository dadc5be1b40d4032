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
        from couponcore.jobs._cli import migrate_if_installed

        steps = migrate_if_installed(kw["postgres"])  # the jobs' tables, when procrastinate is installed
        if steps is not None:
            self.stdout.write(f"couponcore: jobs schema (procrastinate): {steps} step(s) applied")
