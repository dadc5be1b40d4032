from typing import Any

from django.core.management.base import BaseCommand, CommandError

from couponcore.cli import main as cli_main
from couponcore.django.engine import engine_kwargs


class Command(BaseCommand):
    help = (
        "couponcore's scheduled jobs with the COUPONCORE settings: worker | run NAME | defer NAME | list | "
        "show ID | rerun ID | cancel ID | schedules (the arguments of `couponcore jobs`; docs/jobs.md)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("jobs_args", nargs="+", help="e.g. worker --metrics-port 9108, or run expire_coupons")

    def handle(self, *args: Any, **options: Any) -> None:
        kw = engine_kwargs()
        rest = list(options["jobs_args"])
        if "redis" in kw:
            where = ["--redis", kw["redis"], "--postgres", kw["postgres"], "--key-prefix", kw["key_prefix"]]
        else:
            where = ["--path", str(kw["path"])]
        # the subcommand first, then its options (argparse wants the servers after it)
        code = cli_main(["jobs", rest[0], *where, *rest[1:]])
        if code:
            raise CommandError(f"couponcore jobs exited with {code}")
