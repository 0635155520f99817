"""Tracing switched on and off in one process: for tests and the tracing-overhead bench, never the server.

The OpenTelemetry API lets a process set its global tracer provider only once, and tracers obtained before
that (module-level ``trace.get_tracer``) bind to it on first use. :class:`SwitchableTracerProvider` is that
one global provider; its tracers look up the current delegate on each span, so that every
:func:`setup_tracing` here (the runtime's, with ``install=`` the switch) takes over at once and its
``shutdown`` switches tracing off again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from xapp.config import Settings
from xapp.telemetry import setup as tracing_setup
from xapp.telemetry.setup import DEFAULT_SERVICE_NAME, TracingHandle


class _SwitchableTracer(trace.Tracer):
    __slots__ = ("_owner", "_args", "_bound_to", "_tracer")

    def __init__(self, owner: SwitchableTracerProvider, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args
        self._bound_to: trace.TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()

    def _current(self) -> trace.Tracer:
        delegate = self._owner.delegate
        if delegate is not self._bound_to:
            self._tracer = delegate.get_tracer(*self._args)
            self._bound_to = delegate
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().start_as_current_span(*args, **kwargs)


class SwitchableTracerProvider(trace.TracerProvider):
    """A provider whose tracers follow ``delegate`` (a NoOp provider: tracing off)."""

    def __init__(self) -> None:
        self.delegate: trace.TracerProvider = trace.NoOpTracerProvider()
        self._lock = threading.Lock()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _SwitchableTracer(
            self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the current SDK provider (generic exit hooks call this on the global provider)."""
        flush = getattr(self.delegate, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def use(self, provider: trace.TracerProvider) -> Callable[[], None]:
        """Spans go to ``provider`` from now on; the returned call switches tracing off unless another
        provider has taken over since (an ``install`` for :func:`xapp.telemetry.setup.setup_tracing`)."""
        with self._lock:
            self.delegate = provider

        def release() -> None:
            with self._lock:
                if self.delegate is provider:
                    self.delegate = trace.NoOpTracerProvider()

        return release

    def activate(self, handle: TracingHandle) -> None:
        """Make ``handle``'s provider current again (a disabled handle switches tracing off)."""
        if handle.closed:
            raise RuntimeError("tracing handle already shut down")
        self.use(handle.provider if handle.provider is not None else trace.NoOpTracerProvider())


_GLOBAL_LOCK = threading.Lock()
_SWITCH: SwitchableTracerProvider | None = None


def switch() -> SwitchableTracerProvider:
    """The process's switchable provider, made the global one on first use."""
    global _SWITCH
    with _GLOBAL_LOCK:
        if _SWITCH is None:
            current = trace.get_tracer_provider()
            if not isinstance(current, trace.ProxyTracerProvider):
                raise RuntimeError(f"a global tracer provider is already set ({type(current).__name__})")
            _SWITCH = SwitchableTracerProvider()
            trace.set_tracer_provider(_SWITCH)
        return _SWITCH


def setup_tracing(settings: Settings, service_name: str = DEFAULT_SERVICE_NAME, **options: Any) -> TracingHandle:
    """:func:`xapp.telemetry.setup.setup_tracing` (same ``options``) through the switch: may be called again
    and again in one process."""
    return tracing_setup.setup_tracing(settings, service_name, install=switch().use, **options)


def activate(handle: TracingHandle) -> None:
    """Make ``handle``'s provider current again (:meth:`SwitchableTracerProvider.activate`)."""
    switch().activate(handle)
