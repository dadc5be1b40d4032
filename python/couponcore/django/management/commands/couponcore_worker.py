from typing import Any

from django.core.management.base import BaseCommand, CommandError

from couponcore.cli import main as cli_main
from couponcore.django.engine import engine_kwargs


class Command(BaseCommand):
    help = "Run couponcore's grant writer (Redis Streams -> PostgreSQL) until SIGTERM/SIGINT."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--threads", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        kw = engine_kwargs()
        if "redis" not in kw:
            raise CommandError("COUPONCORE has no REDIS: the embedded engine has no separate writer")
        code = cli_main(
            [
                "worker",
                "--redis",
                kw["redis"],
                "--postgres",
                kw["postgres"],
                "--key-prefix",
                kw["key_prefix"],
                "--threads",
                str(options["threads"]),
            ]
        )
        if code:
            raise CommandError(f"worker exited with {code}")
