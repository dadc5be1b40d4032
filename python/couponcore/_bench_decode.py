"""`couponcore bench decode`: what reading an event costs a consumer. Side by side in one run on the
same event (coupon.issued v1 as JSON text): json.loads alone; couponcore.events.decode (envelope and
data validated by couponcore's compiled validator, typed dataclass); decode with the upcast to v2;
and json.loads plus the jsonschema package's validation of the same two schemas (no dataclass),
the dependency the own validator spares consumers. Best of `rounds`."""

from __future__ import annotations

import json
import time
from typing import Any, Callable


def bench_decode(events_per_round: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    from .events import decode, example_event, load_schema

    raw = json.dumps(example_event("coupon.issued"))
    runs: dict[str, Callable[[], object]] = {
        "json_loads": lambda: json.loads(raw),
        "decode": lambda: decode(raw),
        "decode_v2": lambda: decode(raw, version=2),
    }
    try:
        import jsonschema

        envelope = jsonschema.Draft202012Validator(load_schema("cloudevent", 1))
        data = jsonschema.Draft202012Validator(load_schema("coupon.issued", 1))

        def with_jsonschema() -> object:
            e = json.loads(raw)
            envelope.validate(e)
            data.validate(e["data"])
            return e

        runs["json_loads_jsonschema"] = with_jsonschema
    except ImportError:
        pass
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, f in runs.items():
            t0 = time.perf_counter()
            for _ in range(events_per_round):
                f()
            best[name] = max(best[name], events_per_round / (time.perf_counter() - t0))
    out: dict[str, Any] = {"benchmark": "decode", "events_per_round": events_per_round, "rounds": rounds}
    out.update({f"{k}_per_s": round(v) for k, v in best.items()})
    if "json_loads_jsonschema" in best:
        out["decode_vs_jsonschema"] = round(best["decode"] / best["json_loads_jsonschema"], 2)
    return out
