"""Live windows in operation (docs/windows.md): the aggregator inside `couponcore worker` (one
active of several, another takes over when it is killed), the recorder's and the aggregator's
metrics, seconds without answers as rows of zeros (bounded), and the event clock."""

from __future__ import annotations

import collections
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable

import couponcore
from conftest import metric_samples, production_kwargs
from couponcore.windows import Aggregator, SqliteSource, SqliteStore


def _summed(rows: list[dict]) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for r in rows:
        out.update(r["by_status"])
    return out


def _wait(what: Callable[[], bool], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return what()


# ---- seconds without answers -------------------------------------------------------------------


def _log(path: str, records: list[tuple[int, str]]) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO answer_log (campaign_id, record) VALUES (?, ?)", records)
    db.close()


def test_empty_seconds_are_rows_of_zeros_up_to_the_idle_span(db_path: str) -> None:
    couponcore.open(db_path).close()  # the schema
    s = 2_000_000
    _log(db_path, [
        (3, f"1 {s * 1000 + 500} a.1 {s}/0=2/40=2/900"),
        (3, f"1 {(s + 3) * 1000} a.2 {s + 3}/1=1/40=1/800"),     # s+1, s+2: no answers
        (3, f"1 {(s + 30) * 1000} a.3 {s + 30}/1=4/40=4/700"),   # 26 quiet seconds after s+3
        (3, f"1 {(s + 40) * 1000} a.4"),                          # a tick: watermark s+38
    ])  # fmt: skip
    agg = Aggregator(SqliteSource(db_path), SqliteStore(db_path), lateness_ms=2000, fill_idle_s=5)
    assert agg.run() == 4
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT start_s, answers FROM answer_windows WHERE size_s = 1 ORDER BY start_s").fetchall()
    db.close()
    # zeros between answers, and at most fill_idle_s (5) seconds after the last one
    expected = [(s, 2), (s + 1, 0), (s + 2, 0), (s + 3, 1), *[(t, 0) for t in range(s + 4, s + 9)], (s + 30, 4)]
    expected += [(t, 0) for t in range(s + 31, s + 36)]
    assert rows == expected
    with couponcore.open(db_path) as engine:
        frame = engine.windows.frame(3, "1s", refresh=False, include_open=False)
        assert list(frame["answers"][:4]) == [2, 0, 0, 1] and int(frame["answers"].sum()) == 7


def test_a_quiet_second_has_a_row_on_both_deployments(open_deployment: Callable[..., couponcore.Engine]) -> None:
    engine = open_deployment(windows_flush_ms=20)
    try:
        c = engine.campaigns.create("quiet", quantity=5).id
        got = collections.Counter(str(r.status) for r in engine.issue_many(c, [f"u{i}" for i in range(4)]))
        time.sleep(2.2)  # two or three seconds without an answer
        got.update(str(r.status) for r in engine.issue_many(c, [f"v{i}" for i in range(4)]))
        assert _wait(
            lambda: (
                engine.windows.aggregate() >= 0 and _summed(engine.windows.rows(c, "1s", include_open=False)) == got
            ),
            15,
        )
        rows = engine.windows.rows(c, "1s", include_open=False)
        starts = [r["start_s"] for r in rows]
        assert starts == list(range(starts[0], starts[-1] + 1)), "a second is missing"
        assert sum(1 for r in rows if r["answers"] == 0) >= 1
        assert all(r["by_status"] == {} and r["max_us"] == 0 for r in rows if r["answers"] == 0)
    finally:
        engine.close()


# ---- metrics -----------------------------------------------------------------------------------


def test_recorder_and_aggregator_metrics(open_deployment: Callable[..., couponcore.Engine]) -> None:
    from couponcore.metrics import CouponcoreCollector

    engine = open_deployment(windows_flush_ms=20)
    try:
        c = engine.campaigns.create("metrics", quantity=3).id
        assert len(engine.issue_many(c, [f"u{i}" for i in range(7)])) == 7
        engine.windows.flush()
        m = metric_samples(engine.metrics_text())
        assert m["couponcore_windows_answers_recorded_total"] == 7
        assert m["couponcore_windows_records_flushed_total"] >= 1
        assert m["couponcore_windows_flush_failures_total"] == 0
        assert m["couponcore_windows_records_dropped_total"] == m["couponcore_windows_answers_dropped_total"] == 0
        assert abs(m["couponcore_windows_clock_offset_seconds"]) < 5
        # records wait: the aggregator is behind by about their age
        time.sleep(1.5)
        m = metric_samples(engine.metrics_text())
        assert m["couponcore_windows_aggregator_lag_seconds"] >= 1.2
        assert m["couponcore_windows_late_answers_total"] == 0
        engine.windows.aggregate()
        # caught up (but for the ticks the recorder appended since)
        assert metric_samples(engine.metrics_text())["couponcore_windows_aggregator_lag_seconds"] < 1.0
        names = {f.name for f in CouponcoreCollector(engine).collect()}
        assert {"couponcore_windows_flush_failures", "couponcore_windows_aggregator_lag_seconds"} <= names
    finally:
        engine.close()


def test_failed_flushes_are_counted_kept_and_retried(db_path: str) -> None:
    with couponcore.open(db_path, windows_flush_ms=20) as engine:
        c = engine.campaigns.create("fail", quantity=10).id
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("ALTER TABLE answer_log RENAME TO answer_log_away")  # every append now fails
        for i in range(5):
            engine.issue(c, f"u{i}")
        assert _wait(lambda: metric_samples(engine.metrics_text())["couponcore_windows_flush_failures_total"] >= 3, 10)
        other.execute("ALTER TABLE answer_log_away RENAME TO answer_log")
        other.close()
        engine.windows.flush()
        m = metric_samples(engine.metrics_text())
        assert m["couponcore_windows_answers_dropped_total"] == 0
        engine.windows.aggregate()
        assert _summed(engine.windows.rows(c, "1min")) == {"ISSUED": 5}  # nothing lost


# ---- the aggregator in `couponcore worker` -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _active(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return metric_samples(r.read().decode()).get("couponcore_windows_aggregator_active")
    except OSError:
        return None


def test_one_worker_aggregates_and_another_takes_over_when_it_is_killed() -> None:
    kw = production_kwargs()
    ports = [_free_port(), _free_port()]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "couponcore",
                "worker",
                "--redis",
                kw["redis"],
                "--postgres",
                kw["postgres"],
                "--key-prefix",
                kw["key_prefix"],
                "--report-s",
                "0",
                "--metrics-port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for port in ports
    ]
    tally: collections.Counter = collections.Counter()
    lock = threading.Lock()
    try:
        with couponcore.open(**kw, windows_flush_ms=20, writer_threads=0) as engine:
            c = engine.campaigns.create("two workers", quantity=400).id

            def traffic(seconds: float, seed: int) -> None:
                end, i = time.monotonic() + seconds, 0
                while time.monotonic() < end:
                    got = engine.issue_many(c, [f"u{seed}-{(i * 5 + j) % 300}" for j in range(5)])
                    with lock:
                        tally.update(str(r.status) for r in got)
                    i += 1
                    time.sleep(0.005)

            assert _wait(lambda: sorted(_active(p) or 0 for p in ports) == [0, 1], 30), [_active(p) for p in ports]
            holder = 0 if _active(ports[0]) == 1 else 1
            threads = [threading.Thread(target=traffic, args=(3.0, t)) for t in range(4)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            workers[holder].send_signal(signal.SIGKILL)  # mid-traffic, maybe mid-batch
            workers[holder].wait()
            for t in threads:
                t.join()
            standby = 1 - holder
            assert _wait(lambda: _active(ports[standby]) == 1, 20)
            # the standby finalises every second (ticks move the watermark 2 s past the last answer):
            # exact, though the holder died with its batch in hand
            assert _wait(lambda: _summed(engine.windows.rows(c, "1s", include_open=False)) == tally, 30)
            assert _summed(engine.windows.rows(c, "1min")) == tally  # final and open minutes
            assert tally["ISSUED"] == 400 and tally["SOLD_OUT"] > 0
            assert workers[standby].poll() is None
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
            w.communicate(timeout=30)  # the killed one's too (closes its pipe)
