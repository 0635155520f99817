from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Path(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PATH_UNSPECIFIED: _ClassVar[Path]
    PATH_LLM: _ClassVar[Path]
    PATH_TEMPLATE: _ClassVar[Path]
    PATH_MIXED: _ClassVar[Path]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_RETRIEVE: _ClassVar[Action]
    ACTION_REASON: _ClassVar[Action]
    ACTION_TERMINATE: _ClassVar[Action]
PATH_UNSPECIFIED: Path
PATH_LLM: Path
PATH_TEMPLATE: Path
PATH_MIXED: Path
ACTION_UNSPECIFIED: Action
ACTION_RETRIEVE: Action
ACTION_REASON: Action
ACTION_TERMINATE: Action

class Passage(_message.Message):
    __slots__ = ("id", "text", "source", "heading", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HEADING_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    source: str
    heading: str
    score: float
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., source: _Optional[str] = ..., heading: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "ttft_ms", "aborted")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    aborted: bool
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., ttft_ms: _Optional[float] = ..., aborted: _Optional[bool] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("action", "path", "query", "passages", "sources", "progress_before", "progress_after", "latency_ms", "usage", "fallback_reason", "timings_ms")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_AFTER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    action: Action
    path: Path
    query: str
    passages: _containers.RepeatedCompositeFieldContainer[Passage]
    sources: _containers.RepeatedScalarFieldContainer[str]
    progress_before: float
    progress_after: float
    latency_ms: float
    usage: Usage
    fallback_reason: str
    timings_ms: _containers.ScalarMap[str, float]
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., path: _Optional[_Union[Path, str]] = ..., query: _Optional[str] = ..., passages: _Optional[_Iterable[_Union[Passage, _Mapping]]] = ..., sources: _Optional[_Iterable[str]] = ..., progress_before: _Optional[float] = ..., progress_after: _Optional[float] = ..., latency_ms: _Optional[float] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., fallback_reason: _Optional[str] = ..., timings_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("question", "options", "strategy", "deadline_ms", "omit_passages")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    OMIT_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    question: str
    options: _containers.RepeatedScalarFieldContainer[str]
    strategy: str
    deadline_ms: int
    omit_passages: bool
    def __init__(self, question: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., strategy: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., omit_passages: _Optional[bool] = ...) -> None: ...

class AnswerReply(_message.Message):
    __slots__ = ("answer", "choice", "path", "fallback_reason", "steps", "elapsed_ms", "timings_ms", "prompt_tokens", "completion_tokens", "sources", "strategy", "deadline_ms", "model", "option_probabilities", "trimmed", "fallbacks", "requested_deadline_ms", "deadline_note")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTION_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_NOTE_FIELD_NUMBER: _ClassVar[int]
    answer: str
    choice: int
    path: Path
    fallback_reason: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    elapsed_ms: float
    timings_ms: _containers.ScalarMap[str, float]
    prompt_tokens: int
    completion_tokens: int
    sources: _containers.RepeatedScalarFieldContainer[str]
    strategy: str
    deadline_ms: float
    model: str
    option_probabilities: _containers.RepeatedScalarFieldContainer[float]
    trimmed: str
    fallbacks: _containers.RepeatedCompositeFieldContainer[Fallback]
    requested_deadline_ms: int
    deadline_note: str
    def __init__(self, answer: _Optional[str] = ..., choice: _Optional[int] = ..., path: _Optional[_Union[Path, str]] = ..., fallback_reason: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., elapsed_ms: _Optional[float] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., sources: _Optional[_Iterable[str]] = ..., strategy: _Optional[str] = ..., deadline_ms: _Optional[float] = ..., model: _Optional[str] = ..., option_probabilities: _Optional[_Iterable[float]] = ..., trimmed: _Optional[str] = ..., fallbacks: _Optional[_Iterable[_Union[Fallback, _Mapping]]] = ..., requested_deadline_ms: _Optional[int] = ..., deadline_note: _Optional[str] = ...) -> None: ...

class Fallback(_message.Message):
    __slots__ = ("component", "cause", "detail")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    component: str
    cause: str
    detail: str
    def __init__(self, component: _Optional[str] = ..., cause: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AnswerEvent(_message.Message):
    __slots__ = ("step", "answer", "token")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    step: Step
    answer: AnswerReply
    token: AnswerToken
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., answer: _Optional[_Union[AnswerReply, _Mapping]] = ..., token: _Optional[_Union[AnswerToken, _Mapping]] = ...) -> None: ...

class AnswerToken(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class DecomposeRequest(_message.Message):
    __slots__ = ("question", "options", "history", "deadline_ms")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    question: str
    options: _containers.RepeatedScalarFieldContainer[str]
    history: _containers.RepeatedCompositeFieldContainer[Step]
    deadline_ms: int
    def __init__(self, question: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., history: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class DecomposeReply(_message.Message):
    __slots__ = ("query", "step", "elapsed_ms")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    query: str
    step: Step
    elapsed_ms: float
    def __init__(self, query: _Optional[str] = ..., step: _Optional[_Union[Step, _Mapping]] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("query", "top_k", "deadline_ms")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    deadline_ms: int
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class RetrieveReply(_message.Message):
    __slots__ = ("passages", "fallback_reason", "step", "elapsed_ms")
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    passages: _containers.RepeatedCompositeFieldContainer[Passage]
    fallback_reason: str
    step: Step
    elapsed_ms: float
    def __init__(self, passages: _Optional[_Iterable[_Union[Passage, _Mapping]]] = ..., fallback_reason: _Optional[str] = ..., step: _Optional[_Union[Step, _Mapping]] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("question", "options", "history", "deadline_ms")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    question: str
    options: _containers.RepeatedScalarFieldContainer[str]
    history: _containers.RepeatedCompositeFieldContainer[Step]
    deadline_ms: int
    def __init__(self, question: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., history: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...
