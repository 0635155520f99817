"""The gRPC server's lifetime: listen, load, serve, drain, flush, exit 0.

Order matters for an orchestrator watching health:
  1. listen at once, every health status NOT_SERVING, ArgoService RPCs answer UNAVAILABLE ("starting");
  2. build the pipeline (engine + knowledge base; minutes on a cold CPU) → SERVING;
  3. on SIGTERM/SIGINT: health NOT_SERVING, stop accepting, let in-flight requests finish (their deadlines are
     at most ``max_deadline_ms``, and the pipeline falls back to templates rather than overrun) for up to
     ``grace_period_s``, then close the pipeline (engine, store), flush telemetry, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.config import Settings
from xapp.server import limits
from xapp.server.health import SERVICE, HealthMonitor
from xapp.server.security import grpc_server_credentials, server_interceptors
from xapp.server.service import ArgoServicer, Pipeline, add_to_server, in_flight
from xapp.telemetry.logging import get_logger, set_log_level

log = get_logger(__name__)

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["ArgoService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
assert SERVICE_NAMES[0] == SERVICE

# Something that lives as long as the server, started after it listens and stopped before it closes — the
# O-RAN SC HTTP endpoints (/ric/v1/health/*, /ric/v1/metrics) plug in here and read ``server.serving``.
Extension = Callable[["ArgoServer"], AbstractAsyncContextManager[Any]]


class ArgoServer:
    """One grpc.aio server with ArgoService, health and reflection; the pipeline is attached once loaded."""

    def __init__(self, settings: Settings, *, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.settings = settings
        self.health_servicer = HealthServicer()
        self.health = HealthMonitor(
            self.health_servicer,
            llm_enabled=settings.llm,
            requires_store=lambda: self.settings.ready_requires_store,
        )
        self.servicer = ArgoServicer(settings, health=self.health)
        self.interceptors = list(interceptors)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.serving = False
        self._stopped = False

    def apply_settings(self, new: Settings) -> None:
        """Hot reload: take over ``new``, whose settings that need a restart are the running ones (the
        descriptor watcher keeps them). The pipeline first — if it refuses, nothing has changed — then what the
        servicer reads per request, then the log level."""
        old = self.settings
        if self.servicer.pipeline is not None:
            self.servicer.pipeline.update_settings(new)
        self.settings = new
        self.servicer.settings = new
        if new.log_level != old.log_level:
            set_log_level(new.log_level)

    @property
    def server(self) -> grpc.aio.Server:
        if self._server is None:
            raise RuntimeError("ArgoServer.start() has not run")
        return self._server

    def _build(self) -> grpc.aio.Server:
        # Created here, not in __init__: a grpc.aio server binds to the event loop it is created on.
        # Its options and the in-flight cap bound what callers can make it hold (xapp/server/limits.py). The token
        # check runs inside the given (telemetry) interceptors, so refused calls are counted, and before the
        # in-flight cap, so strangers take no slot.
        self.in_flight_limit = limits.InFlightLimit(self.settings.max_in_flight_requests)
        interceptors = [*self.interceptors, *server_interceptors(self.settings), self.in_flight_limit]
        server = grpc.aio.server(interceptors=interceptors, options=limits.server_options(self.settings))
        add_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health_servicer, server)
        if self.settings.reflection:
            reflection.enable_server_reflection(SERVICE_NAMES, server)
        return server

    async def start(self, port: int | None = None, host: str | None = None) -> int:
        """Listen on ``host:port`` (defaults: the settings'; port 0: a free one), with TLS when the settings
        name a certificate; return the bound port."""
        host = self.settings.host if host is None else host
        credentials = grpc_server_credentials(self.settings)  # before listening: a bad file stops the start
        await self.health.starting()
        self._server = self._build()
        want = self.settings.grpc_port if port is None else port
        address = f"{host}:{want}"
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{want}")
        await self.server.start()
        self.servicer.loop_lag.start()
        if self.settings.grace_period_s * 1000 < self.settings.max_deadline_ms:
            log.warning(
                "grace period shorter than the longest deadline: a SIGTERM may cancel requests in flight",
                grace_period_s=self.settings.grace_period_s,
                max_deadline_ms=self.settings.max_deadline_ms,
            )
        log.info(
            "listening",
            host=host,
            grpc_port=self.port,
            serving=False,
            tls=credentials is not None,
            mutual_tls=bool(credentials and self.settings.tls_client_ca_file),
            token_auth=bool(self.settings.auth_token_file),
            reflection=self.settings.reflection,
            **limits.describe(self.settings),
        )
        return self.port

    async def attach(self, pipeline: Pipeline) -> None:
        self.servicer.attach(pipeline)
        await self.health.attach(pipeline.health)
        self.serving = True
        log.info("serving", service=SERVICE, grpc_port=self.port)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, refuse new calls, wait up to the grace period for in-flight ones."""
        if self._stopped or self._server is None:
            return
        self._stopped = True
        self.serving = False
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        await self.health.shutting_down()
        log.info("stopping", grace_s=grace, **in_flight(self.servicer))
        await self.server.stop(grace)
        await self.servicer.loop_lag.stop()
        log.info("stopped")


def flush_telemetry(timeout_s: float = 5.0) -> None:
    """TELEMETRY FLUSH HOOK — the last call before exit. Flushes the process-wide OpenTelemetry tracer and
    meter providers (the batch span processor holds spans for seconds: without this the last are lost)."""
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            try:
                flush(int(timeout_s * 1000))
            except Exception:  # exporting is best effort at exit; never turn a clean stop into a crash
                log.exception("telemetry flush failed")


@contextlib.asynccontextmanager
async def _default_pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    # Imported in a thread: the pipeline's modules (numpy, the store, the components) take seconds on a
    # cold CPU, and health probes must answer meanwhile.
    runner = await asyncio.to_thread(importlib.import_module, "xapp.pipeline.runner")
    async with runner.build_pipeline(settings) as pipeline:
        yield pipeline


async def serve_async(
    settings: Settings,
    *,
    grpc_port: int | None = None,
    host: str | None = None,
    pipeline: Pipeline | None = None,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[ArgoServer], None] | None = None,
    extensions: Sequence[Extension] = (),
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    telemetry_shutdown: Callable[[], Awaitable[Any]] | None = None,
    handle_signals: bool = True,
) -> int:
    """Run the server until ``stop`` is set (or SIGTERM/SIGINT arrives); return the exit status.

    ``pipeline``: serve this one (the caller owns it) instead of building one from ``settings``.
    ``on_listening``: called once the port is bound, before the pipeline loads (tests read ``server.port``).
    ``interceptors``: grpc.aio server interceptors (the telemetry helper's span-per-RPC interceptor).
    ``telemetry_shutdown``: awaited last, after the server has drained (e.g. ``TracingHandle.aclose``), so the
    spans of the final requests are exported before exit.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                pass
    server = ArgoServer(settings, interceptors=interceptors)
    status = 0
    try:
        await server.start(grpc_port, host)
        if on_listening is not None:
            on_listening(server)
        async with contextlib.AsyncExitStack() as stack:
            for ext in extensions:
                await stack.enter_async_context(ext(server))
            if pipeline is None:
                # Load in a task so a SIGTERM during a long model load still stops the process promptly.
                loading = asyncio.ensure_future(stack.enter_async_context(_default_pipeline(settings)))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not loading.done():
                    log.info("stop requested while loading; not serving")
                    loading.cancel()
                    await asyncio.gather(loading, return_exceptions=True)
                else:
                    stopping.cancel()
                    try:
                        pipeline = loading.result()
                    except Exception:
                        log.exception("cannot build the pipeline")
                        status = 1
            if pipeline is not None:
                await server.attach(pipeline)
                await stop.wait()
            # Drain while the pipeline (and engine) are still up; the exit stack closes them afterwards.
            await server.stop()
            log.info("closing the pipeline")
    finally:
        await server.stop(0)  # no-op after a graceful stop; closes the port after an error
        for sig in installed:
            loop.remove_signal_handler(sig)
        # TELEMETRY FLUSH: the telemetry shutdown (exporter flush + stop) first, then any global provider.
        if telemetry_shutdown is not None:
            try:
                await telemetry_shutdown()
            except Exception:
                log.exception("telemetry shutdown failed")
        flush_telemetry()
        log.info("exiting", status=status)
    return status


def serve(
    settings: Settings,
    *,
    grpc_port: int | None = None,
    http_port: int | None = None,
    host: str | None = None,
    flags: Mapping[str, Any] | None = None,
) -> int:
    """Blocking entry point for ``argo-xapp serve``: exit status 0 after a graceful stop.

    Wires the observability around the server: the process-wide tracer provider (OTLP export when
    configured), a SERVER span and RPC metrics per call (interceptor), the O-RAN SC HTTP endpoints
    (health, metrics) on ``http_port`` (default ``settings.http_port``) and on the same ``host`` as gRPC
    (default ``settings.host``), and the final span flush; and the
    descriptor watcher (hot reload when ``CONFIG_FILE`` is set; ``flags``: the command-line values, which keep
    winning over the descriptor).
    """
    from xapp.config_watch import descriptor_extension
    from xapp.server.http import http_extension
    from xapp.telemetry.interceptor import TelemetryInterceptor
    from xapp.telemetry.metrics import default_metrics
    from xapp.telemetry.setup import setup_tracing

    tracing = setup_tracing(settings)
    return asyncio.run(
        serve_async(
            settings,
            grpc_port=grpc_port,
            host=host,
            interceptors=[TelemetryInterceptor(default_metrics())],
            extensions=[http_extension(settings, port=http_port, host=host), descriptor_extension(flags)],
            telemetry_shutdown=lambda: tracing.aclose(timeout_s=min(5.0, settings.grace_period_s)),
        )
    )
