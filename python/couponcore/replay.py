"""Traffic replay for notebooks: what would the sale have done with other numbers?

    from couponcore import replay
    traffic = replay.flash_sale(users=50_000, duration_s=5.0, repeat_press_share=0.2)
    run = replay.replay(couponcore.open(":memory:"), traffic, quantity=10_000,
                        retry=replay.RetryPolicy(probability=0.3, delay_s=0.5))
    run.df          # one row per request: sent_s, answered_s, latency_ms, status, seq, ...
    run.summary     # requests, issued, time_to_sold_out_s, p50/p95/p99, fairness ...
    replay.plot_issuance(run.df)
    replay.plot_windows(engine.windows.frame(campaign_id))   # the live windows (docs/windows.md)

Traffic is a DataFrame with the columns ``t_s`` (seconds after opening), ``user_id`` and
``request_id`` (and optionally ``campaign`` and ``action``): build it with :func:`flash_sale`,
:func:`poisson`, or read a recorded trace with :func:`load_trace` (CSV or Parquet with
``timestamp, user, campaign, action``).

Two paces:
- ``pace="fast"`` (default) replays in virtual time as fast as the engine goes: requests are
  taken in arrival order and decided in batches of ``batch_size`` through ``issue_many``; the
  latency column is then the wall time of the batch call that carried the request.
- ``pace="real"`` replays at the recorded pace (``speed`` times faster), each request its own
  ``aissue`` on an asyncio loop, so latencies are per request as a user would see them.

Retries (:class:`RetryPolicy`) depend on the answers, so they are decided during the replay:
after an answer in ``on`` the user comes back with ``probability`` after ``delay_s``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

if TYPE_CHECKING:  # pandas and matplotlib are imported lazily: the package does not need them
    import pandas as pd

    from ._engine import Engine


def _pd() -> Any:
    import pandas as pd

    return pd


# --------------------------------------------------------------------------------------------
# Traffic models


def flash_sale(
    users: int = 100_000,
    duration_s: float = 10.0,
    peak_share_first_s: float = 0.6,
    repeat_press_share: float = 0.2,
    repeat_delay_s: float = 0.3,
    seed: int = 0,
) -> pd.DataFrame:
    """A burst at opening time: arrivals decay exponentially so that ``peak_share_first_s`` of
    the users press within the first second; ``repeat_press_share`` of them press once more
    ``repeat_delay_s`` (exponentially distributed) later."""
    if users <= 0 or duration_s <= 0 or not (0 < peak_share_first_s < 1) or not (0 <= repeat_press_share <= 1):
        raise ValueError(
            "users and duration_s must be positive, peak_share_first_s in (0,1), repeat_press_share in [0,1]"
        )
    rng = random.Random(seed)
    rate = -math.log(1 - peak_share_first_s)  # P(t < 1s) = peak_share_first_s
    rows: list[tuple[float, str, str, str]] = []
    for u in range(users):
        t = min(rng.expovariate(rate), duration_s)
        user = f"user-{u:07d}"
        rows.append((t, user, f"{user}-p0", "press"))
        if rng.random() < repeat_press_share:
            rows.append((min(t + rng.expovariate(1 / repeat_delay_s), duration_s), user, f"{user}-p1", "repeat"))
    return _frame(rows)


def poisson(rate_per_s: float, duration_s: float, users: int, seed: int = 0) -> pd.DataFrame:
    """Poisson arrivals at ``rate_per_s`` for ``duration_s`` seconds from ``users`` users
    chosen uniformly (a user may come back)."""
    if rate_per_s <= 0 or duration_s <= 0 or users <= 0:
        raise ValueError("rate_per_s, duration_s and users must be positive")
    rng = random.Random(seed)
    rows: list[tuple[float, str, str, str]] = []
    t = rng.expovariate(rate_per_s)
    i = 0
    while t < duration_s:
        user = f"user-{rng.randrange(users):07d}"
        rows.append((t, user, f"{user}-r{i}", "press"))
        i += 1
        t += rng.expovariate(rate_per_s)
    return _frame(rows)


def load_trace(path: str) -> pd.DataFrame:
    """A recorded trace (CSV, or Parquet by the ``.parquet`` suffix) with columns
    ``timestamp`` (ISO time or Unix seconds), ``user``, ``campaign`` and ``action``; only rows
    whose action is ``issue`` (or empty) are replayed. Times become seconds after the first."""
    pd = _pd()
    df = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    missing = {"timestamp", "user"} - set(df.columns)
    if missing:
        raise ValueError(f"trace {path} lacks the columns {sorted(missing)}")
    if "action" in df.columns:
        df = df[df["action"].fillna("issue").isin(["issue", ""])]
    ts = df["timestamp"]
    if pd.api.types.is_numeric_dtype(ts):
        secs = ts.astype(float)
    else:
        secs = (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    out = pd.DataFrame(
        {
            "t_s": secs - secs.min(),
            "user_id": df["user"].astype(str),
            "request_id": [f"trace-{i}" for i in range(len(df))],
            "kind": "press",
        }
    )
    if "campaign" in df.columns:
        out["campaign"] = df["campaign"].astype(str).values
    return out.sort_values("t_s", kind="stable").reset_index(drop=True)


def _frame(rows: list[tuple[float, str, str, str]]) -> pd.DataFrame:
    pd = _pd()
    df = pd.DataFrame(rows, columns=["t_s", "user_id", "request_id", "kind"])
    return df.sort_values("t_s", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Replay


@dataclass(frozen=True)
class RetryPolicy:
    """After an answer whose status is in ``on`` (or an error, with ``"error"``), the user
    comes back with ``probability`` after ``delay_s`` (exponentially distributed around it),
    at most ``max_retries`` times. ``same_request_id`` models a network retry (the engine must
    return the first answer) rather than a new press."""

    probability: float = 0.3
    delay_s: float = 0.5
    max_retries: int = 3
    on: tuple[str, ...] = ("SOLD_OUT", "error")
    same_request_id: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.probability <= 1) or self.delay_s < 0 or self.max_retries < 0:
            raise ValueError("probability in [0,1], delay_s >= 0, max_retries >= 0")


@dataclass
class ReplayResult:
    df: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(order=True)
class _Event:
    t_s: float
    order: int
    user_id: str = field(compare=False)
    request_id: str = field(compare=False)
    kind: str = field(compare=False)
    attempt: int = field(compare=False, default=0)


def replay(
    engine: Engine,
    traffic: pd.DataFrame,
    quantity: int = 10_000,
    per_user_limit: int = 1,
    *,
    campaign_id: Optional[int] = None,
    pace: Literal["fast", "real"] = "fast",
    speed: float = 1.0,
    batch_size: int = 512,
    retry: Optional[RetryPolicy] = None,
    seed: int = 0,
    progress: bool = False,
) -> ReplayResult:
    """Replay ``traffic`` against ``engine`` (a new campaign of ``quantity`` coupons unless
    ``campaign_id`` is given) and return one row per request plus a summary."""
    if pace not in ("fast", "real"):
        raise ValueError("pace must be 'fast' or 'real'")
    if speed <= 0 or batch_size <= 0:
        raise ValueError("speed and batch_size must be positive")
    if campaign_id is None:
        campaign_id = engine.campaigns.create("replay", quantity=quantity, per_user_limit=per_user_limit).id
    events = [
        _Event(float(t), i, str(u), str(r), str(k))
        for i, (t, u, r, k) in enumerate(
            zip(
                traffic["t_s"], traffic["user_id"], traffic["request_id"], traffic.get("kind", ["press"] * len(traffic))
            )
        )
    ]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    bar = _Progress(len(events)) if progress else None
    if pace == "fast":
        _replay_fast(engine, campaign_id, events, batch_size, retry, rng, rows, bar)
    else:
        _run_coroutine(_replay_real(engine, campaign_id, events, speed, retry, rng, rows, bar))
    if bar:
        bar.close()
    pd = _pd()
    df = pd.DataFrame(rows).sort_values(["sent_s", "order"], kind="stable").reset_index(drop=True)
    return ReplayResult(df=df, summary=summarize(df, quantity=engine.campaigns.get(campaign_id).quantity))


def _run_coroutine(coro: Any) -> None:
    """asyncio.run, also from inside a running loop (Jupyter): then on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    import threading

    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(e)

    t = threading.Thread(target=target, name="couponcore-replay")
    t.start()
    t.join()
    if failure:
        raise failure[0]


