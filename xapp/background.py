"""The server's background tasks (loop-lag timer, store supervisor, descriptor watcher, health polls): how
one is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None or finished: nothing to do) and wait until it has unwound, so that nothing it
    holds outlives the component that started it."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
