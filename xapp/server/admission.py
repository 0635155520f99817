"""Bounded concurrency: at most ``max_concurrency`` requests run the pipeline at once.

A request beyond that waits for a slot only as long as its own deadline allows — it must still leave
``reserve_s`` for the pipeline to produce at least a template answer — and is then refused with
RESOURCE_EXHAUSTED. Waiting is FIFO (asyncio.Semaphore wakes waiters in order), so no caller starves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from xapp.pipeline.budget import ADMISSION_RESERVE_S


class Overloaded(Exception):
    """No slot freed up in the time the request's deadline allowed."""


class Admission:
    def __init__(self, limit: int, *, reserve_s: float = ADMISSION_RESERVE_S) -> None:
        self.limit = limit
        self.reserve_s = reserve_s
        self._sem = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.waiting = 0

    def busy(self) -> bool:
        """Requests wait for a slot now: those holding one should finish soon rather than well."""
        return self.waiting > 0

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[float]:
        """Hold one slot for the body; raise ``Overloaded`` when none frees up before deadline − reserve.
        Yields the seconds spent waiting for the slot."""
        t0 = time.monotonic()
        wait_s = deadline - self.reserve_s - t0
        if self._sem.locked():
            if wait_s <= 0:
                raise Overloaded(f"all {self.limit} request slots are busy and the deadline leaves no time to wait")
            self.waiting += 1
            try:
                await asyncio.wait_for(self._sem.acquire(), timeout=wait_s)
            except asyncio.TimeoutError:  # builtin TimeoutError only from 3.11
                raise Overloaded(
                    f"all {self.limit} request slots stayed busy for {wait_s * 1000:.0f} ms, "
                    "as long as the deadline allowed; retry later or raise max_concurrency"
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self._sem.acquire()
        self.in_flight += 1
        try:
            yield time.monotonic() - t0
        finally:
            self.in_flight -= 1
            self._sem.release()