def _retry_event(
    ev: _Event, status: str, retry: Optional[RetryPolicy], rng: random.Random, order: int
) -> Optional[_Event]:
    if retry is None or status not in retry.on or ev.attempt >= retry.max_retries:
        return None
    if rng.random() >= retry.probability:
        return None
    delay = rng.expovariate(1 / retry.delay_s) if retry.delay_s > 0 else 0.0
    rid = ev.request_id if retry.same_request_id else f"{ev.request_id}-a{ev.attempt + 1}"
    return _Event(ev.t_s + delay, order, ev.user_id, rid, "retry", ev.attempt + 1)


def _row(
    ev: _Event, sent: float, answered: float, latency_ms: float, status: str, seq: Optional[int]
) -> dict[str, Any]:
    return {
        "order": ev.order,
        "sent_s": sent,
        "answered_s": answered,
        "latency_ms": latency_ms,
        "user_id": ev.user_id,
        "request_id": ev.request_id,
        "kind": ev.kind,
        "attempt": ev.attempt,
        "status": status,
        "seq": seq,
    }


def _replay_fast(
    engine: Engine,
    campaign_id: int,
    events: list[_Event],
    batch_size: int,
    retry: Optional[RetryPolicy],
    rng: random.Random,
    rows: list[dict[str, Any]],
    bar: Optional[_Progress],
) -> None:
    from ._core import Error

    heap = list(events)
    heapq.heapify(heap)
    order = len(events)
    while heap:
        chunk = [heapq.heappop(heap) for _ in range(min(batch_size, len(heap)))]
        t0 = time.perf_counter()
        try:
            results: list[Any] = engine.issue_many(
                campaign_id, [e.user_id for e in chunk], [e.request_id for e in chunk]
            )
            statuses = [(r.status.value, r.seq) for r in results]
        except Error as exc:
            statuses = [(f"error:{type(exc).__name__}", None)] * len(chunk)
        ms = (time.perf_counter() - t0) * 1e3
        for ev, (status, seq) in zip(chunk, statuses):
            rows.append(_row(ev, ev.t_s, ev.t_s + ms / 1e3, ms, status, seq))
            nxt = _retry_event(ev, "error" if status.startswith("error") else status, retry, rng, order)
            if nxt is not None:
                order += 1
                heapq.heappush(heap, nxt)
        if bar:
            bar.add(len(chunk))


