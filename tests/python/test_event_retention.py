"""Retention of the embedded event log (docs/events.md, "Retention"): `engine.events.prune`, the
`prune_events` job and `couponcore events prune`, with real consumer groups reading and
acknowledging. An event goes once it is old enough and every group reading its type has
acknowledged it; a pending event, or one of a type no group reads, stays (unless past the hard
cap); a group reads on unharmed after a prune; while a consumer reads and acknowledges and a
pruner prunes in other threads, the consumer still gets every event once; bad input is a typed
error that deletes nothing; production has nothing to prune."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time

import couponcore
import couponcore.jobs
import pytest
from conftest import production_kwargs
from test_events import collect, group, of_campaign
from test_jobs import config


def log_of(db_path: str) -> list[tuple[str, str]]:
    """(type, event id) of every event in the file's log, in seq order."""
    with sqlite3.connect(db_path) as conn:
        return [(str(t), str(i)) for t, i in conn.execute("SELECT type, event_id FROM events ORDER BY seq")]


def pending_of(db_path: str, grp: str) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM event_pending WHERE grp = ?", (grp,)).fetchone()[0])


def test_only_what_every_reading_group_acknowledged_goes(db_path: str) -> None:
    with couponcore.open(db_path) as e:
        c = e.campaigns.create("retention", quantity=20)
        assert all(r.issued for r in e.issue_many(c.id, [f"u{i}" for i in range(20)]))
        e.points.earn("p1", 100, idempotency_key="earn-p1")  # points.*: no group reads them
        issued = [f"coupon.issued:{c.id}:{s}" for s in range(1, 21)]
        sold_out = f"campaign.sold_out:{c.id}:20"

        # Group a reads and acknowledges both types; group b reads coupon.issued and acknowledges half.
        a, b = group(), group()
        assert len(collect(e, a, of_campaign(c.id), 21, ["coupon.issued", "campaign.sold_out"])) == 21
        got_b = collect(e, b, of_campaign(c.id), 20, ["coupon.issued"], ack=False, consumer="b1")
        assert [ev.id for ev in got_b] == issued
        assert e.events.ack(b, got_b[:10]) == 10

        assert e.events.prune(retention_s=3600)["deleted"] == 0  # nothing is an hour old
        r = e.events.prune(retention_s=0)
        assert r == {
            "deleted": 11,
            "deleted_unacknowledged": 0,
            "chunks": r["chunks"],
            "more": False,
            "supported": True,
        }
        left = log_of(db_path)
        assert [i for t, i in left if t == "coupon.issued"] == issued[10:]  # pending in b
        assert sold_out not in {i for _, i in left}
        assert [t for t, _ in left if t.startswith("points.")] == ["points.earned"]

        # b's consumer, restarted, gets its pending events back; acknowledged, they go too.
        again = collect(e, b, of_campaign(c.id), 10, ["coupon.issued"], consumer="b1", timeout_s=5)
        assert [ev.id for ev in again] == issued[10:] and all(ev.redelivered for ev in again)
        assert e.events.prune(retention_s=0, chunk_rows=3)["deleted"] == 10
        assert [t for t, _ in log_of(db_path)] == ["points.earned"]
        assert e.events.prune(retention_s=0)["deleted"] == 0

        # Groups read on: new events after a prune, none of the pruned ones again.
        d = e.campaigns.create("after", quantity=2)
        assert all(r.issued for r in e.issue_many(d.id, ["v1", "v2"]))
        nxt = collect(e, b, lambda ev: True, 2, ["coupon.issued"], timeout_s=5)
        assert [ev.id for ev in nxt] == [f"coupon.issued:{d.id}:1", f"coupon.issued:{d.id}:2"]
        assert e.events.stats()["written"] >= 24  # the log's sequence is not reused

        # The hard cap: what is older goes whatever the groups (b's pending entry with it).
        c3 = group()  # reads points.earned and leaves it pending
        assert len(collect(e, c3, lambda ev: True, 1, ["points.earned"], ack=False)) == 1
        time.sleep(0.02)
        r = e.events.prune(retention_s=0, hard_cap_s=0.01)
        assert r["deleted_unacknowledged"] >= 1 and r["supported"]
        assert "points.earned" not in {t for t, _ in log_of(db_path)} and pending_of(db_path, c3) == 0
        assert collect(e, c3, lambda ev: True, 1, ["points.earned"], timeout_s=1) == []


