"""Live windows (docs/windows.md): the windows add up to what the callers got, on both
deployments; the watermark finalises windows and drops late answers as documented; a killed and
restarted aggregator writes the same rows as one that ran through."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import couponcore
import pytest
from conftest import env_url, production_kwargs
from couponcore.windows import Aggregator, SqliteSource, SqliteStore

STATUSES = ("ISSUED", "SOLD_OUT", "ALREADY_ISSUED")


def _issue_storm(engine: couponcore.Engine, campaigns: list[int], threads: int = 8, per_thread: int = 120):
    """Many threads issue to every campaign (users repeat: ALREADY_ISSUED; stock runs out:
    SOLD_OUT); returns the callers' tally per campaign and status."""
    tally: dict[int, collections.Counter] = {c: collections.Counter() for c in campaigns}
    lock = threading.Lock()

    def worker(t: int) -> None:
        rnd = random.Random(t)
        mine: dict[int, collections.Counter] = {c: collections.Counter() for c in campaigns}
        for i in range(per_thread):
            c = campaigns[i % len(campaigns)]
            if i % 7 == 0:
                users = [f"u{rnd.randrange(200)}" for _ in range(5)]
                for r in engine.issue_many(c, users):
                    mine[c][str(r.status)] += 1
            else:
                mine[c][str(engine.issue(c, f"u{rnd.randrange(200)}").status)] += 1
        with lock:
            for c in campaigns:
                tally[c].update(mine[c])

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return tally


def _summed(rows: list[dict]) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for r in rows:
        out.update(r["by_status"])
        assert r["answers"] == sum(r["by_status"].values())
    return out


def test_windows_add_up_to_what_the_callers_got(open_deployment: Callable[..., couponcore.Engine]) -> None:
    engine = open_deployment(windows_flush_ms=20)
    try:
        campaigns = [engine.campaigns.create(f"w{i}", quantity=150).id for i in range(2)]
        tally = _issue_storm(engine, campaigns)
        assert all(tally[c]["SOLD_OUT"] > 0 and tally[c]["ALREADY_ISSUED"] > 0 for c in campaigns)
        assert engine.windows.flush()
        # The watermark passes the last answers' windows once ticks 2 s (the lateness) later
        # arrive: until then they are open; both kinds add up to the callers' answers.
        engine.windows.aggregate()
        for c in campaigns:
            assert _summed(engine.windows.rows(c, "1s")) == tally[c]
            assert _summed(engine.windows.rows(c, "1min")) == tally[c]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            engine.windows.aggregate()
            if all(r["final"] for c in campaigns for r in engine.windows.rows(c, "1s")):
                break
            time.sleep(0.1)
        for c in campaigns:
            rows = engine.windows.rows(c, "1s")
            assert rows and all(r["final"] for r in rows), "the 1 s windows did not become final"
            assert _summed(rows) == tally[c]
            assert [r["start_s"] for r in rows] == sorted({r["start_s"] for r in rows})
            assert all(0 <= r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["max_us"] for r in rows)
            assert _summed(engine.windows.rows(c, "1min")) == tally[c]
            assert engine.windows.late(c) == 0
            frame = engine.windows.frame(c, "1s")
            assert int(frame["ISSUED"].sum()) == 150
            assert int(frame["answers"].sum()) == sum(tally[c].values())
        # More records (ticks) change no final window.
        before = {c: engine.windows.rows(c, "1s", include_open=False) for c in campaigns}
        time.sleep(0.1)
        engine.windows.aggregate()
        assert {c: engine.windows.rows(c, "1s", include_open=False) for c in campaigns} == before
    finally:
        engine.close()


def test_the_engines_thread_aggregates(open_deployment: Callable[..., couponcore.Engine]) -> None:
    engine = open_deployment(windows_flush_ms=20)
    try:
        c = engine.campaigns.create("thread", quantity=3).id
        got = collections.Counter(str(r.status) for r in engine.issue_many(c, [f"u{i % 4}" for i in range(8)]))
        engine.windows.start(every_s=0.05)
        deadline = time.monotonic() + 10
        while _summed(engine.windows.rows(c, "1min")) != got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _summed(engine.windows.rows(c, "1min")) == got
        with pytest.raises(couponcore.InvalidArgument):
            engine.windows.start(every_s=0)
    finally:
        engine.close()  # stops the thread


def test_windows_off_records_nothing(open_deployment: Callable[..., couponcore.Engine]) -> None:
    engine = open_deployment(windows=False)
    try:
        c = engine.campaigns.create("off", quantity=5).id
        for i in range(10):
            engine.issue(c, f"u{i}")
        assert engine.windows.flush() is False
        engine.windows.aggregate()
        assert engine.windows.rows(c) == []
    finally:
        engine.close()