async def _replay_real(
    engine: Engine,
    campaign_id: int,
    events: list[_Event],
    speed: float,
    retry: Optional[RetryPolicy],
    rng: random.Random,
    rows: list[dict[str, Any]],
    bar: Optional[_Progress],
) -> None:
    from ._core import Error

    loop = asyncio.get_running_loop()
    start = loop.time()
    order = [len(events)]
    pending: set[asyncio.Task[None]] = set()

    async def one(ev: _Event) -> None:
        delay = start + ev.t_s / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = (loop.time() - start) * speed
        t0 = time.perf_counter()
        try:
            r = await engine.aissue(campaign_id, ev.user_id, ev.request_id)
            status, seq = r.status.value, r.seq
        except Error as exc:
            status, seq = f"error:{type(exc).__name__}", None
        ms = (time.perf_counter() - t0) * 1e3
        rows.append(_row(ev, sent, (loop.time() - start) * speed, ms, status, seq))
        if bar:
            bar.add(1)
        nxt = _retry_event(ev, "error" if status.startswith("error") else status, retry, rng, order[0])
        if nxt is not None:
            order[0] += 1
            spawn(nxt)

    def spawn(ev: _Event) -> None:
        task = asyncio.ensure_future(one(ev))
        pending.add(task)
        task.add_done_callback(pending.discard)

    for ev in events:
        spawn(ev)
    while pending:
        await asyncio.gather(*list(pending))


