"""A Prometheus ``GET /metrics`` endpoint on a thread of its own, for processes without a web
framework: ``couponcore worker --metrics-port`` serves the standalone writer's metrics with it, and
an embedding process can serve an engine's::

    server = serve_metrics(engine.metrics_text, port=9100)   # host 127.0.0.1 by default
    ...
    server.close()

Standard library only (``http.server``, one thread per scrape). ``GET /metrics`` answers the text
exposition format (0.0.4) from ``render()``; any other path is 404; a ``render()`` that raises
answers 500 with the error (the next scrape tries again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._core import InvalidArgument, InvalidType

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def check_port(port: object, *, allow_zero: bool = False) -> int:
    """``port`` as a TCP port number (1..65535; 0, any free port, with allow_zero) or a typed error."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidType(f"port must be an int, got {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise InvalidArgument(f"port must be {low}..65535, got {port}")
    return port


class MetricsServer:
    """A running endpoint: ``host``, ``port`` (the bound one, also for port 0), ``url``, ``close()``."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host = str(httpd.server_address[0])
        self.port = int(httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stops serving and frees the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(render: Callable[[], str], *, host: str = "127.0.0.1", port: int) -> MetricsServer:
    """Serves ``render()`` at ``http://host:port/metrics`` from a daemon thread.

    ``port`` 0 picks a free port (read it back from ``.port``). A bad port is InvalidArgument or
    InvalidType; an address that cannot be bound (in use, not local) is InvalidArgument.
    """
    check_port(port, allow_zero=True)
    if not isinstance(host, str) or not host:
        raise InvalidArgument("host must be a non-empty address, e.g. 127.0.0.1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, "text/plain; charset=utf-8", "not found: the metrics are at /metrics\n")
                return
            try:
                body = render()
            except Exception as e:  # the scrape fails visibly; the process goes on
                self._answer(500, "text/plain; charset=utf-8", f"metrics unavailable: {type(e).__name__}: {e}\n")
                return
            self._answer(200, CONTENT_TYPE, body)

        def _answer(self, status: int, content_type: str, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            pass  # one line per scrape would drown the worker's own output

    try:
        httpd = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise InvalidArgument(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="couponcore-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)
