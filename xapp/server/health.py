"""grpc.health.v1 statuses that follow the pipeline's real state.

Service names a caller can check:
  ""  and "argo.v1.ArgoService"  SERVING once the engine and the knowledge base are loaded and while the
                                 service can answer (the template path answers even when a dependency is
                                 down); NOT_SERVING while starting and from the start of a graceful shutdown.
  "argo.v1.store"                the vector store's health from its recent outcomes (xapp.store.health): the
                                 pipeline's queries and the store supervisor's pings, each bounded by
                                 ``store_timeout_ms``; NOT_SERVING while not connected (unreachable at start).
  "argo.v1.llm"                  the LLM engine's state; not registered (NOT_FOUND) when the LLM is disabled.

Readiness (``/ric/v1/health/ready``, the ``argo_xapp_ready`` gauge) is stricter than "": the service is
SERVING *and*, with ``ready_requires_store`` (default), the store is SERVING. Without the store the xApp still
answers (templates, closed-book LLM, replies that say retrieval is unavailable), so "" stays SERVING and
``/alive`` true (no restart helps a store that is down); but a pod whose answers carry no sources should
not take traffic from replicas whose store works. Replicas that share one Chroma server all lose it at once:
``ready_requires_store=false`` keeps them in the Service, answering degraded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from xapp.background import stop_task
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
        requires_store: Callable[[], bool] = lambda: True,
    ) -> None:
        self.servicer = servicer
        self.requires_store = requires_store  # read per check: ready_requires_store is hot
        self.metrics = metrics or default_metrics()
        self.llm_enabled = llm_enabled
        self.interval_s = interval_s
        self._probe: Callable[[], Mapping[str, bool]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick: asyncio.Task[dict[str, bool]] | None = None
        self.last: dict[str, bool] = {}
        self._serving = False  # the service answers: attached and not shutting down

    def ready(self) -> bool:
        """What ``/ric/v1/health/ready`` answers (see the module's docstring)."""
        return self._serving and (self.last.get("store", False) or not self.requires_store())

    async def starting(self) -> None:
        """Everything NOT_SERVING until ``attach``: the engine and the knowledge base are still loading."""
        self.metrics.ready.set(0)
        for name in ("", SERVICE, DEPENDENCY_SERVICES["store"]):
            await self.servicer.set(name, NOT_SERVING)
        if self.llm_enabled:
            await self.servicer.set(DEPENDENCY_SERVICES["llm"], NOT_SERVING)

    async def attach(self, probe: Callable[[], Mapping[str, bool]]) -> None:
        self._probe = probe
        self._serving = True
        await self.refresh()
        await self.servicer.set("", SERVING)
        await self.servicer.set(SERVICE, SERVING)
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
            # On the loop, and so never hung by a hung store: the probe reads recent outcomes, it calls nothing.
            raw = probe()
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
        self.metrics.ready.set(1 if self.ready() else 0)
        return state

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def shutting_down(self) -> None:
        for task in (self._task, self._kick):
            await stop_task(task)
        self._task = self._kick = None
        self._serving = False
        self.metrics.ready.set(0)
        await self.servicer.enter_graceful_shutdown()