class _Progress:
    """A small text progress bar on stderr (notebooks show it too)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0, self.last = total, 0, time.perf_counter(), 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > 0.2:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        sys.stderr.write(f"\rreplay [{bar}] {self.done:,} requests  {now - self.t0:5.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        self._draw(time.perf_counter())
        sys.stderr.write("\n")


# --------------------------------------------------------------------------------------------
# Analyses


def summarize(df: pd.DataFrame, quantity: Optional[int] = None) -> dict[str, Any]:
    """Counts by outcome, time to sell out, latency percentiles and fairness of one replay."""
    counts = df["status"].value_counts().to_dict()
    issued = df[df["status"] == "ISSUED"]
    first_issued = issued.drop_duplicates(subset=["user_id", "request_id"])
    lat = df["latency_ms"]
    out: dict[str, Any] = {
        "requests": int(len(df)),
        "users": int(df["user_id"].nunique()),
        "issued": int(first_issued["seq"].nunique()) if len(first_issued) else 0,
        "issued_answers": int(counts.get("ISSUED", 0)),
        "sold_out": int(counts.get("SOLD_OUT", 0)),
        "already_issued": int(counts.get("ALREADY_ISSUED", 0)),
        "errors": int(sum(v for k, v in counts.items() if str(k).startswith("error"))),
        "retries": int((df["kind"] == "retry").sum()),
        "time_to_sold_out_s": time_to_sell_out(df, quantity),
        "p50_ms": float(lat.quantile(0.50)) if len(lat) else 0.0,
        "p95_ms": float(lat.quantile(0.95)) if len(lat) else 0.0,
        "p99_ms": float(lat.quantile(0.99)) if len(lat) else 0.0,
    }
    out.update(fairness(df))
    return out


def time_to_sell_out(df: pd.DataFrame, quantity: Optional[int] = None) -> Optional[float]:
    """When (seconds after opening, by answer time) the last coupon was issued; None if the
    campaign did not sell out (with ``quantity`` given) or nothing was issued."""
    issued = df[df["status"] == "ISSUED"]
    if issued.empty:
        return None
    if quantity is not None and issued["seq"].max() < quantity:
        return None
    return float(issued.loc[issued["seq"].idxmax(), "answered_s"])


def issuance_over_time(df: pd.DataFrame, bin_s: float = 0.1) -> pd.DataFrame:
    """Coupons issued per time bin and cumulatively (by answer time)."""
    pd = _pd()
    issued = df[df["status"] == "ISSUED"].drop_duplicates(subset=["seq"])
    if issued.empty:
        return pd.DataFrame({"t_s": [], "issued": [], "cumulative": []})
    bins = (issued["answered_s"] // bin_s) * bin_s
    per = issued.groupby(bins).size().rename("issued").reset_index().rename(columns={"answered_s": "t_s"})
    per["cumulative"] = per["issued"].cumsum()
    return per


def latency_over_time(df: pd.DataFrame, bin_s: float = 0.5) -> pd.DataFrame:
    """p50/p95/p99 latency (ms) per time bin of send time."""
    bins = (df["sent_s"] // bin_s) * bin_s
    g = df.groupby(bins)["latency_ms"]
    out = g.quantile(0.5).rename("p50_ms").to_frame()
    out["p95_ms"] = g.quantile(0.95)
    out["p99_ms"] = g.quantile(0.99)
    out["requests"] = g.size()
    return out.reset_index().rename(columns={"sent_s": "t_s"})


def fairness(df: pd.DataFrame) -> dict[str, Any]:
    """How far the FCFS rank (seq) deviates from arrival order. Among the winners, arrival
    rank is their order by send time; ``rank_deviation_mean`` is the mean |seq - arrival rank|.
    ``overtaken_users`` counts users who pressed before the last winner's press but got no
    coupon (0 for a strictly fair gate fed in arrival order)."""
    winners = df[df["status"] == "ISSUED"].drop_duplicates(subset=["seq"]).sort_values(["sent_s", "order"])
    if winners.empty:
        return {"rank_deviation_mean": 0.0, "rank_deviation_max": 0, "overtaken_users": 0}
    arrival_rank = range(1, len(winners) + 1)
    dev = (winners["seq"].astype(int) - list(arrival_rank)).abs()
    last_winner_sent = winners["sent_s"].max()
    winner_users = set(winners["user_id"])
    early = df[(df["sent_s"] < last_winner_sent) & (df["kind"] != "retry")]
    overtaken = set(early["user_id"]) - winner_users
    return {
        "rank_deviation_mean": float(dev.mean()),
        "rank_deviation_max": int(dev.max()),
        "overtaken_users": len(overtaken),
    }


def sweep(
    make_engine: Callable[[], Engine],
    traffic: pd.DataFrame,
    quantities: Optional[list[int]] = None,
    retries: Optional[list[Optional[RetryPolicy]]] = None,
    **replay_kwargs: Any,
) -> pd.DataFrame:
    """What-if: replay the same traffic for every combination of quantity and retry policy,
    each on a fresh engine from ``make_engine``; one summary row per run."""
    pd = _pd()
    rows = []
    for q in quantities or [10_000]:
        for r in retries or [None]:
            with make_engine() as engine:
                res = replay(engine, traffic, quantity=q, retry=r, **replay_kwargs)
            row = {"quantity": q, "retry_probability": r.probability if r else 0.0}
            row.update(res.summary)
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Plots (matplotlib is imported on use)


def plot_issuance(df: pd.DataFrame, bin_s: float = 0.01, ax: Any = None) -> Any:
    """Cumulative coupons issued over time."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    per = issuance_over_time(df, bin_s)
    ax.step([0.0, *(per["t_s"] + bin_s)], [0, *per["cumulative"]], where="post")
    ax.set_xlabel("seconds after opening")
    ax.set_ylabel("coupons issued")
    ax.set_title("Issuance over time")
    return ax