def _log(path: str, records: list[tuple[int, str]]) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO answer_log (campaign_id, record) VALUES (?, ?)", records)
    db.close()


def test_watermark_finalises_and_drops_late_answers(db_path: str) -> None:
    couponcore.open(db_path).close()  # the schema
    s = 1_000_000  # seconds since the epoch
    _log(db_path, [
        (7, f"1 {s * 1000 + 900} a.1 {s}/0=3,1=2/40=5/1200"),
        (7, f"1 {(s + 1) * 1000 + 500} a.2 {s + 1}/0=1/44=1/2000"),   # watermark s-0.5: nothing final
        (7, f"1 {(s + 1) * 1000 + 500} a.2 {s + 1}/0=1/44=1/2000"),   # the same record again: skipped
        (7, f"1 {(s + 3) * 1000} b.1 {s}/2=4/40=4/900"),              # watermark s+1: s final, with this
        (7, f"1 {(s + 3) * 1000 + 100} a.3 {s}/5=6/40=6/800"),        # late: s is final -> counted, dropped
        (7, f"1 {(s + 63) * 1000} b.2"),                              # a tick: s+1 and the minute final
    ])  # fmt: skip
    agg = Aggregator(SqliteSource(db_path), SqliteStore(db_path), lateness_ms=2000, batch_records=2)
    assert agg.run() == 6
    db = sqlite3.connect(db_path)
    rows = db.execute(
        "SELECT size_s, start_s, answers, counts, max_us FROM answer_windows ORDER BY size_s, start_s"
    ).fetchall()
    minute = s - s % 60
    # the seconds after the last answer, up to the watermark (s + 61), have rows of zeros
    assert rows == [
        (1, s, 9, '{"0":3,"1":2,"2":4}', 1200),
        (1, s + 1, 1, '{"0":1}', 2000),
        *[(1, t, 0, "{}", 0) for t in range(s + 2, s + 61)],
        (60, minute, 10, '{"0":4,"1":2,"2":4}', 2000),
    ]
    state = json.loads(db.execute("SELECT state FROM windows_state").fetchone()[0])
    assert state["campaigns"]["7"]["late"] == 6
    # A status the engine adds later (5 = RATE_LIMITED) is carried by number and named.
    _log(db_path, [(7, f"1 {(s + 64) * 1000} a.4 {s + 62}/5=2/40=2/100"), (7, f"1 {(s + 70) * 1000} a.5")])
    agg.run()
    with couponcore.open(db_path) as engine:
        frame = engine.windows.frame(7, "1s", refresh=False)
        assert int(frame["RATE_LIMITED"].sum()) == 2 and int(frame["answers"].sum()) == 12
        assert engine.windows.late(7) == 6


