"""Prometheus metrics, in a registry of their own, served as text at ``/ric/v1/metrics``.

A dedicated CollectorRegistry (not prometheus_client's global one) so that what the xApp exposes is
exactly what is declared here, and tests can make fresh instances. Latency buckets follow the near-RT
RIC loop: 5 ms … 1 s, with a little room above the 1 s deadline cap to see misses.

Series a dashboard divides by (deadline misses, fallbacks, answers by strategy) exist from the start at
zero, so rates are 0 rather than missing; no ``*_created`` series (``disable_created_metrics``). The vLLM
engine's own statistics (requests running and waiting, KV-cache use, prefix-cache hits, tokens) are read
from the engine when Prometheus scrapes (:meth:`Metrics.watch_engine`), never on the request path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import xapp
from xapp.config import STRATEGIES
from xapp.domain import Answer, Cause, Component, Step

# A ``_created`` twin for every counter and histogram doubles the series and no dashboard reads it.
disable_created_metrics()

NAMESPACE = "argo_xapp"
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    0.9,
    1.0,
    1.25,
    1.5,
    2.0,
    5.0,
)
COMPONENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)
# The classic text format that generate_latest writes and every Prometheus version scrapes (newer
# prometheus_client versions label it 1.0.0, which older scrapers do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The RPCs that return an Answer (their series are zero-initialised).
ANSWER_RPCS = ("Answer", "AnswerStream", "Synthesize")


class Metrics:
    """Every metric the xApp exposes. One instance per process (``default_metrics()``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, ns = self.registry, NAMESPACE
        self.info = Info(
            "build", "argo-xapp version, the model it serves and its quantization", namespace=ns, registry=r
        )
        self.set_model("")
        # --- per RPC (TelemetryInterceptor) ---
        self.requests = Counter(
            "rpc_requests",
            "gRPC requests finished, by method and status code",
            ["rpc", "code"],
            namespace=ns,
            registry=r,
        )
        self.latency = Histogram(
            "rpc_latency_seconds",
            "gRPC request latency, by method and status code",
            ["rpc", "code"],
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge("rpc_in_flight", "gRPC requests being handled now", ["rpc"], namespace=ns, registry=r)
        self.ready = Gauge(
            "ready",
            "1 while the xApp answers (gRPC health SERVING), 0 while loading or draining",
            namespace=ns,
            registry=r,
        )
        self.dependency_up = Gauge(
            "dependency_up",
            "1 while a dependency (store, llm) answers its probe; the template path answers without the llm",
            ["dependency"],
            namespace=ns,
            registry=r,
        )
        self.deadline = Gauge(
            "configured_deadline_seconds",
            "the configured deadlines: default (deadline_ms) and cap (max_deadline_ms); alerts compare latency to them",
            ["kind"],
            namespace=ns,
            registry=r,
        )
        # --- per answer (record_answer) ---
        self.component_latency = Histogram(
            "component_latency_seconds",
            "time spent in each component (policy, decompose, retrieve, reason, "
            "synthesize, fallback, generate …) per request",
            ["component"],
            namespace=ns,
            registry=r,
            buckets=COMPONENT_BUCKETS,
        )
        self.answers = Counter(
            "answers",
            "answers returned, by RPC, by the path that produced them and by strategy",
            ["rpc", "path", "strategy"],
            namespace=ns,
            registry=r,
        )
        self.answer_latency = Histogram(
            "answer_latency_seconds",
            "pipeline time per answer, by path and strategy",
            ["path", "strategy"],
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.fallbacks = Counter(
            "fallbacks",
            "components that did not run their intended (LLM) path, once per answer, by component and cause",
            ["component", "cause"],
            namespace=ns,
            registry=r,
        )
        self.deadline_misses = Counter(
            "deadline_misses",
            "answers that took longer than their deadline, by RPC and strategy",
            ["rpc", "strategy"],
            namespace=ns,
            registry=r,
        )
        self.steps = Counter(
            "steps",
            "ARGO loop steps executed, by action and path",
            ["action", "path"],
            namespace=ns,
            registry=r,
        )
        self.tokens = Counter(
            "llm_tokens",
            "LLM tokens processed, by type (prompt or completion)",
            ["type"],
            namespace=ns,
            registry=r,
        )
        self.ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "time to the first generated token",
            namespace=ns,
            registry=r,
            buckets=COMPONENT_BUCKETS,
        )
        # Children for the common label values exist from the start, so dashboards see zeros, not gaps.
        for kind in ("prompt", "completion"):
            self.tokens.labels(kind)
        for rpc in ANSWER_RPCS:
            for strategy in STRATEGIES:
                self.deadline_misses.labels(rpc, strategy)
        for component in Component:
            for cause in Cause:
                self.fallbacks.labels(component.value, cause.value)
        self._engine = _EngineCollector()
        r.register(self._engine)

    # -- RPC bookkeeping (called by xapp.telemetry.interceptor.TelemetryInterceptor) -----------------

    def rpc_started(self, rpc: str) -> None:
        self.in_flight.labels(rpc).inc()

    def rpc_finished(self, rpc: str, code: str, elapsed_s: float) -> None:
        self.in_flight.labels(rpc).dec()
        self.requests.labels(rpc, code).inc()
        self.latency.labels(rpc, code).observe(elapsed_s)

    @contextmanager
    def track_rpc(self, rpc: str) -> Iterator[None]:
        """For code paths without the interceptor: counts one RPC as OK, or UNKNOWN when it raises."""
        start = time.perf_counter()
        self.rpc_started(rpc)
        code = "UNKNOWN"
        try:
            yield
            code = "OK"
        finally:
            self.rpc_finished(rpc, code, time.perf_counter() - start)

    # -- domain objects -------------------------------------------------------------------------

    def set_model(self, model: str, quantization: str | None = None) -> None:
        """``argo_xapp_build_info``: version, model ("" without an LLM) and quantization ("" unknown or none)."""
        self.info.info({"version": xapp.__version__, "model": model or "", "quantization": quantization or ""})

    def set_deadlines(self, deadline_ms: float, max_deadline_ms: float) -> None:
        """``argo_xapp_configured_deadline_seconds`` (at start and when the descriptor changes them)."""
        self.deadline.labels("default").set(deadline_ms / 1000.0)
        self.deadline.labels("max").set(max_deadline_ms / 1000.0)

    def watch_engine(self, engine: Any) -> None:
        """Export the statistics of ``engine`` (its ``stats``: :class:`xapp.llm.engine.EngineStats`) at every
        scrape; None stops. Also sets the model and quantization of ``argo_xapp_build_info``."""
        self._engine.engine = engine
        if engine is not None:
            self.set_model(getattr(engine, "model_name", ""), getattr(engine, "quantization", None))

    def record_step(self, step: Step) -> None:
        """Count one step (Decompose / Retrieve RPCs, or each step of an answer)."""
        self.steps.labels(step.action.value, step.path.value).inc()
        for component, ms in step.timings_ms.items():
            self.component_latency.labels(component).observe(ms / 1000.0)
        self._record_usage(
            step.usage.prompt_tokens, step.usage.completion_tokens, step.usage.ttft_ms
        )

    def record_answer(self, answer: Answer, rpc: str) -> None:
        """Update every answer metric from one Answer: path, fallback, deadline miss, components, tokens.

        ``answer.timings_ms`` holds the per-component totals of the request, so steps' own timings are
        not observed again here; steps are counted by action and path, tokens summed over all LLM calls.
        """
        path = answer.path.value
        strategy = answer.strategy or ""
        self.answers.labels(rpc, path, strategy).inc()
        self.answer_latency.labels(path, strategy).observe(answer.elapsed_ms / 1000.0)
        for fallback in answer.fallbacks:
            self.fallbacks.labels(fallback.component.value, fallback.cause.value).inc()
        if answer.deadline_ms > 0 and answer.elapsed_ms > answer.deadline_ms:
            self.deadline_misses.labels(rpc, strategy).inc()
        for component, ms in answer.timings_ms.items():
            self.component_latency.labels(component).observe(ms / 1000.0)
        for step in answer.steps:
            self.steps.labels(step.action.value, step.path.value).inc()
            self._record_usage(step.usage.prompt_tokens, step.usage.completion_tokens, step.usage.ttft_ms)
        u = answer.synthesis_usage
        self._record_usage(u.prompt_tokens, u.completion_tokens, u.ttft_ms)

    def _record_usage(self, prompt: int, completion: int, ttft_ms: float) -> None:
        if prompt:
            self.tokens.labels("prompt").inc(prompt)
        if completion:
            self.tokens.labels("completion").inc(completion)
        if ttft_ms > 0:
            self.ttft.observe(ttft_ms / 1000.0)

    # -- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


# The engine's statistics: name → (type, help, attribute of EngineStats).
ENGINE_METRICS: dict[str, tuple[str, str, str]] = {
    "llm_engine_running_requests": ("gauge", "requests the LLM engine is running now", "running"),
    "llm_engine_waiting_requests": ("gauge", "requests waiting in the LLM engine's queue", "waiting"),
    "llm_engine_kv_cache_usage_ratio": ("gauge", "share of the LLM engine's KV cache in use (0-1)", "kv_cache_usage"),
    "llm_engine_requests": ("counter", "requests sent to the LLM engine", "requests"),
    "llm_engine_aborted_requests": ("counter", "LLM engine requests aborted (deadline, caller)", "aborted"),
    "llm_engine_prompt_tokens": ("counter", "prompt tokens sent to the LLM engine", "prompt_tokens"),
    "llm_engine_cached_prompt_tokens": (
        "counter",
        "prompt tokens the LLM engine served from its prefix cache",
        "cached_prompt_tokens",
    ),
    "llm_engine_generation_tokens": ("counter", "tokens the LLM engine generated", "completion_tokens"),
    # Counted by the engine where it aborts, so a cancelled caller's generation counts too (no answer carries it).
    "llm_aborted_generations": (
        "counter",
        "LLM generations cut short by the deadline or the caller",
        "aborted",
    ),
    "llm_aborted_tokens": ("counter", "tokens the aborted LLM generations had generated", "aborted_tokens"),
}


class _EngineCollector(Collector):
    """Reads the engine's running totals at scrape time; zeros while no engine is loaded."""

    def __init__(self) -> None:
        self.engine: Any = None

    def collect(self) -> Iterable[Metric]:
        # The in-process engine keeps an EngineStats; the client of a vLLM server counts requests and aborts on
        # itself (what it does not count reads 0).
        stats = getattr(self.engine, "stats", self.engine)
        for name, (kind, doc, attr) in ENGINE_METRICS.items():
            value = float(getattr(stats, attr, 0) or 0)
            full = f"{NAMESPACE}_{name}"
            if kind == "gauge":
                yield GaugeMetricFamily(full, doc, value=value)
            else:
                yield CounterMetricFamily(full, doc, value=value)

    def describe(self) -> Iterable[Metric]:
        return self.collect()


_DEFAULT: Metrics | None = None
_DEFAULT_LOCK = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide Metrics (created on first use)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Metrics()
        return _DEFAULT


def record_answer(answer: Answer, rpc: str, metrics: Metrics | None = None) -> None:
    """Update the process-wide metrics (or ``metrics``) from one Answer returned by ``rpc``."""
    (metrics or default_metrics()).record_answer(answer, rpc)


def record_step(step: Step, metrics: Metrics | None = None) -> None:
    """Update the process-wide metrics (or ``metrics``) from one Step (Decompose / Retrieve RPCs)."""
    (metrics or default_metrics()).record_step(step)