def plot_latency(df: pd.DataFrame, bin_s: float = 0.5, ax: Any = None) -> Any:
    """Latency percentiles over time."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    lat = latency_over_time(df, bin_s)
    for col in ("p50_ms", "p95_ms", "p99_ms"):
        ax.plot(lat["t_s"], lat[col], label=col.replace("_ms", ""))
    ax.set_xlabel("seconds after opening")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency over time")
    ax.legend()
    return ax


def plot_sweep(sweep_df: pd.DataFrame, y: str = "time_to_sold_out_s", ax: Any = None) -> Any:
    """One line per retry probability: ``y`` against quantity."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    for p, g in sweep_df.groupby("retry_probability"):
        ax.plot(g["quantity"], g[y], marker="o", label=f"retry p={p}")
    ax.set_xlabel("quantity")
    ax.set_ylabel(y)
    ax.legend()
    return ax


def plot_windows(frame: pd.DataFrame, ax: Any = None) -> Any:
    """The live windows of a campaign (``engine.windows.frame(campaign_id)``, docs/windows.md):
    answers per window stacked by status, and the p99 latency on a second axis. Open windows
    (not final yet) are drawn lighter."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    fixed = {"answers", "final", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
    statuses = [c for c in frame.columns if c not in fixed]
    x = frame.index
    width = (x[1] - x[0]) * 0.9 if len(x) > 1 else _timedelta_s(1)
    bottom = [0] * len(frame)
    alpha = [1.0 if f else 0.4 for f in frame["final"]] if len(frame) else []
    for s in statuses:
        bars = ax.bar(x, frame[s], width=width, bottom=bottom, label=s)
        for bar, a in zip(bars, alpha):
            bar.set_alpha(a)
        bottom = [b + v for b, v in zip(bottom, frame[s])]
    ax.set_ylabel("answers per window")
    ax.set_title("Live windows")
    ax.legend(loc="upper left", fontsize="small")
    ax2 = ax.twinx()
    ax2.plot(x, frame["p99_ms"], color="black", linewidth=1, label="p99")
    ax2.set_ylabel("p99 latency (ms)")
    return ax


def _timedelta_s(seconds: float) -> Any:
    return _pd().Timedelta(seconds=seconds)