def test_bad_input_is_a_typed_error_and_deletes_nothing(db_path: str) -> None:
    with couponcore.open(db_path) as e:
        c = e.campaigns.create("bad", quantity=3)
        e.issue_many(c.id, ["x", "y", "z"])
        collect(e, group(), of_campaign(c.id), 4)
        before = log_of(db_path)
        with pytest.raises(couponcore.InvalidArgument):
            e.events.prune(retention_s=-1)
        with pytest.raises(couponcore.InvalidType):
            e.events.prune(retention_s="0")  # type: ignore[arg-type]
        with pytest.raises(couponcore.InvalidType):
            e.events.prune(retention_s=True)  # type: ignore[arg-type]
        with pytest.raises(couponcore.InvalidArgument, match="hard_cap_s"):
            e.events.prune(retention_s=60, hard_cap_s=30)
        with pytest.raises(couponcore.InvalidArgument, match="chunk_rows"):
            e.events.prune(retention_s=0, chunk_rows=0)
        with pytest.raises(couponcore.InvalidArgument):
            e.jobs.run("prune_events", retention_days=-1)
        assert log_of(db_path) == before


def test_a_consumer_gets_every_event_once_while_a_pruner_prunes(db_path: str) -> None:
    with couponcore.open(db_path) as e:
        campaigns = [e.campaigns.create(f"busy-{i}", quantity=300) for i in range(4)]
        grp = group()
        seen: list[str] = []
        done = threading.Event()
        pruned = [0]

        def consume() -> None:
            for ev in e.events.consume(grp, ["coupon.issued"], block_ms=50, idle_timeout_s=3):
                seen.append(ev.id)
                ev.ack()
                if len(seen) == 1200:
                    return

        def prune() -> None:
            while not done.is_set():
                pruned[0] += e.events.prune(retention_s=0, chunk_rows=50)["deleted"]

        threads = [threading.Thread(target=consume), threading.Thread(target=prune)]
        for t in threads:
            t.start()
        for c in campaigns:
            for i in range(0, 300, 30):
                assert all(r.issued for r in e.issue_many(c.id, [f"c{c.id}-u{j}" for j in range(i, i + 30)]))
        threads[0].join(60)
        done.set()
        threads[1].join(60)
        want = {f"coupon.issued:{c.id}:{s}" for c in campaigns for s in range(1, 301)}
        assert len(seen) == len(set(seen)) == 1200 and set(seen) == want
        pruned[0] += e.events.prune(retention_s=0)["deleted"]
        assert pruned[0] == 1200  # every one acknowledged, so every one went, once
        assert [t for t, _ in log_of(db_path) if t == "coupon.issued"] == []


def test_the_job_and_the_command(db_path: str) -> None:
    assert couponcore.jobs.DEFAULT_CRON["prune_events"] == "53 * * * *"
    with couponcore.open(db_path) as e:
        e.jobs.configure(config())
        grp = group()
        c = e.campaigns.create("job", quantity=5)
        e.issue_many(c.id, [f"j{i}" for i in range(5)])
        collect(e, grp, of_campaign(c.id), 6)  # every coupon.issued and the sold_out, acknowledged
        run = e.jobs.run("prune_events", retention_days=0)
        assert run.state == "succeeded", run
        assert run.result is not None and run.result["rows"] == run.result["deleted"] == 6
        d = e.campaigns.create("cli", quantity=2)
        e.issue_many(d.id, ["k1", "k2"])
        collect(e, grp, of_campaign(d.id), 3)
    cmd = [sys.executable, "-m", "couponcore", "events", "prune", "--path", db_path, "--retention-days", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["deleted"] == 3
    assert log_of(db_path) == []
    bad = subprocess.run(cmd[:5] + cmd[7:], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "give --redis and --postgres, or --path" in bad.stderr


def test_production_has_nothing_to_prune() -> None:
    with couponcore.open(**production_kwargs()) as e:
        assert e.events.prune(retention_s=0) == {
            "deleted": 0,
            "deleted_unacknowledged": 0,
            "chunks": 0,
            "more": False,
            "supported": False,
        }
