"""The O-RAN SC xApp HTTP endpoints, on ``settings.http_port`` (8080 by default):

    GET /ric/v1/health/alive   200 while the process runs (liveness probe)
    GET /ric/v1/health/ready   200 when the readiness check says ready (the gRPC health is SERVING), else 503
    GET /ric/v1/metrics        Prometheus text exposition of the xApp's registry

Bounded: a connection that sends no complete request within ``http_idle_timeout_s`` (headers included) is
closed, and a request's body, request line and headers are capped (``MAX_*`` below). Served by aiohttp on the
running event loop, next to the grpc.aio server; ``HttpEndpoints`` is an async
context manager (start on enter, stop on exit). ``http_extension`` adapts it to the gRPC server's
extension hook (``serve_async(..., extensions=[http_extension(settings)])``).
"""

from __future__ import annotations

import errno
import inspect
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from xapp.config import Settings
from xapp.server.security import http_host, http_ssl_context
from xapp.telemetry.logging import get_logger
from xapp.telemetry.metrics import CONTENT_TYPE, Metrics, default_metrics

log = get_logger(__name__)

ALIVE_PATH = "/ric/v1/health/alive"
READY_PATH = "/ric/v1/health/ready"
METRICS_PATH = "/ric/v1/metrics"

ReadyCheck = Callable[[], "bool | Awaitable[bool]"]

# Limits of what one HTTP request may send (GET only: probes and scrapes). aiohttp answers 400/413 beyond them.
MAX_BODY_BYTES = 16 * 1024
MAX_HEADER_LINE_BYTES = 8 * 1024  # the request line and each header
MAX_HEADERS = 64


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
        host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout_s: float = Settings.http_idle_timeout_s,
    ) -> None:
        self._ready = ready
        self.idle_timeout_s = idle_timeout_s
        self.metrics = metrics or default_metrics()
        self.host = host  # None: every interface, IPv4 and IPv6
        self.ssl_context = ssl_context  # None: plain HTTP
        self.port = port  # the bound port once started (useful with port 0)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get(ALIVE_PATH, self._alive)
        app.router.add_get(READY_PATH, self._ready_handler)
        app.router.add_get(METRICS_PATH, self._metrics)
        return app

    async def start(self) -> int:
        # No access log: probes every few seconds would bury the request logs.
        # keepalive_timeout runs from the connection's start until a complete request arrives, and between
        # requests: a client that sends its headers slowly or holds an idle connection is cut off after it.
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.idle_timeout_s,
            max_line_size=MAX_HEADER_LINE_BYTES,
            max_field_size=MAX_HEADER_LINE_BYTES,
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        try:
            self.port = await self._bind(runner)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info(
            "http listening", host=self.host or "*", http_port=self.port, tls=self.ssl_context is not None,
            paths=[ALIVE_PATH, READY_PATH, METRICS_PATH],
        )  # fmt: skip
        return self.port

    async def _bind(self, runner: web.AppRunner) -> int:
        """Starts the sites and returns the bound port. Every interface (no host) is one IPv4 and one IPv6
        socket; they must share a port, which port 0 would not give them if each picked its own."""
        if self.host is not None:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context).start()
            return _bound_port(runner, self.port)
        await web.TCPSite(runner, "0.0.0.0", self.port, reuse_address=True, ssl_context=self.ssl_context).start()
        port = _bound_port(runner, self.port)
        try:
            await web.TCPSite(runner, "::", port, reuse_address=True, ssl_context=self.ssl_context).start()
        except OSError as exc:
            # No IPv6 on this host, or (port 0 only) another process holds the port there: IPv4 serves.
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) and self.port != 0:
                raise
            log.warning("http not listening on IPv6", http_port=port, error=str(exc))
        return port

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
    settings: Settings, *, metrics: Metrics | None = None, port: int | None = None, host: str | None = None
) -> Callable[[Any], HttpEndpoints]:
    """An extension for ``xapp.server.app.serve_async``: HTTP endpoints whose readiness is the server's
    (``HealthMonitor.ready``: serving, and the store serving unless ``ready_requires_store`` is off), on the
    gRPC port's address (``host``, default ``settings.host``) and with its TLS certificate when one is set."""
    context = http_ssl_context(settings)  # now: an unreadable certificate stops the start, not the first probe

    def make(server: Any) -> HttpEndpoints:
        return HttpEndpoints(
            ready=server.health.ready,
            metrics=metrics,
            port=settings.http_port if port is None else port,
            host=http_host(settings.host if host is None else host),
            ssl_context=context,
            idle_timeout_s=settings.http_idle_timeout_s,
        )

    return make


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return requested
