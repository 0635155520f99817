"""grpc.health.v1 statuses that follow the pipeline's real state.

Service names a caller can check:
  ""  and "argo.v1.ArgoService"  SERVING once the engine and the knowledge base are loaded and while the
                                 service can answer (the template path answers even when a dependency is
                                 down); NOT_SERVING while starting and from the start of a graceful shutdown.
  "argo.v1.store"                the vector store's state as the pipeline last saw it.
  "argo.v1.llm"                  the LLM engine's state; not registered (NOT_FOUND) when the LLM is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from xapp.telemetry.logging import get_logger
from xapp.telemetry.metrics import Metrics, default_metrics

SERVICE = "argo.v1.ArgoService"
DEPENDENCY_SERVICES = {"store": "argo.v1.store", "llm": "argo.v1.llm"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

log = get_logger(__name__)


class HealthMonitor:
    """Owns the health servicer; ``refresh`` copies ``probe()`` (the pipeline's ``health()``) into it."""

    def __init__(
        self,
        servicer: HealthServicer,
        *,
        llm_enabled: bool,
        interval_s: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.servicer = servicer
        self.metrics = metrics or default_metrics()
        self.llm_enabled = llm_enabled
        self.interval_s = interval_s
        self._probe: Callable[[], Mapping[str, bool]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick: asyncio.Task[dict[str, bool]] | None = None
        self.last: dict[str, bool] = {}

    async def starting(self) -> None:
        """Everything NOT_SERVING until ``attach``: the engine and the knowledge base are still loading."""
        self.metrics.ready.set(0)
        for name in ("", SERVICE, DEPENDENCY_SERVICES["store"]):
            await self.servicer.set(name, NOT_SERVING)
        if self.llm_enabled:
            await self.servicer.set(DEPENDENCY_SERVICES["llm"], NOT_SERVING)

    async def attach(self, probe: Callable[[], Mapping[str, bool]]) -> None:
        self._probe = probe
        await self.refresh()
        await self.servicer.set("", SERVING)
        await self.servicer.set(SERVICE, SERVING)
        self.metrics.ready.set(1)
        self._task = asyncio.create_task(self._poll(), name="argo-health-poll")

    def kick(self) -> None:
        """Refresh soon, without waiting (after a request: a dependency may just have failed or recovered).
        Coalesced: while one refresh runs, further kicks are dropped."""
        if self._probe is None or (self._kick is not None and not self._kick.done()):
            return
        self._kick = asyncio.get_running_loop().create_task(self.refresh(), name="argo-health-kick")

    async def refresh(self) -> dict[str, bool]:
        probe = self._probe
        if probe is None:
            return {}
        try:
            # Off the event loop: the probe pings the store, which may be a remote Chroma that hangs.
            raw = await asyncio.to_thread(probe)
            state = {k: bool(v) for k, v in raw.items()}
        except Exception:  # a probe that throws says the dependency is not healthy, never crashes the server
            log.exception("health probe failed")
            state = {"store": False, "llm": False}
        for dep, service in DEPENDENCY_SERVICES.items():
            if dep == "llm" and not self.llm_enabled:
                continue
            ok = state.get(dep, False)
            self.metrics.dependency_up.labels(dep).set(1 if ok else 0)
            if self.last.get(dep) != ok:
                log.info("dependency serving" if ok else "dependency not serving", dependency=dep)
            await self.servicer.set(service, SERVING if ok else NOT_SERVING)
        self.last = state
        return state

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def shutting_down(self) -> None:
        for task in (self._task, self._kick):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._kick = None
        self.metrics.ready.set(0)
        await self.servicer.enter_graceful_shutdown()
