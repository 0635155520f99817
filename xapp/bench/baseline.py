"""The seed system's way, for ``bench latency --compare-baseline``: Hugging Face ``transformers`` ``generate``,
one call after another, no deadline, no fallback.

Same model folder (what :func:`xapp.llm.models.resolve_model` gives for ``settings.model``), same prompts
(:mod:`xapp.llm.prompts`), same token budgets (``max_tokens_decompose`` / ``_reason`` / ``_synthesize``),
same knowledge base and ``top_k``. Per question the seed's fixed chain: decompose → retrieve → reason →
synthesize, each component timed on its own; greedy decoding, so every generation runs until EOS or its
token budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xapp.bench.common import BASELINE, COMPONENTS, BenchQuestion, Measurement, warmup_questions
from xapp.config import Settings
from xapp.domain import Action, PathKind, Question, Step
from xapp.errors import ArgoError
from xapp.llm import prompts
from xapp.llm.base import Message
from xapp.llm.models import resolve_model

STRATEGY = "seed-chain"  # decompose → retrieve → reason → synthesize, once each
# The seed's fixed token caps per component (its synthesis generated the answer, the option parsed from it).
SEED_SETTINGS = {"max_tokens_decompose": 32, "max_tokens_reason": 64, "max_tokens_synthesize": 96}


def default_threads() -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return len(os.sched_getaffinity(0))


@dataclass
class BaselineResult:
    measured: list[Measurement]
    warmup: list[Measurement]
    info: dict[str, Any] = field(default_factory=dict)


class HFGenerator:
    """A causal LM under ``transformers``; ``generate`` blocks until the completion is done."""

    def __init__(self, model_path: str, dtype: str = "auto", threads: int | None = None) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ArgoError(f"--compare-baseline needs torch and transformers: {exc}") from None
        self._torch = torch
        # Same CPU threads as the vLLM engine (one per core unless OMP_NUM_THREADS says otherwise), so that the
        # comparison is about the serving, not about thread counts.
        torch.set_num_threads(threads or default_threads())
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        started = time.monotonic()
        torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
            model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
        except OSError as exc:
            raise ArgoError(f"the baseline cannot load {model_path!r}: {exc}") from None
        self.tokenizer: Any = tokenizer
        self.model: Any = model
        model.to(self.device)
        model.eval()
        self.load_s = time.monotonic() - started
        eos = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.threads = torch.get_num_threads()

    def generate(self, messages: Sequence[Message], max_new_tokens: int) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens); the prompt is built exactly like the vLLM engine's."""
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        n_prompt = int(enc["input_ids"].shape[1])
        with self._torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_id,
            )
        completion = out[0, n_prompt:]
        text = str(self.tokenizer.decode(completion, skip_special_tokens=True))
        return text, n_prompt, int(completion.shape[0])


def seed_synthesize_messages(question: Question, history: Sequence[Step]) -> list[Message]:
    """The seed's synthesis prompt: a generated answer, from which the option is parsed afterwards."""
    user = f"Question: {question.text}\nEvidence:\n{prompts.evidence_text(history)}\n"
    if question.options:
        user += (
            f"Options:\n{prompts.numbered_options(question)}\n"
            "Reply with the number of the correct option first, as 'Answer: N', then one sentence why."
        )
    else:
        user += "Answer in at most three sentences."
    return [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": user}]


async def _one(
    gen: HFGenerator, pipeline: Any, settings: Settings, bq: BenchQuestion, index: int, phase: str
) -> Measurement:
    question = bq.question()
    times: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
    tokens = [0, 0]

    def llm(messages: list[Message], budget: int, component: str) -> str:
        t = time.perf_counter()
        text, n_in, n_out = gen.generate(messages, budget)
        times[component] += (time.perf_counter() - t) * 1000.0
        tokens[0] += n_in
        tokens[1] += n_out
        return text

    started = time.perf_counter()
    query = prompts.clean_query(
        llm(prompts.decompose_messages(question, []), settings.max_tokens_decompose, "decomposer")
    )
    t = time.perf_counter()
    # On this thread, like the generations: the seed's loop is sequential, and torch used from the loop
    # thread and a worker thread in turn once left a CI run waiting on the retrieval for ten minutes.
    passages = pipeline.kb.query(query or question.text, settings.top_k) if pipeline.kb is not None else []
    times["retriever"] = (time.perf_counter() - t) * 1000.0
    history = [Step(Action.RETRIEVE, PathKind.LLM, 0.0, 0.0, 0.0, query=query, passages=passages)]
    note = llm(prompts.reason_variants(question, history)[0].messages, settings.max_tokens_reason, "reasoner")
    history.append(Step(Action.REASON, PathKind.LLM, 0.0, 0.0, 0.0, query=note.strip()))
    answer = llm(seed_synthesize_messages(question, history), settings.max_tokens_synthesize, "synthesizer")
    total = (time.perf_counter() - started) * 1000.0
    # Prompt building, tokenization and decoding between the timed calls.
    times["overhead"] = max(total - sum(times.values()), 0.0)
    return Measurement(
        system=BASELINE,
        phase=phase,
        index=index,
        question=bq.text,
        strategy=STRATEGY,
        deadline_ms=settings.deadline_ms,
        wall_ms=total,
        total_ms=total,
        components=times,
        path=PathKind.LLM.value,
        steps=2,
        retrieves=1,
        reasons=1,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        choice=prompts.parse_choice(answer, question.options) if question.options else None,
        answer=answer,
    )


async def measure_baseline(
    settings: Settings,
    questions: Sequence[BenchQuestion],
    *,
    warmup: int,
    dtype: str = "auto",
    threads: int | None = None,
) -> BaselineResult:
    """Load the model with transformers, warm up, then answer ``questions`` one after another."""
    from xapp.pipeline.runner import build_pipeline

    model = resolve_model(settings.model, settings.models_dir)
    gen = HFGenerator(model.path, dtype, threads)
    info: dict[str, Any] = {
        "strategy": STRATEGY,
        "model_path": model.path,
        "model": model.name,
        "dtype": gen.dtype,
        "torch_threads": gen.threads,
        "device": gen.device,
        "load_s": round(gen.load_s, 2),
        "max_new_tokens": {
            "decomposer": settings.max_tokens_decompose,
            "reasoner": settings.max_tokens_reason,
            "synthesizer": settings.max_tokens_synthesize,
        },
    }
    async with build_pipeline(settings.replace(llm=False)) as pipeline:
        warm = [await _one(gen, pipeline, settings, q, i, "warmup") for i, q in enumerate(warmup_questions(warmup))]
        measured = [await _one(gen, pipeline, settings, q, i, "measured") for i, q in enumerate(questions)]
    return BaselineResult(measured, warm, info)
