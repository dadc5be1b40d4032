"""Alerts end to end, with the real servers: Prometheus scrapes a production engine's /metrics and a
standalone `couponcore worker --metrics-port`, evaluates the committed deploy/prometheus-rules.yml,
and Alertmanager, with the config deploy/render-alertmanager.sh renders from deploy/alertmanager.yml,
posts to Discord -- here a local HTTP receiver that records what it gets.

The fault is real: the gate's Redis (a private redis-server started here, never the shared one) is
killed while the engine takes issue calls; they answer Unavailable and CouponcoreUnavailable must
reach the receiver as a Discord message.

What is shortened for a test, and only that: Prometheus scrapes and evaluates every second (the
test's own prometheus.yml); Alertmanager's group_wait is 1 s instead of 30 s, and the webhook URL
the renderer wrote (a made-up discord.com one) is pointed at the local receiver. The rule file is
the committed one, loaded as it is.

The tools come from Debian (scripts/install-deps.sh --alerts, part of `make test`'s deps); the test
fails, never skips, when they are missing.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import couponcore
import pytest
from conftest import REPO, production_kwargs
from couponcore.metrics_http import serve_metrics

pytestmark = pytest.mark.servers

WEBHOOK = "https://discord.com/api/webhooks/123456789/e2e-test_token"


def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{names[0]} is not installed: run scripts/install-deps.sh --alerts (make test does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, proc: list[subprocess.Popen[bytes]]) -> Any:
    """check() until it returns something truthy; fails with `what` after timeout_s or when one of
    the processes exited."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        for p in proc:
            if p.poll() is not None:
                pytest.fail(f"waiting for {what}: {p.args!r} exited with {p.returncode}")
        try:
            last = check()
            if last:
                return last
        except OSError as e:  # a server not listening yet
            last = e
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout_s} s (last: {last!r})")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class _Receiver:
    """A stand-in for Discord's webhook endpoint: records every POST (path, JSON body)."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, Any]] = queue.Queue()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.put((self.path, json.loads(body)))
                self.send_response(204)  # what Discord answers an accepted message
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this test started; terminated (then killed) at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in reversed(started):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(started):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _start(procs: list[subprocess.Popen[bytes]], args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def test_redis_down_pages_discord(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    prometheus = _tool("prometheus")
    alertmanager = _tool("prometheus-alertmanager", "alertmanager")
    redis_server = _tool("redis-server")
    kw = production_kwargs()

    # -- the gate's Redis: private, on a free port, no persistence --
    redis_port = _free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis = _start(
        procs,
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        tmp_path / "redis.log",
    )

    def redis_up() -> bool:
        with socket.create_connection(("127.0.0.1", redis_port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    _wait_for("the private redis-server", redis_up, 20, [redis])

    # -- the engine (no in-process writer: the standalone worker writes) and its /metrics --
    engine = couponcore.open(
        redis=redis_url,
        postgres=kw["postgres"],
        key_prefix=kw["key_prefix"],
        writer_threads=0,
        redis_connect_timeout_ms=200,
        redis_command_timeout_ms=1000,
        redis_backoff_max_ms=200,
    )
    engine_metrics = serve_metrics(engine.metrics_text, port=0)
    receiver = _Receiver()
    try:
        worker_port = _free_port()
        worker = _start(
            procs,
            [sys.executable, "-m", "couponcore", "worker", "--redis", redis_url, "--postgres", kw["postgres"],
             "--key-prefix", kw["key_prefix"], "--report-s", "0", "--metrics-port", str(worker_port)],
            tmp_path / "worker.log",
        )

        # -- Alertmanager, its config rendered by the deploy script --
        url_file = tmp_path / "discord_webhook_url"
        url_file.write_text(WEBHOOK + "\n")
        rendered = tmp_path / "alertmanager.rendered.yml"
        subprocess.run(["bash", str(REPO / "deploy/render-alertmanager.sh"), str(url_file), str(rendered)],
                       check=True, capture_output=True)
        config = rendered.read_text()
        assert f"'{WEBHOOK}'" in config and "group_wait: 30s" in config
        # Shortened for the test: the receiver is local, and a group is sent 1 s after its first alert.
        config = config.replace("https://discord.com", f"http://127.0.0.1:{receiver.port}")
        config = config.replace("group_wait: 30s", "group_wait: 1s")
        (tmp_path / "alertmanager.yml").write_text(config)
        am_port = _free_port()
        am = _start(
            procs,
            [alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            tmp_path / "alertmanager.log",
        )

        # -- Prometheus: the committed rules; scrape and evaluation every second (shortened) --
        prom_port = _free_port()
        (tmp_path / "prometheus.yml").write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(REPO / "deploy/prometheus-rules.yml")],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                    "scrape_configs": [
                        {"job_name": "couponcore",
                         "static_configs": [{"targets": [f"127.0.0.1:{engine_metrics.port}"]}]},
                        {"job_name": "couponcore-worker",
                         "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
                    ],
                }
            )
        )
        prom = _start(
            procs,
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            tmp_path / "prometheus.log",
        )
        servers = [redis, worker, am, prom]

        def query(expr: str) -> list[dict[str, Any]]:
            q = urllib.parse.urlencode({"query": expr})
            r = _get_json(f"http://127.0.0.1:{prom_port}/api/v1/query?{q}")
            assert r["status"] == "success", r
            return list(r["data"]["result"])

        def value(expr: str) -> float | None:
            result = query(expr)
            return float(result[0]["value"][1]) if result else None

        # -- healthy: grants issued here reach PostgreSQL through the worker, and Prometheus sees it --
        c = engine.campaigns.create("alerts-e2e", quantity=1000)
        for i in range(20):
            assert engine.issue(c.id, f"u{i}").status == "ISSUED"
        def scraped() -> bool:
            return (
                (value('couponcore_grants_written_total{job="couponcore-worker"}') or 0) >= 20
                and value('up{job="couponcore"}') == 1
                and value('up{job="couponcore-worker"}') == 1
                # both processes export the grant log's backlog (the same values: one deployment)
                and value(f'couponcore_log_entries{{job="couponcore",campaign="{c.id}"}}') is not None
                and value(f'couponcore_log_entries{{job="couponcore-worker",campaign="{c.id}"}}') is not None
            )

        _wait_for("both targets scraped, the worker's grants_written at 20", scraped, 45, servers)
        assert engine.stats(c.id).rows == 20  # in PostgreSQL, written by the standalone worker
        assert value('couponcore_issue_requests_total{job="couponcore",outcome="issued"}') == 20
        assert not query("ALERTS")  # no rule fires, none is pending, while healthy
        assert receiver.posts.empty()

        # -- the fault: the gate's Redis dies; issue calls answer Unavailable --
        redis.kill()
        redis.wait()
        unavailable = 0
        for i in range(30):
            try:
                engine.issue(c.id, f"down{i}")
            except couponcore.Unavailable:
                unavailable += 1
        assert unavailable == 30
        assert engine.counters()["unavailable"] >= 30

        # -- the alert fires in Prometheus, and Alertmanager posts it to "Discord" --
        servers.remove(redis)
        _wait_for(
            "CouponcoreUnavailable firing in Prometheus",
            lambda: query('ALERTS{alertname="CouponcoreUnavailable",alertstate="firing"}'),
            30,
            servers,
        )

        # The writer loses the same Redis, so CouponcoreWriterFailing may arrive too (rightly); any
        # other alert is a false one.
        titles: list[str] = []

        def unavailable_post() -> dict[str, Any] | None:
            try:
                path, body = receiver.posts.get(timeout=0.5)
            except queue.Empty:
                return None
            assert path.startswith("/api/webhooks/123456789/e2e-test_token")
            assert isinstance(body.get("content", ""), str)
            embed = body["embeds"][0]  # Discord's message shape: embeds with a title and a description
            titles.append(embed["title"])
            return embed if embed["title"] == "CouponcoreUnavailable (firing)" else None

        embed = _wait_for("CouponcoreUnavailable posted to Discord by Alertmanager", unavailable_post, 30, servers)
        assert f"issue calls answered Unavailable on 127.0.0.1:{engine_metrics.port}" in embed["description"]
        # (the live windows' recorder cannot append to the stopped Redis either: a true alert too)
        allowed = {"CouponcoreUnavailable", "CouponcoreWriterFailing", "CouponcoreWindowsRecorderFailing"}
        assert set(titles) <= {f"{a} (firing)" for a in allowed}, titles
        # the worker lives on without Redis, and its endpoint still answers
        assert worker.poll() is None
        with urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/metrics", timeout=10) as r:
            assert b"couponcore_worker_up 1" in r.read()
    finally:
        receiver.close()
        engine_metrics.close()
        engine.close()
