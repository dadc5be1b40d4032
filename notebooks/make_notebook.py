"""Writes notebooks/flash_sale_replay.ipynb from the cells below (run it after editing them).
The test suite executes the notebook with nbclient and fails if any cell fails."""

from pathlib import Path

import nbformat as nbf

cells = [
    (
        "md",
        """# Replaying a flash sale

This notebook replays a flash-sale burst against couponcore's **embedded engine** (an
in-process gate and an in-memory SQLite store: no servers) and asks what-if questions a
data scientist would otherwise answer with a spreadsheet: *how fast does it sell out, how
long do users wait, is first-come really first-served, and what if the quantity were larger
or users retried less?*""",
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt
import pandas as pd

import couponcore
from couponcore import replay""",
    ),
    (
        "md",
        """## The traffic

A burst at 10:00: 30,000 users, 60% of them press within the first second, one in five
presses a second time shortly after. `replay.load_trace("yesterday.csv")` would read a recorded
trace instead (columns `timestamp, user, campaign, action`).""",
    ),
    (
        "code",
        """traffic = replay.flash_sale(users=30_000, duration_s=5.0, peak_share_first_s=0.6,
                           repeat_press_share=0.2, seed=1)
print(len(traffic), "requests from", traffic.user_id.nunique(), "users")
traffic.head()""",
    ),
    (
        "code",
        """ax = traffic.t_s.hist(bins=50, figsize=(7, 3))
ax.set_xlabel("seconds after opening"); ax.set_ylabel("presses"); ax.set_title("Arrivals");""",
    ),
    (
        "md",
        """## One replay

10,000 coupons; users who are told `SOLD_OUT` come back with probability 0.3 about half a
second later. `pace="fast"` replays in virtual time as fast as the engine goes.""",
    ),
    (
        "code",
        """with couponcore.open(":memory:") as engine:
    run = replay.replay(engine, traffic, quantity=10_000,
                        retry=replay.RetryPolicy(probability=0.3, delay_s=0.5), progress=True)
pd.Series(run.summary)""",
    ),
    (
        "code",
        """assert run.summary["issued"] == 10_000            # exactly N, never one more
winners = run.df[run.df.status == "ISSUED"].drop_duplicates("seq")
assert winners.user_id.is_unique                    # never twice to one user
assert sorted(winners.seq) == list(range(1, 10_001))
run.df.head()""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
replay.plot_issuance(run.df, ax=axes[0])
replay.plot_latency(run.df, ax=axes[1]);""",
    ),
    (
        "md",
        """## Is it fair?

Among the winners, the FCFS rank (`seq`) is compared with the order in which they pressed.
`overtaken_users` counts users who pressed before the last winner but got nothing.""",
    ),
    ("code", """pd.Series(replay.fairness(run.df))"""),
    (
        "md",
        """## What if?

The same traffic for three quantities, with and without retries: time to sell out and how
many requests the sale cost.""",
    ),
    (
        "code",
        """sweep = replay.sweep(lambda: couponcore.open(":memory:"), traffic,
                     quantities=[5_000, 10_000, 20_000],
                     retries=[None, replay.RetryPolicy(probability=0.5, delay_s=0.3)])
sweep[["quantity", "retry_probability", "requests", "issued", "time_to_sold_out_s", "sold_out"]]""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
replay.plot_sweep(sweep, "time_to_sold_out_s", ax=axes[0])
replay.plot_sweep(sweep, "requests", ax=axes[1]);
assert (sweep.issued == sweep.quantity.clip(upper=traffic.user_id.nunique())).all()""",
    ),
    (
        "md",
        """## Real pace

`pace="real"` sends each request at its recorded time (here 4× faster) through `aissue`, so
latencies are what one user would see.""",
    ),
    (
        "code",
        """small = replay.flash_sale(users=2_000, duration_s=2.0, seed=2)
with couponcore.open(":memory:") as engine:
    real = replay.replay(engine, small, quantity=500, pace="real", speed=4.0)
pd.Series(real.summary)[["requests", "issued", "time_to_sold_out_s", "p50_ms", "p95_ms", "p99_ms"]]""",
    ),
]

nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
for kind, src in cells:
    nb.cells.append(nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src))
Path(__file__).with_name("flash_sale_replay.ipynb").write_text(nbf.writes(nb))
