"""The live windows' aggregator: answer records in, final tumbling windows out, exactly once.

Per campaign, tumbling windows of 1 s and 60 s over the answers' wall-clock second (event
time). Each window holds the answers per status number and a latency histogram (buckets of a
quarter octave, see ``latency_bucket_upper_us``), so a 60 s window is the merge of its 1 s
windows. The watermark of a campaign is the largest flush time seen in its records minus
``lateness_ms`` (default 2,000 ms); a window is final once the watermark passes its end and is
then written, once. Answers that arrive for a window that is already final are counted in the
campaign's ``late`` tally and dropped (they are in no row). The engines' ticks (empty records
for a few seconds after a campaign's last answer) move an idle campaign's watermark on.

Exactly once: the rows that became final, the open windows, the watermarks, the late tallies
and the read positions are committed in ONE transaction of the store, conditioned on the
state's version (an aggregator that lost the race rolls back and reloads). After a crash the
next run resumes from the committed positions with the committed state, and since the windows
depend only on the records and their order in the source, it writes the same rows. Each record
carries its recorder's id and number: a record appended twice (the engine retries an append
whose outcome it did not learn) is folded in once.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Protocol

STATE_VERSION = 1
SIZES_S = (1, 60)
LATENESS_MS_DEFAULT = 2_000
FILL_IDLE_S_DEFAULT = 300  # empty 1 s windows are written for at most this long after an answer
BATCH_RECORDS = 1_000  # records per commit (per source partition)
SEEN_KEEP_MS = 3_600_000  # a recorder's last record number is kept this long after its last record


def latency_bucket_upper_us(bucket: int) -> int:
    """The upper bound of a latency bucket (engine: b = 0 below 1 us, else 1 + floor(4 log2 us))."""
    return 0 if bucket <= 0 else int(round(2.0 ** (bucket / 4.0)))


def quantiles(hist: dict[str, int], max_us: int) -> tuple[int, int, int]:
    """p50, p90, p99 in us: the upper bound of the bucket holding the rank (at most max_us)."""
    total = sum(hist.values())
    out = []
    for q in (0.50, 0.90, 0.99):
        rank = max(1, -(-int(q * total * 1000) // 1000)) if total else 0
        seen, value = 0, 0
        for b in sorted(hist, key=int):
            seen += hist[b]
            if seen >= rank:
                value = latency_bucket_upper_us(int(b))
                break
        out.append(min(value, max_us))
    return out[0], out[1], out[2]


class Source(Protocol):
    def partitions(self) -> list[str]: ...
    def read(self, partition: str, after: str, count: int) -> list[tuple[str, int, str]]: ...


class Store(Protocol):
    def load(self) -> tuple[int, Optional[str]]: ...
    def commit(self, version: int, state: str, rows: list[tuple], positions: dict[str, str]) -> bool: ...


def new_state(lateness_ms: int, fill_idle_s: int = FILL_IDLE_S_DEFAULT) -> dict[str, Any]:
    return {
        "v": STATE_VERSION,
        "lateness_ms": lateness_ms,
        "fill_idle_s": fill_idle_s,
        "positions": {},
        "campaigns": {},
    }


def _merge(into: list, counts: dict[str, int], hist: dict[str, int], max_us: int) -> None:
    c, h = into[0], into[1]
    for k, n in counts.items():
        c[k] = c.get(k, 0) + n
    for k, n in hist.items():
        h[k] = h.get(k, 0) + n
    if max_us > into[2]:
        into[2] = max_us


def _parse_pairs(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    if text:
        for pair in text.split(","):
            k, _, n = pair.partition("=")
            out[k] = int(n)
    return out


def _row(campaign: int, size_s: int, start_s: int, w: list) -> tuple:
    counts, hist, max_us = w
    p50, p90, p99 = quantiles(hist, max_us)
    return (
        campaign,
        size_s,
        start_s,
        sum(counts.values()),
        json.dumps(dict(sorted(counts.items(), key=lambda kv: int(kv[0]))), separators=(",", ":")),
        json.dumps(dict(sorted(hist.items(), key=lambda kv: int(kv[0]))), separators=(",", ":")),
        p50,
        p90,
        p99,
        max_us,
    )


def apply_record(state: dict[str, Any], campaign: int, record: str, rows: list[tuple]) -> int:
    """Folds one record into the state; appends the rows that became final. Returns answers."""
    parts = record.split(" ")
    if len(parts) < 3 or parts[0] != "1":
        return 0  # an unknown record version: skipped (a newer engine's format)
    flush_ms = int(parts[1])
    recorder, _, n_s = parts[2].partition(".")
    lateness = state["lateness_ms"]
    c = state["campaigns"].get(str(campaign))
    if c is None:
        c = state["campaigns"][str(campaign)] = {"wm": 0, "late": 0, "open": {"1": {}, "60": {}}, "seen": {}}
    seen = c["seen"].get(recorder)
    n = int(n_s)
    if seen is not None and n <= seen[0]:
        return 0  # a copy appended again after a failed append: already folded in
    c["seen"][recorder] = [n, flush_ms]
    final_before_ms = c["wm"] - lateness  # windows ending at or before this are final
    open1 = c["open"]["1"]
    answers = 0
    for part in parts[3:]:
        sec_s, counts_s, hist_s, max_s = part.split("/")
        counts = _parse_pairs(counts_s)
        n = sum(counts.values())
        answers += n
        second = int(sec_s)
        if (second + 1) * 1000 <= final_before_ms:
            c["late"] += n
            continue
        w = open1.get(sec_s)
        if w is None:
            w = open1[sec_s] = [{}, {}, 0]
        _merge(w, counts, _parse_pairs(hist_s), int(max_s))
    if flush_ms > c["wm"]:
        c["wm"] = flush_ms
        _finalize(c, campaign, c["wm"] - lateness, rows, state.get("fill_idle_s", FILL_IDLE_S_DEFAULT))
        if len(c["seen"]) > 1:  # recorders silent for an hour (closed engines) are forgotten
            c["seen"] = {r: v for r, v in c["seen"].items() if v[1] >= flush_ms - SEEN_KEEP_MS}
    return answers


def _finalize(c: dict[str, Any], campaign: int, watermark_ms: int, rows: list[tuple], fill_idle_s: int) -> None:
    """Writes the 1 s windows the watermark passed, in order, and the empty seconds between them:
    from the campaign's first answer on, a second without answers gets a row of zeros if it is
    at most ``fill_idle_s`` after the last second with answers (``c["done"]``: the last second
    written; ``c["last"]``: the last one with answers). The minutes merge what was written."""
    open1, open60 = c["open"]["1"], c["open"]["60"]
    end_s = watermark_ms // 1000  # seconds below this are final

    def emit(second: int, w: list) -> None:
        rows.append(_row(campaign, 1, second, w))
        m = open60.get(str(second - second % 60))
        if m is None:
            m = open60[str(second - second % 60)] = [{}, {}, 0]
        _merge(m, w[0], w[1], w[2])
        c["done"] = second

    def fill(until_s: int) -> None:  # empty rows after "done", up to until_s (excluded)
        last = c.get("last")
        if last is None or fill_idle_s <= 0:
            return
        for second in range(max(c.get("done", last), last) + 1, min(until_s, last + fill_idle_s + 1)):
            emit(second, [{}, {}, 0])

    for second in sorted(int(s) for s in open1 if int(s) < end_s):
        fill(second)
        emit(second, open1.pop(str(second)))
        c["last"] = second
    fill(end_s)
    for minute_s in sorted((s for s in open60 if (int(s) + 60) * 1000 <= watermark_ms), key=int):
        rows.append(_row(campaign, 60, int(minute_s), open60.pop(minute_s)))


class Aggregator:
    """Consumes a source into a store. ``run_once()`` commits at most one batch per partition
    and returns the records consumed (0: nothing new, or another aggregator committed first)."""

    def __init__(
        self,
        source: Source,
        store: Store,
        lateness_ms: int = LATENESS_MS_DEFAULT,
        batch_records: int = BATCH_RECORDS,
        fill_idle_s: int = FILL_IDLE_S_DEFAULT,
    ) -> None:
        self.source, self.store = source, store
        self.lateness_ms, self.batch_records, self.fill_idle_s = lateness_ms, batch_records, fill_idle_s
        self.answers = 0  # answers folded in by this object (committed)

    def run_once(self) -> int:
        version, text = self.store.load()
        state = json.loads(text) if text else new_state(self.lateness_ms, self.fill_idle_s)
        rows: list[tuple] = []
        records = answers = 0
        positions = state["positions"]
        for partition in self.source.partitions():
            got = self.source.read(partition, positions.get(partition, ""), self.batch_records)
            for rec_id, campaign, record in got:
                answers += apply_record(state, campaign, record, rows)
                positions[partition] = rec_id
            records += len(got)
        if records == 0:
            return 0
        if not self.store.commit(version, json.dumps(state, separators=(",", ":")), rows, positions):
            return 0
        self.answers += answers
        return records

    def run(self, max_records: Optional[int] = None) -> int:
        """Until the source has nothing new (or ``max_records`` were consumed)."""
        total = 0
        while max_records is None or total < max_records:
            n = self.run_once()
            if n == 0:
                break
            total += n
        return total
