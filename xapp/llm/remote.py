"""The ``LLM`` contract over HTTP: a vLLM OpenAI-compatible server (``vllm serve``) shared by many xApps.

Selected by the ``llm_url`` setting (e.g. ``http://vllm:8000``); without it the in-process
:class:`~xapp.llm.engine.VLLMEngine` serves. Use it as an async context manager, like the engine::

    async with RemoteLLM.start(settings) as llm:
        gen = await llm.generate(messages, max_tokens=64, deadline=time.monotonic() + 0.8)

How each part of the contract is met:

* **Prompts** are rendered here, with the served model's own tokenizer and chat template (``llm_tokenizer``,
  else the ``model`` setting), and sent to ``/v1/completions`` as token ids. So the count the planner plans
  with (:meth:`prompt_tokens`, synchronous and local: no round trip) is exactly what the server prefills, and
  every prompt starts with the same token ids as the shared system turn: the server's prefix cache reuses it.
* **Generation** streams (``stream=true``, usage on every chunk). At the deadline the stream is closed; vLLM
  aborts a request whose client has gone, so nothing keeps running there (tests check ``/metrics``). The
  partial text comes back with ``aborted=True``. A cancelled caller closes the stream the same way and
  ``CancelledError`` propagates.
* **Option choice** is one prefill and one token (``max_tokens=1``) whose log-probabilities are asked for
  exactly the label tokens (vLLM's ``logprob_token_ids``, over the whole vocabulary), renormalised over the
  labels as the engine does. A server without ``logprob_token_ids`` (it answers 400) is asked for the top 20
  instead (``logprobs=20``); a label outside them gets an equal share of the probability mass the top 20
  leave, capped at the smallest probability returned (it ranked below all of them).
* **Health**: a background task polls ``/health`` (and ``/v1/models`` after an outage: the model name);
  a failed connection marks the server down at once. :attr:`is_running` is what the pipeline reads: while
  it is False no request waits on the LLM (templates answer), and it turns True again by itself.
* **Load**: :meth:`num_unfinished_requests` counts this client's requests in flight, the ones the cost
  model can know about; other replicas' load on the server shows up in the latencies the model learns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from xapp.background import stop_task
from xapp.config import Settings
from xapp.errors import EngineUnavailable
from xapp.llm.base import LLM, Choice, Generation, Message, TextCallback, label_probabilities

log = logging.getLogger(__name__)

# How often the background task asks the server's /health, and how long one probe may take.
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 2.0
# How long start() waits for the server to answer before serving on templates (it keeps probing after).
START_WAIT_S = 30.0
# The OpenAI API's most top log-probabilities per token, for servers without ``logprob_token_ids``.
TOP_LOGPROBS = 20


@dataclass(frozen=True)
class RemoteConfig:
    """What the client needs from :class:`~xapp.config.Settings`."""

    url: str
    tokenizer: str  # a local folder or hub id holding the served model's tokenizer and chat template
    temperature: float = 0.0
    seed: int = 0
    max_model_len: int = 2048  # replaced by the server's own when /v1/models says it
    health_interval_s: float = HEALTH_INTERVAL_S
    label_logprobs: str = "ids"  # "ids": logprob_token_ids; "top": the top-20 fallback

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteConfig:
        return cls(
            url=settings.llm_url,
            tokenizer=tokenizer_source(settings),
            temperature=settings.temperature,
            seed=settings.seed,
            max_model_len=settings.max_model_len,
        )


def tokenizer_source(settings: Settings) -> str:
    """``llm_tokenizer``, else the ``model`` setting resolved as the engine would (the offline default is
    prepared once, as for the in-process engine; give ``llm_tokenizer`` a folder to avoid that)."""
    if settings.llm_tokenizer:
        return settings.llm_tokenizer
    from xapp.llm.models import resolve_model

    return resolve_model(settings.model, settings.models_dir).path


def load_tokenizer(source: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise EngineUnavailable(f"the remote LLM client needs transformers for the tokenizer ({exc})") from None
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise EngineUnavailable(f"cannot load the tokenizer of the served model from {source!r}: {exc}") from exc


class RemoteLLM:
    """The ``LLM`` implementation on a vLLM OpenAI-compatible server. Create it with :meth:`start`."""

    def __init__(self, client: httpx.AsyncClient, tokenizer: Any, config: RemoteConfig) -> None:
        self._client = client
        self._tokenizer = tokenizer
        self._config = config
        self.url = config.url.rstrip("/")
        self.model_name = Path(config.tokenizer).name or config.tokenizer
        self.served_model: str | None = None  # the id the server lists; sent as "model"
        self.max_model_len = config.max_model_len
        self._label_mode = config.label_logprobs
        self._label_ids: dict[tuple[str, ...], list[int]] = {}
        self._in_flight = 0
        self._running = False
        self._when_up: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.last_error: str | None = None
        self.requests = 0
        self.aborted = 0

    # -- lifetime ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, settings: Settings | RemoteConfig, *, wait_s: float = START_WAIT_S
    ) -> AsyncIterator[RemoteLLM]:
        """Load the tokenizer, wait up to ``wait_s`` for the server, keep probing its health until exit."""
        config = settings if isinstance(settings, RemoteConfig) else RemoteConfig.from_settings(settings)
        if not config.url:
            raise EngineUnavailable("no llm_url: the remote LLM client needs the vLLM server's URL")
        tokenizer = await asyncio.to_thread(load_tokenizer, config.tokenizer)
        # No read timeout: each call's own deadline bounds it. Keep-alive connections: no TCP set-up per call.
        timeout = httpx.Timeout(connect=HEALTH_TIMEOUT_S, read=None, write=HEALTH_TIMEOUT_S, pool=None)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=config.url.rstrip("/"), timeout=timeout, limits=limits) as client:
            llm = cls(client, tokenizer, config)
            waited = time.monotonic() + wait_s
            while not await llm.probe() and time.monotonic() < waited:
                await asyncio.sleep(min(0.5, config.health_interval_s))
            if llm.is_running:
                log.info("remote LLM %s at %s (max_model_len %d)", llm.model_name, llm.url, llm.max_model_len)
            else:
                log.warning("remote LLM at %s does not answer (%s); templates answer until it does",
                            llm.url, llm.last_error)
            monitor = asyncio.create_task(llm._monitor(), name="argo-remote-llm-health")
            try:
                yield llm
            finally:
                for task in (monitor, *llm._tasks):
                    await stop_task(task)

    async def probe(self) -> bool:
        """Ask ``/health`` (and, when the model is not known yet or after an outage, ``/v1/models``)."""
        try:
            r = await self._client.get("/health", timeout=HEALTH_TIMEOUT_S)
            if r.status_code != 200:
                raise EngineUnavailable(f"/health answered {r.status_code}")
            if self.served_model is None or not self._running:
                await self._read_models()
        except (httpx.HTTPError, EngineUnavailable, ValueError, KeyError, TypeError) as exc:
            self._mark_down(f"{type(exc).__name__}: {exc}")
            return False
        came_up = not self._running
        self._running, self.last_error = True, None
        if came_up:
            log.info("remote LLM at %s is up", self.url)
            self._fire()
        return True

    def when_up(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` once, as a task, the next time the server comes up (at once if it is up)."""
        self._when_up.append(callback)
        if self._running:
            self._fire()

    def _fire(self) -> None:
        callbacks, self._when_up = self._when_up, []
        for callback in callbacks:
            task = asyncio.get_running_loop().create_task(self._guarded(callback))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guarded(self, callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await callback()
        except Exception as exc:  # e.g. the server went down again mid-way: the next call teaches the model
            log.warning("remote LLM: %s failed: %s: %s", getattr(callback, "__name__", "callback"),
                        type(exc).__name__, exc)

    async def _read_models(self) -> None:
        r = await self._client.get("/v1/models", timeout=HEALTH_TIMEOUT_S)
        r.raise_for_status()
        models = r.json().get("data") or []
        if not models:
            raise EngineUnavailable("/v1/models lists no model")
        self.served_model = str(models[0]["id"])
        self.model_name = self.served_model.rstrip("/").rsplit("/", 1)[-1]
        if models[0].get("max_model_len"):
            self.max_model_len = int(models[0]["max_model_len"])

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_interval_s)
            await self.probe()

    def _mark_down(self, why: str) -> None:
        if self._running:
            log.warning("remote LLM at %s is down: %s", self.url, why)
        self._running, self.last_error = False, why

    @property
    def is_running(self) -> bool:
        """The server answered its last health probe and the last call did not fail to connect."""
        return self._running

    async def check_health(self) -> None:
        """Raises when the server does not answer (as the engine's ``check_health``)."""
        if not await self.probe():
            raise EngineUnavailable(f"the LLM server at {self.url} does not answer: {self.last_error}")

    # -- the LLM contract -------------------------------------------------------------------------

    def num_unfinished_requests(self) -> int:
        return self._in_flight

    def prompt_token_ids(self, messages: Sequence[Message]) -> list[int]:
        """The chat template applied to ``messages`` (with the assistant turn opened), as token ids."""
        text = self._tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.prompt_token_ids(messages))

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """The one token id of each option label; a label of several tokens cannot be scored by one
        next-token distribution."""
        key = tuple(labels)
        if key in self._label_ids:
            return self._label_ids[key]
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
        prompt = self.prompt_token_ids(messages)
        if self.max_model_len - len(prompt) < 1:
            raise EngineUnavailable(
                f"prompt of {len(prompt)} tokens leaves no room under max_model_len={self.max_model_len}"
            )
        return prompt

    def _body(self, prompt: list[int], **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            **fields,
        }
        if self.served_model is not None:
            body["model"] = self.served_model
        return body

    async def _run(
        self, body: dict[str, Any], deadline: float, started: float, on_text: TextCallback | None = None
    ) -> _Progress:
        """Stream one completion until it finishes, the deadline passes (the stream is closed, so the server
        aborts it) or the caller cancels (closed the same way, and re-raised)."""
        if not self._running:
            raise EngineUnavailable(f"the LLM server at {self.url} is down: {self.last_error}")
        state = _Progress(started, on_text)

        async def consume() -> None:
            async with self._client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    raise _Refused(response.status_code, detail)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    state.update(json.loads(data))

        self.requests += 1
        self._in_flight += 1
        try:
            # On timeout wait_for cancels consume(): leaving ``client.stream`` closes the connection mid-stream
            # and vLLM aborts the request of a client that has gone.
            await asyncio.wait_for(consume(), timeout=deadline - time.monotonic())
        except (asyncio.TimeoutError, TimeoutError):
            state.finish_reason = "deadline"
            self.aborted += 1
        except asyncio.CancelledError:
            self.aborted += 1
            raise
        except _Refused:
            raise
        except httpx.TransportError as exc:  # connect, read, write, protocol errors and timeouts
            self._mark_down(f"{type(exc).__name__}: {exc}")
            raise EngineUnavailable(f"the LLM server at {self.url} failed: {type(exc).__name__}: {exc}") from exc
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise EngineUnavailable(f"generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._in_flight -= 1
        return state

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
        started = time.monotonic()
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        prompt = self._checked_prompt(messages)
        if deadline <= started:
            return Generation("", len(prompt), 0, 0.0, 0.0, aborted=True, finish_reason="deadline")
        fields: dict[str, Any] = {
            "max_tokens": min(max_tokens, self.max_model_len - len(prompt)),
            "temperature": self._config.temperature,
        }
        if stop:
            fields["stop"] = list(stop)
        if ignore_eos:
            fields["ignore_eos"] = True
        if self._config.temperature > 0:
            fields["seed"] = self._config.seed
        try:
            state = await self._run(self._body(prompt, **fields), deadline, started, on_text)
        except _Refused as exc:
            raise EngineUnavailable(f"the LLM server refused the request: {exc}") from exc
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
        """One prefill and one token, with the log-probabilities of the label tokens (see the module)."""
        started = time.monotonic()
        ids = self.label_token_ids(labels)
        prompt = self._checked_prompt(messages)
        if deadline <= started:
            return Choice((), len(prompt), 0.0, aborted=True)
        state = await self._choose_once(prompt, ids, deadline, started)
        total = time.monotonic() - started
        if state.finish_reason == "deadline" or state.top is None:
            return Choice((), len(prompt), total, aborted=True, cached_tokens=state.cached_tokens)
        probabilities = label_probabilities(state.top, ids, exact=self._label_mode == "ids")
        return Choice(probabilities, len(prompt), total, aborted=False, cached_tokens=state.cached_tokens)

    async def _choose_once(self, prompt: list[int], ids: list[int], deadline: float, started: float) -> _Progress:
        common = {"max_tokens": 1, "temperature": 0.0, "return_tokens_as_token_ids": True}
        if self._label_mode == "ids":
            try:
                return await self._run(self._body(prompt, logprobs=1, logprob_token_ids=ids, **common),
                                       deadline, started)
            except _Refused as exc:
                if exc.status != 400 or "logprob_token_ids" not in exc.detail:
                    raise EngineUnavailable(f"the LLM server refused the option choice: {exc}") from exc
                log.warning("the LLM server has no logprob_token_ids; option choice from the top %d", TOP_LOGPROBS)
                self._label_mode = "top"
        try:
            return await self._run(self._body(prompt, logprobs=TOP_LOGPROBS, **common), deadline, started)
        except _Refused as exc:
            raise EngineUnavailable(f"the LLM server refused the option choice: {exc}") from exc


class _Refused(Exception):
    """The server answered with an HTTP error status (the request itself was refused, the server is up)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class _Progress:
    """What a streamed completion has produced so far (chunks carry text deltas and running usage)."""

    def __init__(self, started: float, on_text: TextCallback | None = None) -> None:
        self.started = started
        self.on_text = on_text
        self.text = ""
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.ttft: float | None = None
        self.finish_reason: str | None = None
        self.top: dict[int, float] | None = None  # the first token's log-probabilities, by token id

    def update(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage") or {}
        if usage:
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            self.cached_tokens = int(details.get("cached_tokens") or self.cached_tokens)
        for choice in chunk.get("choices") or ():
            piece = choice.get("text") or ""
            if piece and self.on_text is not None:
                self.on_text(piece)
            self.text += piece
            logprobs = choice.get("logprobs") or {}
            tops = logprobs.get("top_logprobs") or []
            if self.top is None and tops and tops[0]:
                self.top = {_token_id(k): float(v) for k, v in tops[0].items()}
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if self.ttft is None and (self.completion_tokens or self.text):
            self.ttft = time.monotonic() - self.started


def _token_id(key: str) -> int:
    # return_tokens_as_token_ids=true spells each token "token_id:<id>"
    return int(key.rsplit(":", 1)[-1])


def _conforms(llm: RemoteLLM) -> LLM:
    return llm  # mypy checks here that RemoteLLM satisfies the LLM protocol
