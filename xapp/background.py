"""The server's background tasks (loop-lag timer, store supervisor, descriptor watcher, health polls): how
one is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from xapp.telemetry.logging import get_logger

log = get_logger(__name__)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has unwound, so that nothing it holds outlives the component that
    started it. One that had already failed is logged, not raised: stopping must not stop at it."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    elif not task.cancelled() and task.exception() is not None:
        log.warning("background task had failed", task=task.get_name(), exc_info=task.exception())
