"""What ``/healthz`` answers, for every web face (FastAPI, Django, ``couponcore serve``).

``{"status": "ok", "engine": kind}``, or ``"closed"`` once the engine is closed. A production
engine whose deployment has no live grant writer (none beat within ``writer_dead_after_ms``)
answers ``{"status": "degraded", "reasons": [...]}`` -- still with HTTP 200: this process can
go on answering issue requests, whose grants are durable in the grant log and reach PostgreSQL as soon
as a writer runs again; a failing probe would take the web tier down for a fault it does not
have. The metric ``couponcore_writers_alive`` and the alert ``CouponcoreNoLiveWriter`` say the
same to the operator (docs/production.md, "When a writer dies")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import Unavailable

if TYPE_CHECKING:
    from ._engine import Engine

NO_LIVE_WRITER = (
    "no live grant writer: no writer consumer beat within writer_dead_after_ms; grants are durable "
    "in the grant log but do not reach PostgreSQL until a writer runs (`couponcore worker`, or an "
    "engine with writer_threads > 0)"
)


def health(engine: Engine) -> dict[str, Any]:
    """The /healthz body; always served with HTTP 200."""
    if engine.closed:
        return {"status": "closed", "engine": engine.kind}
    body: dict[str, Any] = {"status": "ok", "engine": engine.kind}
    if engine.kind != "production":
        return body
    reasons = []
    try:
        if not any(w.alive for w in engine.writers(pending=False)):
            reasons.append(NO_LIVE_WRITER)
    except Unavailable as e:
        reasons.append(f"the grant writers' heartbeats cannot be read (Redis): {e}")
    if reasons:
        body.update(status="degraded", reasons=reasons)
    return body
