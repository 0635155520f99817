"""How late the event loop runs what is due, kept back from every request's budget.

A request that arrives while the loop is busy waits that long before its handler starts (the handler's
clock, and so its deadline, starts late), and its reply waits that long again before it is written. The
configured ``safety_margin_ms`` covers a quiet loop; under load the wait grows with the number of callers:
at 32 callers on 2 cores the handlers finished inside their budget while callers saw about 200 ms more
(docs/load.md). So the server measures the lag — a timer that should fire every ``interval_s`` and how late
it does — and each request keeps back twice the largest lag of the last ``window_s`` as well.
"""

from __future__ import annotations

import asyncio
import collections
import time

from xapp.background import stop_task

INTERVAL_S = 0.02
WINDOW_S = 2.0


class LoopLag:
    def __init__(self, *, interval_s: float = INTERVAL_S, window_s: float = WINDOW_S) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._measure(), name="argo-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def observe(self, lag_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, max(lag_s, 0.0)))
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    def recent_s(self, now: float | None = None) -> float:
        """The largest lag of the last ``window_s`` (0 when none was measured)."""
        now = time.monotonic() if now is None else now
        return max((lag for at, lag in self._samples if at >= now - self.window_s), default=0.0)

    def reserve_s(self, now: float | None = None) -> float:
        """What a request starting now keeps back: the wait before its handler ran and the one its reply
        will see."""
        return 2.0 * self.recent_s(now)

    async def _measure(self) -> None:
        while True:
            due = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe(time.monotonic() - due)
