"""asyncio glue for the native engine: the function the engine's thread schedules on a loop.

The engine resolves a whole batch of futures with one ``loop.call_soon_threadsafe`` call, so
the loop wakes once per batch of completions, not once per request.
"""

from __future__ import annotations

import asyncio
from typing import Any


def _resolve(batch: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, is_error in batch:
        if future.done():  # cancelled by its awaiter meanwhile
            continue
        if is_error:
            future.set_exception(value)
        else:
            future.set_result(value)
