"""The vLLM engine's statistics (EngineStats) follow its scheduler, and the metrics read them at scrape time:
the real engine (tiny W8A8 model) while a generation runs and after it ends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from xapp.telemetry.metrics import Metrics

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Describe the near-RT RIC in detail."}]


def test_scheduler_state_and_totals_reach_the_metrics(llm_engine: Any, run: Any) -> None:
    metrics = Metrics()
    metrics.watch_engine(llm_engine)
    sample = metrics.registry.get_sample_value
    before = sample("argo_xapp_llm_engine_requests_total")

    async def observe() -> tuple[list[tuple[float, float]], Any]:
        task = asyncio.ensure_future(
            llm_engine.generate(MESSAGES, max_tokens=256, deadline=time.monotonic() + 3.0, ignore_eos=True)
        )
        seen = []
        while not task.done():
            seen.append(
                (sample("argo_xapp_llm_engine_running_requests"), sample("argo_xapp_llm_engine_kv_cache_usage_ratio"))
            )
            await asyncio.sleep(0.02)
        return seen, await task

    seen, generation = run(observe())
    assert generation.completion_tokens > 0
    # While it ran, the scheduler reported one running request holding part of the KV cache.
    assert any(running == 1 and 0 < usage <= 1 for running, usage in seen), seen
    assert sample("argo_xapp_llm_engine_requests_total") == before + 1
    assert sample("argo_xapp_llm_engine_generation_tokens_total") >= generation.completion_tokens
    labels = {"model": llm_engine.model_name, "quantization": "compressed-tensors"}
    assert any(
        s.labels.get("model") == labels["model"] and s.labels.get("quantization") == labels["quantization"]
        for family in metrics.registry.collect()
        if family.name == "argo_xapp_build"
        for s in family.samples
    )
