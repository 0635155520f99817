"""Keeping the knowledge base reachable while the xApp serves.

A store that does not answer at start-up does not stop the xApp: it serves without retrieval (the replies
say so) while this supervisor retries, with exponential back-off capped at ``store_retry_max_s``. Once the
store answers, the built-in knowledge base is made complete in it (a store that appears later still gets
it) and the pipeline is handed the knowledge base. While connected it pings the store every second, so the
store's health (:class:`~xapp.store.health.StoreHealth`) stays current when no query runs, and a hung store
shows as NOT_SERVING within a few seconds.

Every store call runs in a thread and is waited for with a timeout: a hung Chroma never blocks the event
loop. A call that is still hung is not started again (one thread per hang, not one per attempt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from xapp.background import stop_task
from xapp.config import Settings
from xapp.errors import StoreUnavailable
from xapp.store.health import StoreHealth
from xapp.store.knowledge_base import KnowledgeBase
from xapp.telemetry.logging import get_logger

log = get_logger(__name__)

INITIAL_BACKOFF_S = 0.5
CONNECT_TIMEOUT_S = 10.0  # opening the client (a few HTTP calls, or the embedded index from disk)
PING_INTERVAL_S = 1.0

Connected = Callable[[KnowledgeBase], Awaitable[None]]


def store_address(settings: Settings) -> str:
    if settings.chroma_mode == "http":
        return f"Chroma at {settings.chroma_host}:{settings.chroma_port}"
    return f"the embedded Chroma in {settings.chroma_dir}"


def _quiet(future: asyncio.Future[Any]) -> None:
    """A hung call abandoned at shutdown may fail later; nobody waits for it any more."""
    if not future.cancelled():
        future.exception()


class StoreSupervisor:
    def __init__(
        self,
        settings: Settings,
        health: StoreHealth,
        *,
        open_kb: Callable[[Settings], KnowledgeBase] = KnowledgeBase.open,
        on_connected: Connected | None = None,
    ) -> None:
        self.settings = settings
        self.health = health
        self.on_connected = on_connected
        self.kb: KnowledgeBase | None = None
        self.attempts = 0
        self._open_kb = open_kb
        self._opening: asyncio.Future[KnowledgeBase] | None = None
        self._pinging: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        return store_address(self.settings)

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        future.add_done_callback(_quiet)
        return future

    # ---- connecting ---------------------------------------------------------------------------------
    async def connect_once(self) -> KnowledgeBase | None:
        """One attempt: open the store (waiting at most CONNECT_TIMEOUT_S), then complete the built-in
        knowledge base in it (ingesting takes as long as it takes: it is progress, not a hang). Returns the
        knowledge base, or None with the reason in the store's health."""
        self.attempts += 1
        if self._opening is None:  # else: the previous attempt's thread still waits on the store
            self._opening = self._in_thread(self._open_kb, self.settings)
        try:
            kb = await asyncio.wait_for(asyncio.shield(self._opening), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.health.disconnected(f"{self.where} did not answer within {CONNECT_TIMEOUT_S:.0f} s")
            return None
        except StoreUnavailable as exc:  # says where already
            self._opening = None
            self.health.disconnected(str(exc))
            return None
        except Exception as exc:
            self._opening = None
            self.health.disconnected(f"cannot open {self.where}: {exc}")
            return None
        self._opening = None
        self.health.disconnected(f"ingesting the built-in knowledge base into {self.where}")
        try:
            await self._in_thread(kb.ensure_builtin)
        except Exception as exc:  # the store went away midway: the next attempt repairs it (content hashes)
            self.health.disconnected(f"{self.where} failed while the built-in knowledge base was ingested: {exc}")
            return None
        self.kb = kb
        if self.on_connected is not None:
            await self.on_connected(kb)
        self.health.connected()
        return kb

    # ---- watching -----------------------------------------------------------------------------------
    async def ping_once(self) -> None:
        """One background ping, bounded by ``store_timeout_ms``; its outcome goes into the store's health."""
        assert self.kb is not None
        timeout_s = self.settings.store_timeout_ms / 1000.0
        if self._pinging is not None and not self._pinging.done():
            self.health.timeout(f"{self.where} has not answered a ping for over {timeout_s * 1000:.0f} ms")
            return
        self._pinging = self._in_thread(self.kb.check)
        try:
            await asyncio.wait_for(asyncio.shield(self._pinging), timeout_s)
        except asyncio.TimeoutError:
            self.health.timeout(f"{self.where} did not answer a ping within {timeout_s * 1000:.0f} ms")
        except Exception as exc:
            self.health.error(str(exc))
        else:
            self.health.success()

    async def run(self) -> None:
        """Connect (retrying with back-off) until the store answers, then ping it; until cancelled."""
        delay = INITIAL_BACKOFF_S
        while True:
            if self.kb is None:
                if await self.connect_once() is None:
                    log.warning(
                        "knowledge base unreachable; answering without retrieval",
                        detail=self.health.detail,
                        attempt=self.attempts,
                        retry_in_s=delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.store_retry_max_s)
                    continue
                log.info("knowledge base connected", store=self.where, attempts=self.attempts)
                delay = INITIAL_BACKOFF_S
            await asyncio.sleep(PING_INTERVAL_S)
            await self.ping_once()  # the health monitor logs the changes it sees

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="argo-store-supervisor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
