"""``couponcore deadletters list | show | redrive | drop``: the grant log's dead letters from a
shell (docs/dead-letters.md). Opens the production deployment without writers of its own."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ._types import DeadLetter


def add_parser(sub: Any, servers: Callable[..., None]) -> None:
    p = sub.add_parser(
        "deadletters",
        help="list, show, re-drive or drop the grant log's dead letters",
        description="Dead letters are grants that left the grant log without reaching PostgreSQL "
        "(a malformed entry, or a grant the store refused on its last delivery). "
        "See docs/dead-letters.md for what each operation does.",
    )
    ops = p.add_subparsers(dest="op", metavar="OP")
    ops.required = True
    ls = ops.add_parser("list", help="records of one campaign or of all, oldest first")
    ls.add_argument("--campaign", type=int, default=None, help="one campaign's records (default: every campaign)")
    ls.add_argument("--after", default=None, help="cursor: the last id seen (one campaign) or CAMPAIGN:ID")
    ls.add_argument("--limit", type=int, default=100, help="records at most, 1..1000 (100)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, what in (
        ("show", "one record, with its raw fields"),
        ("redrive", "put the grant back into the grant log (fix the cause first)"),
        ("drop", "void the grant: the gate gets its seq and the user's slot back"),
    ):
        op = ops.add_parser(name, help=what)
        if name == "redrive":
            op.add_argument("campaign", type=int, nargs="?", help="campaign id")
            op.add_argument("id", nargs="?", help="dead-letter id (<ms>-<n>)")
            op.add_argument("--all", action="store_true", help="every record (of CAMPAIGN if given)")
        else:
            op.add_argument("campaign", type=int, help="campaign id")
            op.add_argument("id", help="dead-letter id (<ms>-<n>)")
        op.add_argument("--json", action="store_true", help="print the record as JSON")
    for op in ops.choices.values():
        servers(op, "the production deployment", required=True)


def _as_json(d: DeadLetter) -> dict[str, Any]:
    from ._web import to_json

    return to_json(d)  # type: ignore[no-any-return]


def _line(d: DeadLetter) -> str:
    grant = f"seq {d.seq} user {d.user_id} request {d.request_id or '-'}" if d.seq is not None else "malformed entry"
    return (
        f"{d.campaign_id:>8} {d.id:<22} {d.dead_lettered_at:%Y-%m-%d %H:%M:%S} deliveries {d.deliveries}"
        f"{f' redrives {d.redrives}' if d.redrives else ''}  {grant}  {d.reason}"
    )


def run(args: argparse.Namespace) -> int:
    from ._engine import open as open_engine

    with open_engine(redis=args.redis, postgres=args.postgres, key_prefix=args.key_prefix, writer_threads=0) as e:
        dl = e.dead_letters
        if args.op == "list":
            page = dl.list(args.campaign, after=args.after, limit=args.limit)
            for d in page:
                print(json.dumps(_as_json(d)) if args.json else _line(d))
            if not args.json:
                print(f"{len(page)} dead letter(s)", file=sys.stderr)
            return 0
        if args.op == "redrive" and args.all:
            if args.id is not None:
                print("couponcore deadletters redrive: --all takes no ID", file=sys.stderr)
                return 2
            n = dl.redrive_all(args.campaign)
            print(json.dumps({"redriven": n}) if args.json else f"{n} dead letter(s) re-driven")
            return 0
        if args.campaign is None or args.id is None:
            print(f"couponcore deadletters {args.op}: give CAMPAIGN and ID (or --all)", file=sys.stderr)
            return 2
        d = {"show": dl.get, "redrive": dl.redrive, "drop": dl.drop}[args.op](args.campaign, args.id)
        if args.json:
            print(json.dumps(_as_json(d)))
        else:
            print(_line(d))
            if args.op == "show":
                for k, v in d.fields.items():
                    print(f"  {k} = {v}")
                print(f"  entry {d.entry_id}")
            else:
                print("re-driven: the writers will write it" if args.op == "redrive" else "dropped: the grant is void")
        return 0
