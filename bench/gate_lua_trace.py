"""Where trace context costs in the gate's Lua call: the Redis side of `bench tracing`.

    python bench/gate_lua_trace.py [--rounds 40] [--requests 2000]

Starts a private redis-server (a free port, nothing on disk; killed by its pid afterwards), loads
gate.lua as the build embeds it (cpp/src/gate/lua, `--#include`s resolved) in variants, and calls
each with `--requests` new users per call, variants alternating round by round:

  none               no trace argument (#ARGV even)
  binary             every request's traceparent in its 25-byte binary form, stored as field b
  binary_not_stored  the same bytes sent, the entry written as version 1 (b dropped)
  text               the previous form: 55 characters per request, stored as field p (version 2)
  text_not_stored    the same text sent, not stored

Prints, per variant, the server's time per call (SLOWLOG at threshold 0: the script's own run,
no client or network time), median and 10th percentile, and the stream's bytes per entry
(MEMORY USAGE / XLEN). Needs redis-server on PATH and redis-py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.failover_loss import start_redis_server  # noqa: E402

LUA = Path(__file__).resolve().parent.parent / "cpp" / "src" / "gate" / "lua"


def load(name: str) -> str:
    """A script with its `--#include`s replaced, as cmake/embed_lua.cmake does."""
    text = (LUA / name).read_text()
    for inc in re.findall(r"--#include [A-Za-z0-9_]+\.lua", text):
        text = text.replace(inc, (LUA / inc.split()[1]).read_text())
    return text


def variants() -> dict[str, tuple[str, str]]:
    """name -> (script, kind of trace argument: "" none, "b" binary, "t" text)."""
    gate = load("gate.lua")
    not_stored = ("local b = grants_traceparents()", "local b = nil")
    text = gate
    for old, new in (
        ("* 25", "* 55"),
        ("o + 24", "o + 54"),
        ("'[^%z]'", "'[^ ]'"),
        ("'v', '3'", "'v', '2'"),
        ("'b', b)", "'p', b)"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    assert not_stored[0] in gate
    return {
        "none": (gate, ""),
        "binary": (gate, "b"),
        "binary_not_stored": (gate.replace(*not_stored), "b"),
        "text": (text, "t"),
        "text_not_stored": (text.replace(*not_stored), "t"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(r: redis.Redis, rounds: int, requests: int) -> dict[str, dict[str, float]]:
    vs = variants()
    shas = {k: r.script_load(script) for k, (script, _) in vs.items()}
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 1_000_000)
    r.slowlog_reset()
    call = 0
    for _ in range(rounds):
        for k, (_, kind) in vs.items():
            call += 1
            keys = [f"{k}:{part}" for part in ("m", "h", "g", "a", "b", "f", "r")]
            r.hset(keys[0], mapping={"q": 10**9, "l": 1})
            args: list[object] = [k, 100]
            for i in range(requests):
                args += [f"u{call}-{i}", ""]
            ids = [(os.urandom(16), os.urandom(8)) for _ in range(requests)]
            if kind == "b":
                args.append(b"".join(t + p + b"\x01" for t, p in ids))
            elif kind == "t":
                args.append("".join(f"00-{t.hex()}-{p.hex()}-01" for t, p in ids).encode())
            reply = r.evalsha(shas[k], len(keys), *keys, *args)
            assert all(code % 8 == 0 for code in reply[3:]), "every request is a grant"
    times: dict[str, list[int]] = {k: [] for k in vs}
    for e in r.slowlog_get(1_000_000):
        words = e["command"].split()
        if len(words) > 3 and words[0] == b"EVALSHA":
            times[words[3].decode().rsplit(":", 1)[0]].append(int(e["duration"]))
    out = {}
    for k, v in times.items():
        v.sort()
        out[k] = {
            "server_us_median": statistics.median(v),
            "server_us_p10": v[len(v) // 10],
            "stream_bytes_per_entry": int(r.memory_usage(f"{k}:g") or 0) // max(1, int(r.xlen(f"{k}:g"))),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        start_redis_server(d, port)
        pidfile = Path(f"{d}/redis-{port}.pid")
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        try:
            r = redis.Redis(port=port)
            out = run(r, a.rounds, a.requests)
            r.close()
        finally:
            os.kill(pid, 15)
    base = out["none"]["server_us_p10"]
    for v in out.values():
        v["p10_vs_none"] = round(v["server_us_p10"] / base, 3)
    print(
        json.dumps(
            {"benchmark": "gate_lua_trace", "rounds": a.rounds, "requests": a.requests, "variants": out}, indent=2
        )
    )


if __name__ == "__main__":
    main()