def _table(path: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM answer_windows ORDER BY campaign_id, size_s, start_s").fetchall()
    finally:
        db.close()


def _answers_for(engine: couponcore.Engine, campaigns: list[int], seconds: float) -> None:
    """Batches of 10 over the campaigns for `seconds`, then 2.2 s of ticks: the watermark passes
    the last seconds (the lateness is 2 s)."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        engine.issue_many(campaigns[i % len(campaigns)], [f"u{(i * 10 + j) % 600}" for j in range(10)])
        i += 1
    time.sleep(2.2)


def _kill_after_progress(cmd: list[str], position: Callable[[], Any], final: Any, kills: int = 4) -> list[Any]:
    """Starts the aggregator `kills` times and SIGKILLs it soon after it committed something
    (a random 0-30 ms later: mid-batch or between batches); returns the positions it was killed
    at (the committed ones, read afterwards)."""
    rnd = random.Random(18)
    out = []
    for _ in range(kills):
        before = position()
        p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while position() == before and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rnd.uniform(0, 0.03))
        p.send_signal(signal.SIGKILL)
        p.wait()
        at = position()
        if at == final:
            break
        out.append(at)
    return out


def _state(path: str) -> dict:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT state FROM windows_state").fetchone()
        return json.loads(row[0]) if row else {"positions": {"log": "0"}}
    finally:
        db.close()


def test_killed_aggregator_writes_the_same_rows(db_path: str, tmp_path, python: str) -> None:
    # Answers over a few seconds, flushed every 10 ms: a few hundred records in answer_log.
    with couponcore.open(db_path, windows_flush_ms=10) as engine:
        campaigns = [engine.campaigns.create(f"k{i}", quantity=400).id for i in range(3)]
        _answers_for(engine, campaigns, 2.0)
    ref = str(tmp_path / "ref.db")
    src, dst = sqlite3.connect(db_path), sqlite3.connect(ref)
    src.backup(dst)  # the same source (with what is still in the WAL)
    src.close()
    dst.close()
    cmd = [python, "-m", "couponcore.windows", "--batch", "1", "--every-s", "0.01"]
    env = dict(os.environ)
    subprocess.run([*cmd, "--sqlite", ref, "--once"], check=True, env=env, timeout=120)
    expected = _table(ref)
    assert len(expected) >= 6  # 3 campaigns, >= 2 seconds each
    final_position = int(_state(ref)["positions"]["log"])
    killed_at = _kill_after_progress(
        [*cmd, "--sqlite", db_path], lambda: int(_state(db_path)["positions"]["log"]), final_position
    )
    # The kills landed part of the way through (each run resumed where the last one committed).
    assert len(killed_at) >= 3 and all(0 < at < final_position for at in killed_at), (killed_at, final_position)
    assert killed_at == sorted(killed_at)
    subprocess.run([*cmd, "--sqlite", db_path, "--once"], check=True, env=env, timeout=120)
    assert _table(db_path) == expected
    assert _state(db_path) == _state(ref)  # the open windows, late tallies and positions too


def test_bad_input(db_path: str) -> None:
    with couponcore.open(db_path) as engine:
        with pytest.raises(couponcore.InvalidArgument):
            engine.windows.rows(1, "5s")
        with pytest.raises(couponcore.InvalidType):
            engine.windows.rows("1")  # type: ignore[arg-type]
        with pytest.raises(couponcore.InvalidArgument):
            engine.windows.rows(1, limit=0)
    with couponcore.open(":memory:") as engine:
        with pytest.raises(couponcore.Unavailable):
            _ = engine.windows
    with pytest.raises(couponcore.InvalidArgument):
        couponcore.open(db_path, windows_flush_ms=5)


def _pg_windows(dsn: str, prefix: str, campaigns: list[int]) -> tuple[list[tuple], dict]:
    import psycopg

    with psycopg.connect(dsn) as conn:  # other tests of the run share the database: only ours
        rows = conn.execute(
            "SELECT * FROM answer_windows WHERE campaign_id = ANY(%s) ORDER BY campaign_id, size_s, start_s",
            (campaigns,),
        ).fetchall()
        st = conn.execute("SELECT state FROM windows_state WHERE name = %s", (prefix,)).fetchone()
    return rows, (json.loads(st[0]) if st else {"positions": {}})


def test_killed_aggregator_writes_the_same_rows_production(python: str) -> None:
    import psycopg

    kw = production_kwargs()
    with couponcore.open(**kw, windows_flush_ms=10) as engine:
        campaigns = [engine.campaigns.create(f"kp{i}", quantity=300).id for i in range(2)]
        _answers_for(engine, campaigns, 1.5)
    # The reference: an uninterrupted run over the same streams into a database of its own.
    ref = os.environ["COUPONCORE_TEST_POSTGRES_DB"] + "_wref"
    admin = env_url("COUPONCORE_TEST_POSTGRES_ADMIN_URL")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{ref}"')
        conn.execute(f'CREATE DATABASE "{ref}"')
    ref_url = kw["postgres"].rsplit("/", 1)[0] + "/" + ref
    couponcore.migrate(ref_url)
    cmd = [python, "-m", "couponcore.windows", "--batch", "1", "--every-s", "0.01",
           "--redis", kw["redis"], "--key-prefix", kw["key_prefix"]]  # fmt: skip
    subprocess.run([*cmd, "--postgres", ref_url, "--once"], check=True, timeout=120)
    expected, expected_state = _pg_windows(ref_url, kw["key_prefix"], campaigns)
    assert len(expected) >= 2  # 2 campaigns, >= 1 final second each
    killed_at = _kill_after_progress(
        [*cmd, "--postgres", kw["postgres"]],
        lambda: _pg_windows(kw["postgres"], kw["key_prefix"], campaigns)[1]["positions"],
        expected_state["positions"],
    )
    assert len(killed_at) >= 3, killed_at
    subprocess.run([*cmd, "--postgres", kw["postgres"], "--once"], check=True, timeout=120)
    got, got_state = _pg_windows(kw["postgres"], kw["key_prefix"], campaigns)
    assert got == expected
    assert got_state == expected_state


def test_the_ops_page_shows_the_last_minute(db_path: str) -> None:
    from couponcore.ops.snapshot import SnapshotTaker
    from couponcore.ops.windows_view import render_windows

    with couponcore.open(db_path, windows_flush_ms=20) as engine:
        c = engine.campaigns.create("live sale", quantity=2).id
        for i in range(5):
            engine.issue(c, f"u{i}")
        engine.windows.flush()
        html = render_windows(SnapshotTaker(engine).take().windows)
    row = html[html.index(f'data-campaign="{c}"') :]
    assert "<svg" in row and "ISSUED 2" in row and "SOLD_OUT 3" in row
    with couponcore.open(":memory:") as engine:
        engine.campaigns.create("live sale", quantity=2)
        assert "Not available" in render_windows(SnapshotTaker(engine).take().windows)
