"""The O-RAN SC xApp HTTP endpoints, on ``settings.http_port`` (8080 by default):

    GET /ric/v1/health/alive   200 while the process runs (liveness probe)
    GET /ric/v1/health/ready   200 when the readiness check says ready (the gRPC health is SERVING), else 503
    GET /ric/v1/metrics        Prometheus text exposition of the xApp's registry

Served by aiohttp on the running event loop, next to the grpc.aio server; ``HttpEndpoints`` is an async
context manager (start on enter, stop on exit). ``http_extension`` adapts it to the gRPC server's
extension hook (``serve_async(..., extensions=[http_extension(settings)])``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from xapp.config import Settings
from xapp.telemetry.logging import get_logger
from xapp.telemetry.metrics import CONTENT_TYPE, Metrics, default_metrics

log = get_logger(__name__)

ALIVE_PATH = "/ric/v1/health/alive"
READY_PATH = "/ric/v1/health/ready"
METRICS_PATH = "/ric/v1/metrics"

ReadyCheck = Callable[[], "bool | Awaitable[bool]"]


class _ProbeContext:
    """The little of a ServicerContext that HealthServicer.Check uses: abort on an unknown service."""

    async def abort(self, code: Any, details: str = "") -> None:
        raise LookupError(details or str(code))


def grpc_health_ready(servicer: Any, service: str = "") -> Callable[[], Awaitable[bool]]:
    """A readiness check that asks a grpc_health HealthServicer (aio or sync) for ``service``'s status.

    Uses the servicer's public ``Check`` so ready means exactly what a gRPC health probe would see.
    """
    from grpc_health.v1 import health_pb2

    async def ready() -> bool:
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = servicer.Check(request, _ProbeContext())
            if inspect.isawaitable(reply):
                reply = await reply
        except LookupError:  # not registered yet
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return ready


class HttpEndpoints:
    """aiohttp server for the health and metrics endpoints; ``async with`` to run it."""

    def __init__(
        self,
        *,
        ready: ReadyCheck,
        metrics: Metrics | None = None,
        port: int = 8080,
        host: str = "0.0.0.0",
    ) -> None:
        self._ready = ready
        self.metrics = metrics or default_metrics()
        self.host = host
        self.port = port  # the bound port once started (useful with port 0)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(ALIVE_PATH, self._alive)
        app.router.add_get(READY_PATH, self._ready_handler)
        app.router.add_get(METRICS_PATH, self._metrics)
        return app

    async def start(self) -> int:
        # No access log: probes every few seconds would bury the request logs.
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                self.port = int(addr[1])
                break
        log.info("http listening", host=self.host, http_port=self.port, paths=[ALIVE_PATH, READY_PATH, METRICS_PATH])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> HttpEndpoints:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- handlers --------------------------------------------------------------------------------

    async def _alive(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready_handler(self, _request: web.Request) -> web.Response:
        try:
            result = self._ready()
            ok = bool(await result) if inspect.isawaitable(result) else bool(result)
        except Exception:  # a failing check means not ready; the probe must still get an answer
            log.exception("readiness check failed")
            ok = False
        if ok:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def http_extension(
    settings: Settings, *, metrics: Metrics | None = None, port: int | None = None, host: str = "0.0.0.0"
) -> Callable[[Any], HttpEndpoints]:
    """An extension for ``xapp.server.app.serve_async``: HTTP endpoints whose readiness is the server's
    (``HealthMonitor.ready``: serving, and the store serving unless ``ready_requires_store`` is off)."""

    def make(server: Any) -> HttpEndpoints:
        return HttpEndpoints(
            ready=server.health.ready,
            metrics=metrics,
            port=settings.http_port if port is None else port,
            host=host,
        )

    return make
