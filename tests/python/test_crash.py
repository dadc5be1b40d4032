"""A process SIGKILLed while issuing loses nothing it was told was ISSUED.

Embedded only: it reads the SQLite file behind the killed engine. The production deployment's
counterparts (a worker killed mid-batch, killed connections, PostgreSQL restarts) are in
tests/cpp/production_chaos_test.cpp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import couponcore

CHILD = textwrap.dedent(
    """
    import sys, threading, couponcore
    path, campaign_id = sys.argv[1], int(sys.argv[2])
    engine = couponcore.open(path)
    out = sys.stdout
    lock = threading.Lock()

    def worker(t):
        i = 0
        while True:
            user = f"t{t}-u{i}"
            r = engine.issue(campaign_id, user)
            if r.issued:
                with lock:
                    out.write(f"{user} {r.seq}\\n")
                    out.flush()
            i += 1

    for t in range(16):
        threading.Thread(target=worker, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_sigkill_while_issuing_loses_no_acknowledged_grant(db_path: str) -> None:
    with couponcore.open(db_path) as e:
        c = e.campaigns.create("crash", quantity=1_000_000)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, db_path, str(c.id)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    told: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(told) < 3000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        user, seq = line.split()
        told[user] = int(seq)
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # answers already written before the kill
    proc.stdout.close()
    proc.wait()
    for line in rest.splitlines():
        if line.count(" ") == 1:
            user, seq = line.split()
            told[user] = int(seq)
    assert len(told) >= 3000, "the child did not get far enough"

    import sqlite3

    with couponcore.open(db_path) as e:
        st = e.stats(c.id)
        # The gate restored from the file continues the sequence without a gap.
        nxt = e.issue(c.id, "after-the-crash")
        assert nxt.seq == st.rows + 1
    rows = dict(
        sqlite3.connect(db_path)
        .execute("SELECT user_id, seq FROM coupons WHERE campaign_id = ? AND user_id != 'after-the-crash'", (c.id,))
        .fetchall()
    )
    for user, seq in told.items():
        assert rows.get(user) == seq, f"{user} was told ISSUED seq {seq} but the store has {rows.get(user)}"
    # Nothing else: the store holds only whole grants (seqs 1..n without gaps, one per user);
    # grants beyond what was reported are at most the answers in flight when the child died
    # (16 threads, each with one request outstanding, and a batch's commit before its answers).
    assert sorted(rows.values()) == list(range(1, len(rows) + 1))
    assert len(rows) - len(told) <= 16
