"""Domain objects that flow from the transport through the pipeline to the components and back."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# The LLM answers a multiple-choice question with a letter per option (A–Z), so a question has at most 26.
MAX_OPTIONS = 26


class Action(str, enum.Enum):
    RETRIEVE = "retrieve"
    REASON = "reason"
    TERMINATE = "terminate"


class PathKind(str, enum.Enum):
    """Which machinery produced an answer: the LLM, the templates, or both."""

    LLM = "llm"
    TEMPLATE = "template"
    MIXED = "mixed"


class Component(str, enum.Enum):
    """One name per component: span names (``argo.<value>``), timing keys, estimator keys, metric labels."""

    POLICY = "policy"
    DECOMPOSER = "decomposer"
    RETRIEVER = "retriever"
    REASONER = "reasoner"
    SYNTHESIZER = "synthesizer"


class Cause(str, enum.Enum):
    """Why a component did not run on its intended path (a metric label: keep the set small)."""

    NO_TIME = "no_time"  # the planner found no room for it before the deadline
    ABORTED = "aborted"  # it started, ran past its own deadline and was aborted
    ENGINE_ERROR = "engine_error"  # the LLM engine failed
    UNUSABLE_OUTPUT = "unusable_output"  # the LLM answered, but nothing usable
    NO_ENGINE = "no_engine"  # no LLM engine is loaded (or it is disabled)
    STORE_ERROR = "store_error"  # the knowledge base failed
    STORE_TIMEOUT = "store_timeout"  # the knowledge base did not answer in time
    NO_STORE = "no_store"  # no knowledge base is configured


@dataclass(frozen=True)
class Fallback:
    """A component that fell back (to templates, or to doing nothing), why, and the figures behind it."""

    component: Component
    cause: Cause
    detail: str = ""

    @property
    def text(self) -> str:
        return f"{self.component.value}: {self.detail or self.cause.value.replace('_', ' ')}"


@dataclass(frozen=True)
class Question:
    text: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk of the knowledge base."""

    id: str
    text: str
    source: str
    heading: str
    score: float  # cosine similarity in [-1, 1]; higher is closer
    # The stored embedding (unit length), reused by the option scorer so it embeds only the options.
    vector: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Usage:
    """What one LLM generation cost; zero for template work."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    aborted: bool = False


@dataclass
class Step:
    """One executed action of the ARGO loop."""

    action: Action
    path: PathKind
    progress_before: float
    progress_after: float
    latency_ms: float
    query: str = ""  # the sub-query (retrieve) or the reasoning text (reason)
    passages: list[Passage] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    fallback_reason: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)  # per component inside the step

    @classmethod
    def search(
        cls, query: str, ms: float, passages: list[Passage] | None = None, fallback_reason: str | None = None
    ) -> Step:
        """A single retrieval outside the loop (the Retrieve RPC): no progress, its time the retriever's."""
        return cls(
            Action.RETRIEVE,
            PathKind.TEMPLATE,
            0.0,
            0.0,
            ms,
            query=query,
            passages=passages or [],
            fallback_reason=fallback_reason,
            timings_ms={Component.RETRIEVER.value: ms},
        )

    @property
    def sources(self) -> list[str]:
        return sorted({p.source for p in self.passages})

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "path": self.path.value,
            "query": self.query,
            "sources": self.sources,
            "progress_before": round(self.progress_before, 4),
            "progress_after": round(self.progress_after, 4),
            "latency_ms": round(self.latency_ms, 2),
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "ttft_ms": round(self.usage.ttft_ms, 2),
            "aborted": self.usage.aborted,
            "fallback_reason": self.fallback_reason,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


@dataclass
class Answer:
    """The reply to one question."""

    answer: str
    choice: int | None  # 1-based option index; None without options
    path: PathKind
    fallback_reason: str | None
    steps: list[Step]
    elapsed_ms: float
    strategy: str
    deadline_ms: float
    sources: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)  # component → total ms in this request
    synthesis_usage: Usage = field(default_factory=Usage)
    model: str = ""
    # Multiple choice: the probability of each option (sums to 1) when the LLM chose; empty otherwise.
    option_probabilities: list[float] = field(default_factory=list)
    trimmed: str = ""  # what the planner cut from the LLM's prompt to fit the deadline ("" = nothing)
    fallbacks: list[Fallback] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return self.synthesis_usage.prompt_tokens + sum(s.usage.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return self.synthesis_usage.completion_tokens + sum(s.usage.completion_tokens for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "choice": self.choice,
            "path": self.path.value,
            "fallback_reason": self.fallback_reason,
            "strategy": self.strategy,
            "model": self.model,
            "option_probabilities": [round(p, 4) for p in self.option_probabilities],
            "trimmed": self.trimmed,
            "fallbacks": [{"component": f.component.value, "cause": f.cause.value} for f in self.fallbacks],
            "deadline_ms": round(self.deadline_ms, 2),
            "elapsed_ms": round(self.elapsed_ms, 2),
            "sources": self.sources,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "steps": [s.to_dict() for s in self.steps],
        }
