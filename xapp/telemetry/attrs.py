"""Span names and attribute keys, in one place so that the server, the pipeline and the docs agree.

OpenTelemetry semantic conventions are used where one fits (``rpc.*``, ``db.*``, ``gen_ai.*``); the rest
lives under ``argo.*``. Units are in the name (``_ms``) or, for ``gen_ai.*``, the convention's seconds.
"""

from __future__ import annotations

from typing import Final

from xapp.domain import Component

# --- tracer and span names -----------------------------------------------------------------------
TRACER_NAME: Final = "xapp"  # trace.get_tracer(TRACER_NAME)

SPAN_POLICY: Final = f"argo.{Component.POLICY.value}"  # the policy chose the next action
SPAN_DECOMPOSE: Final = f"argo.{Component.DECOMPOSER.value}"  # a sub-query was written
SPAN_RETRIEVE: Final = f"argo.{Component.RETRIEVER.value}"  # Chroma was queried
SPAN_REASON: Final = f"argo.{Component.REASONER.value}"  # a reasoning step
SPAN_SYNTHESIZE: Final = f"argo.{Component.SYNTHESIZER.value}"  # the final answer
SPAN_FALLBACK: Final = "argo.fallback"  # an event on the component's span: it did not run its intended path
SPAN_GENERATE: Final = "gen_ai.generate"  # one vLLM generation inside any of the above
SPAN_CHOOSE: Final = "gen_ai.choose"  # one option choice (a single prefill) inside the synthesis
COMPONENT_SPANS: Final = (
    SPAN_POLICY,
    SPAN_DECOMPOSE,
    SPAN_RETRIEVE,
    SPAN_REASON,
    SPAN_SYNTHESIZE,
    SPAN_GENERATE,
    SPAN_CHOOSE,
)

# --- RPC (server span; set by xapp.telemetry.interceptor.TelemetryInterceptor) ---------------------
# The server span is named ``<rpc.service>/<rpc.method>`` (OpenTelemetry RPC conventions).
RPC_SYSTEM: Final = "rpc.system"  # "grpc"
RPC_SERVICE: Final = "rpc.service"  # "argo.v1.ArgoService"
RPC_METHOD: Final = "rpc.method"  # "Answer"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"  # int, grpc.StatusCode value[0]
RPC_MESSAGES_SENT: Final = "rpc.messages_sent"  # replies of a server-streaming RPC

# --- resource (every span of the process; set by xapp.telemetry.setup.build_resource) ----------------
SERVICE_NAME: Final = "service.name"  # "argo-xapp", or OTEL_SERVICE_NAME
SERVICE_VERSION: Final = "service.version"
SERVICE_NAMESPACE: Final = "service.namespace"  # "oran-ric"
SERVICE_INSTANCE_ID: Final = "service.instance.id"  # the pod's name
K8S_POD_NAME: Final = "k8s.pod.name"
K8S_NAMESPACE_NAME: Final = "k8s.namespace.name"
K8S_NODE_NAME: Final = "k8s.node.name"

# --- ARGO loop -----------------------------------------------------------------------------------
STRATEGY: Final = "argo.strategy"  # mdp, fixed-k, …
ACTION: Final = "argo.action"  # retrieve, reason, terminate
STEP_INDEX: Final = "argo.step"  # 0-based index of the step in the loop
STEPS: Final = "argo.steps"  # number of steps an answer took (server span)
PROGRESS: Final = "argo.progress"  # U when the policy decided
PROGRESS_BEFORE: Final = "argo.progress.before"  # U before the step
PROGRESS_AFTER: Final = "argo.progress.after"  # U after the step
THETA_CONT: Final = "argo.policy.theta_cont"  # MDP threshold between reason and retrieve
THETA_STAR: Final = "argo.policy.theta_star"  # MDP threshold at which to terminate
DEADLINE_MS: Final = "argo.deadline_ms"  # the request's deadline, relative
BUDGET_REMAINING_MS: Final = "argo.budget.remaining_ms"  # time left when the span started
ESTIMATED_MS: Final = "argo.budget.estimated_ms"  # what the latency estimator expected this step to take
PATH: Final = "argo.path"  # llm, template, mixed
FALLBACK_REASON: Final = "argo.fallback_reason"  # why a template was used (short, low cardinality)
COMPONENT: Final = "argo.component"  # on an argo.fallback event: the component that fell back
FALLBACK_CAUSE: Final = "argo.fallback.cause"  # on an argo.fallback event: why (domain.Cause)
QUESTION_CHARS: Final = "argo.question.chars"  # the length; the text only with the setting trace_text
QUESTION: Final = "argo.question"  # the question's text (trace_text only: questions may carry operator data)
SUBQUERIES: Final = "argo.subqueries"  # the sub-queries searched, in order (trace_text only)
SUBQUERIES_CHARS: Final = "argo.subqueries.chars"  # their lengths
OPTIONS: Final = "argo.question.options"  # number of answer options
CHOICE: Final = "argo.choice"  # 1-based option chosen
ELAPSED_MS: Final = "argo.elapsed_ms"
DEADLINE_MISSED: Final = "argo.deadline_missed"  # bool
ABORTED: Final = "argo.aborted"  # bool: a generation was cut short by the deadline or the caller

# --- retrieval (Chroma) ------------------------------------------------------------------------------
DB_SYSTEM: Final = "db.system"
DB_SYSTEM_CHROMA: Final = "chroma"
DB_COLLECTION: Final = "db.collection.name"
RETRIEVAL_TOP_K: Final = "argo.retrieval.top_k"
RETRIEVAL_HITS: Final = "argo.retrieval.hits"  # passages returned
RETRIEVAL_NEW: Final = "argo.retrieval.new"  # passages above min_score not seen before
RETRIEVAL_TOP_SCORE: Final = "argo.retrieval.top_score"

# --- LLM generation (OpenTelemetry gen_ai conventions) ----------------------------------------------
GEN_AI_OPERATION: Final = "gen_ai.operation.name"  # "text_completion" / "chat"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # "vllm"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_TTFT: Final = "gen_ai.server.time_to_first_token"  # seconds, as the convention's metric
GEN_AI_FINISH_REASON: Final = "gen_ai.response.finish_reasons"  # ("stop",) / ("length",) / ("abort",)

# --- log fields -------------------------------------------------------------------------------------
LOG_TRACE_ID: Final = "trace_id"  # 32 hex digits, as Jaeger shows it
LOG_SPAN_ID: Final = "span_id"  # 16 hex digits
