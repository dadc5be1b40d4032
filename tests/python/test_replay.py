"""Traffic replay: models, both paces, retries, analyses, and the notebook end to end."""

from __future__ import annotations

import time
from pathlib import Path

import couponcore
import pytest
from couponcore import replay

REPO = Path(__file__).resolve().parents[2]


def test_flash_sale_model_shape() -> None:
    t = replay.flash_sale(users=10_000, duration_s=5.0, peak_share_first_s=0.6, repeat_press_share=0.25, seed=3)
    first = t[t.kind == "press"]
    assert first.user_id.nunique() == 10_000
    assert 0.55 < (first.t_s < 1.0).mean() < 0.65  # the burst
    assert 0.22 < (t.kind == "repeat").sum() / 10_000 < 0.28
    assert t.t_s.is_monotonic_increasing and t.t_s.max() <= 5.0
    with pytest.raises(ValueError):
        replay.flash_sale(users=0)


def test_poisson_rate() -> None:
    t = replay.poisson(rate_per_s=2000, duration_s=5, users=100, seed=1)
    assert 9000 < len(t) < 11000
    assert t.user_id.nunique() == 100


def test_fast_replay_invariants_and_retries() -> None:
    traffic = replay.flash_sale(users=8000, duration_s=3.0, seed=5)
    with couponcore.open(":memory:") as e:
        run = replay.replay(e, traffic, quantity=2000, retry=replay.RetryPolicy(probability=0.5, delay_s=0.2))
    df, s = run.df, run.summary
    winners = df[df.status == "ISSUED"].drop_duplicates("seq")
    assert s["issued"] == 2000 and len(winners) == 2000
    assert winners.user_id.is_unique
    assert sorted(winners.seq) == list(range(1, 2001))
    assert s["retries"] > 0 and (df.kind == "retry").sum() == s["retries"]
    assert s["requests"] == len(traffic) + s["retries"]
    assert s["time_to_sold_out_s"] is not None
    # Fed in arrival order, the gate is strictly first-come-first-served.
    assert s["rank_deviation_max"] == 0 and s["overtaken_users"] == 0


def test_real_pace_follows_the_clock() -> None:
    traffic = replay.poisson(rate_per_s=400, duration_s=1.0, users=300, seed=2)
    with couponcore.open(":memory:") as e:
        t0 = time.perf_counter()
        run = replay.replay(e, traffic, quantity=100, pace="real", speed=2.0)
        took = time.perf_counter() - t0
    assert took >= 0.45  # 1 s of traffic at 2x cannot finish before 0.5 s
    assert len(run.df) == len(traffic)
    assert run.summary["issued"] == 100
    assert (run.df.latency_ms >= 0).all()


def test_trace_from_csv(tmp_path: Path) -> None:
    p = tmp_path / "trace.csv"
    p.write_text(
        "timestamp,user,campaign,action\n"
        "2026-11-21T10:00:00.000Z,a,c1,issue\n"
        "2026-11-21T10:00:00.500Z,b,c1,issue\n"
        "2026-11-21T10:00:00.250Z,c,c1,view\n"
        "2026-11-21T10:00:01.000Z,a,c1,issue\n"
    )
    t = replay.load_trace(str(p))
    assert list(t.user_id) == ["a", "b", "a"]
    assert list(t.t_s) == [0.0, 0.5, 1.0]
    with couponcore.open(":memory:") as e:
        run = replay.replay(e, t, quantity=5)
    assert list(run.df.status) == ["ISSUED", "ISSUED", "ALREADY_ISSUED"]


def test_sweep_what_if() -> None:
    traffic = replay.flash_sale(users=3000, duration_s=2.0, seed=4)
    sw = replay.sweep(
        lambda: couponcore.open(":memory:"),
        traffic,
        quantities=[500, 1000],
        retries=[None, replay.RetryPolicy(probability=1.0, delay_s=0.1, max_retries=1)],
    )
    assert len(sw) == 4
    assert list(sw.issued) == [500, 500, 1000, 1000]
    with_retry = sw[sw.retry_probability == 1.0]
    without = sw[sw.retry_probability == 0.0]
    assert (with_retry.requests.values > without.requests.values).all()


def test_notebook_runs_end_to_end() -> None:
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "flash_sale_replay.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
