"""Shared test fixtures: a tiny real Qwen2 model, its W8A8 copy, and ONE real vLLM engine per session.

Models (session-scoped, built under pytest's tmp dir, no download):

* ``tiny_model_dir`` — random-weight ``Qwen2ForCausalLM`` (hidden 128, 4 heads of size 32, 2 KV heads,
  2 layers) in bf16, with a byte-level BPE tokenizer trained here on O-RAN text and a Qwen chat template.
  Greedy generation never emits EOS (see ``xapp.bench.synthetic``), so requests run to ``max_tokens``.
* ``tiny_w8a8_dir`` — the same model quantized to int8 W8A8 (compressed-tensors) by ``xapp.llm.quantize``.

The engine and its event loop:

* ``llm_engine`` — a started :class:`xapp.llm.engine.VLLMEngine` serving ``tiny_w8a8_dir`` (so the quantized
  Qwen2 load path is what the suite exercises). Start-up costs seconds to tens of seconds, so there is one
  per session; tests must leave it idle (``num_unfinished_requests() == 0``) when they finish.
* ``engine_loop`` — the asyncio loop the engine lives on. It runs in a daemon thread for the whole session,
  because an ``AsyncLLM`` is bound to the loop that created it. Sync tests run coroutines on it with
  ``engine_loop.run(coro)`` or the ``run`` fixture (the same function)::

      def test_something(llm_engine, run):
          gen = run(llm_engine.generate(messages, max_tokens=8, deadline=time.monotonic() + 10))

  Anything that must call the engine (the pipeline, a ``grpc.aio`` server) has to be created and served on
  this loop too, e.g. ``server = run(start_server(...))`` … ``run(server.stop(0))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


class EngineLoop:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float | None = 300) -> T:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self.loop.is_running():
            self.loop.close()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xapp.bench.synthetic import TINY, build_random_qwen2

    return build_random_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2", TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_w8a8_dir(tiny_model_dir: Path) -> Path:
    from xapp.llm.quantize import quantize

    return quantize(tiny_model_dir, tiny_model_dir.parent / "tiny-qwen2-w8a8").dst


@pytest.fixture(scope="session")
def engine_loop() -> Iterator[EngineLoop]:
    loop = EngineLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def run(engine_loop: EngineLoop) -> Callable[..., Any]:
    return engine_loop.run


@pytest.fixture(scope="session")
def llm_engine(
    tiny_w8a8_dir: Path, engine_loop: EngineLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from xapp.llm.engine import EngineConfig, VLLMEngine

    config = EngineConfig(
        model=str(tiny_w8a8_dir),
        data_dir=tmp_path_factory.mktemp("engine-data"),
        kv_cache_gib=0.25,
        max_model_len=2048,
        max_num_seqs=8,
    )
    stack = contextlib.AsyncExitStack()
    engine = engine_loop.run(stack.enter_async_context(VLLMEngine.start(config)), timeout=600)
    try:
        yield engine
    finally:
        engine_loop.run(stack.aclose(), timeout=120)


@pytest.fixture(scope="session")
def builtin_kb_settings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Settings whose data dir holds the built-in O-RAN knowledge base, ingested once per session.

    Tests that only read the knowledge base share it; tests that write make their own data dir.
    """
    from xapp.config import Settings
    from xapp.store.knowledge_base import KnowledgeBase

    # The LLM answers open questions too (llm_open_answers), as the tests of its answer path need.
    settings = Settings(data_dir=tmp_path_factory.mktemp("argo-data"), llm=False, llm_open_answers=True)
    kb = KnowledgeBase.open(settings)
    kb.ensure_builtin()
    return settings


@pytest.fixture(scope="session")
def builtin_kb(builtin_kb_settings: Any) -> Any:
    from xapp.store.knowledge_base import KnowledgeBase

    return KnowledgeBase.open(builtin_kb_settings)
