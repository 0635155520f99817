"""The vector store's health, from what it did lately rather than from one probe.

Every store call the xApp makes reports its outcome here: the pipeline's queries and the supervisor's
background pings (:mod:`xapp.store.supervisor`). An error (refused connection, a failed query) is
unambiguous and makes the store NOT_SERVING at once. A timeout may be a loaded CPU rather than a hung store,
so it takes ``down_after`` in a row. The first success of a query or ping makes it SERVING again.
A store that is not connected (unreachable at start-up, being reconnected) is never serving.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StoreState:
    serving: bool
    detail: str  # why not serving ("" while serving)
    since: float  # monotonic time of the last change of ``serving``


class StoreHealth:
    """Thread-safe: queries report from worker threads and the event loop alike."""

    def __init__(self, *, down_after: int = 2, connected: bool = True, detail: str = "") -> None:
        if down_after < 1:
            raise ValueError("down_after must be >= 1")
        self.down_after = down_after
        self._lock = threading.Lock()
        self._connected = connected
        self._timeouts = 0  # consecutive
        self._error = ""  # the last failure of a connected store, "" after a success
        self._unconnected = "" if connected else (detail or "not connected")  # why there is no connection
        self._since = time.monotonic()
        self._serving = connected

    # ---- outcomes -------------------------------------------------------------------------------------
    def success(self) -> None:
        with self._lock:
            self._timeouts = 0
            self._error = ""
            self._update()

    def error(self, detail: str) -> None:
        with self._lock:
            self._error = detail
            self._update()

    def timeout(self, detail: str) -> None:
        with self._lock:
            self._timeouts += 1
            if self._timeouts >= self.down_after:
                self._error = f"{detail} ({self._timeouts} times in a row)"
            self._update()

    def connected(self) -> None:
        with self._lock:
            self._connected = True
            self._unconnected = ""
            self._timeouts = 0
            self._error = ""
            self._update()

    def disconnected(self, detail: str) -> None:
        with self._lock:
            self._connected = False
            self._unconnected = detail
            self._update()

    def _update(self) -> None:
        serving = self._connected and not self._error
        if serving != self._serving:
            self._serving = serving
            self._since = time.monotonic()

    # ---- reading --------------------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        return self._serving

    @property
    def is_connected(self) -> bool:
        return self._connected

    def state(self) -> StoreState:
        with self._lock:
            detail = "" if self._serving else (self._error if self._connected else self._unconnected)
            return StoreState(self._serving, detail, self._since)

    @property
    def detail(self) -> str:
        return self.state().detail
