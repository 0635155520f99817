"""One typed settings object: defaults < descriptor ``controls`` < environment < flags.

Every knob of the xApp lives here so that the CLI, the gRPC server, the Helm chart and the O-RAN SC
descriptor (``descriptors/config-file.json`` → ``controls``) all speak the same names. The environment
variable of a setting is ``ARGO_`` + its upper-cased name (``deadline_ms`` → ``ARGO_DEADLINE_MS``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xapp.domain import MAX_OPTIONS
from xapp.errors import ConfigError

STRATEGIES = ("mdp", "fixed-k", "always-reason", "always-retrieve", "random", "template")
QUALITY_FUNCTIONS = ("linear", "sqrt", "saturating", "sigmoid")


def default_data_dir() -> Path:
    """Per-user data directory (XDG) used when neither ``--data-dir`` nor ``ARGO_DATA_DIR`` is given."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "argo-xapp"


# Field metadata of a setting a running xApp applies at once (``ArgoServer.apply_settings``): the pipeline and
# the servicer read it per request, the policy re-solves its thresholds, the log level is a logger's. Every
# other setting decides which engine, store, sockets or exporters exist and needs a restart.
HOT = {"reload": "hot"}


def hot(default: Any) -> Any:
    """The default of a hot-reloadable setting (see ``HOT``)."""
    return field(default=default, metadata=HOT)


@dataclass(frozen=True)
class MDPParams:
    """ARGO's MDP over information progress U ∈ [0, u_max] (see ``xapp.policy.mdp``)."""

    u_max: float = 1.0
    delta_retrieve: float = 0.3  # δ_r: progress a successful retrieval adds
    p_success: float = 0.8  # p_s: probability that a retrieval brings new information
    delta_reason: float = 0.15  # δ_p: progress a reasoning step adds
    cost_retrieve: float = 0.1  # c_r
    cost_reason: float = 0.04  # c_p
    mu: float = 0.5  # cost weight μ
    gamma: float = 0.95  # discount γ
    quality: str = "sqrt"  # σ(U): linear, sqrt, saturating or sigmoid
    grid: int = 101  # number of grid points for value iteration

    def validate(self) -> None:
        if self.u_max <= 0:
            raise ConfigError("mdp.u_max must be > 0")
        for name in ("delta_retrieve", "delta_reason"):
            value = getattr(self, name)
            if not 0 < value <= self.u_max:
                raise ConfigError(f"mdp.{name} must be in (0, u_max], got {value}")
        if not 0 < self.p_success <= 1:
            raise ConfigError(f"mdp.p_success must be in (0, 1], got {self.p_success}")
        for name in ("cost_retrieve", "cost_reason", "mu"):
            if getattr(self, name) < 0:
                raise ConfigError(f"mdp.{name} must be >= 0")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"mdp.gamma must be in (0, 1], got {self.gamma}")
        if self.quality not in QUALITY_FUNCTIONS:
            raise ConfigError(
                f"mdp.quality must be one of {', '.join(QUALITY_FUNCTIONS)}, got {self.quality!r}"
            )
        if self.grid < 3:
            raise ConfigError("mdp.grid must be >= 3")


@dataclass(frozen=True)
class Settings:
    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = field(default_factory=default_data_dir)
    chroma_mode: str = "embedded"  # "embedded" (PersistentClient under data_dir) or "http"
    chroma_host: str = "localhost"
    chroma_port: int = 8000
    # chroma_mode=http: a file holding the Chroma server's token, sent as "Authorization: Bearer" (empty: none)
    chroma_token_file: str = ""
    collection: str = "oran"
    top_k: int = hot(4)
    min_score: float = hot(0.25)  # similarity below which a passage is not counted as new information
    # The LLM sees evidence only when the best passage is at least this similar to the question: evidence
    # from documents that do not hold the answer cost ORAN-Bench accuracy (docs/performance.md).
    evidence_min_score: float = hot(0.70)
    # Store health (docs/observability.md#health): a background ping, or a query given at least this long, that
    # does not answer within it counts against the store; every query is cut at its request's deadline.
    store_timeout_ms: int = 500
    store_down_after: int = 2  # timeouts in a row that make argo.v1.store NOT_SERVING (an error does at once)
    store_retry_max_s: float = 30.0  # cap of the back-off between reconnection attempts (0.5 s, doubling)
    # /ric/v1/health/ready needs the store SERVING too (answers carry sources); off: ready whenever the service
    # answers, e.g. replicas sharing one Chroma server that should all stay in the Service while it is down
    ready_requires_store: bool = hot(True)
    # --- model ---------------------------------------------------------------------------------
    model: str = ""  # empty: the offline default (Qwen2.5-Coder-1.5B-Instruct); see xapp.llm.models
    quantization: str = (
        ""  # empty: whatever the checkpoint says (awq_marlin, gptq_marlin, compressed-tensors)
    )
    kv_cache_gib: float = 1.0
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.85
    llm: bool = True  # False: never load an engine; every step uses templates
    # A vLLM OpenAI-compatible server (e.g. http://vllm:8000) instead of the in-process engine; empty: in-process
    llm_url: str = ""
    # The served model's tokenizer and chat template for llm_url (a folder or hub id); empty: the model setting
    llm_tokenizer: str = ""
    # In-process engine: tokens n-gram prompt lookup proposes per decode step (0: off). Evidence-grounded answers
    # decode 1.6x faster with it (same text), but option choices got noisier, which costs LLM share at 1 s:
    # on for open answers with longer deadlines (docs/engine.md)
    ngram_speculation: int = 0
    # Sub-queries written by the LLM when the time allows (after them the answer must still fit); off (the
    # default): the rule-based ones, which leaves the LLM's time to the answer. On 2 CPU cores an LLM sub-query
    # takes ~1.5 s and lowered our set's accuracy at 3 s from 83.3 % to 70.8 % (docs/performance.md); turn it
    # on with a fast engine (llm_url)
    llm_subqueries: bool = hot(False)
    # Open questions answered by the LLM from the evidence, with citations, when the time allows; off (the
    # default): extractive answers. With the 1.5B default the LLM's answers held their key facts for 53 % of
    # our questions at 15 s, the extractive ones for 83 % (it names wrong ports); turn it on for a stronger model
    llm_open_answers: bool = hot(False)
    max_tokens_decompose: int = hot(32)
    max_tokens_reason: int = hot(64)
    max_tokens_synthesize: int = hot(192)  # an upper bound: the planner derives each call's cap from the time left
    temperature: float = hot(0.0)
    # --- ARGO loop -----------------------------------------------------------------------------
    strategy: str = hot("mdp")
    max_steps: int = hot(4)
    fixed_k: int = hot(2)
    seed: int = hot(0)
    mdp: MDPParams = field(default_factory=MDPParams, metadata=HOT)
    # --- deadlines -----------------------------------------------------------------------------
    deadline_ms: int = hot(1000)  # default when the caller gives none
    max_deadline_ms: int = hot(1000)  # cap on any deadline (O-RAN near-RT loop: ≤ 1 s)
    safety_margin_ms: int = hot(20)  # kept back for serialisation and transport
    # --- serving -------------------------------------------------------------------------------
    grpc_port: int = 50051
    http_port: int = 8080
    max_concurrency: int = 8
    grace_period_s: float = hot(5.0)
    max_question_chars: int = hot(2000)
    max_options: int = hot(8)
    max_option_chars: int = hot(500)
    # --- security (docs/deploy.md#security) ---------------------------------------------------------
    host: str = "[::]"  # the address both ports bind ([::]: every interface; 127.0.0.1: this machine only)
    # TLS from mounted PEM files, on the gRPC and the HTTP port; empty: plain text (the RIC platform's default)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Mutual TLS on gRPC: callers must present a certificate issued by this CA (needs tls_cert/key_file)
    tls_client_ca_file: str = ""
    # Bearer tokens callers must send ("authorization: Bearer <token>"), one a line, re-read when the file
    # changes; empty: no token needed. grpc.health.v1 stays open for probes.
    auth_token_file: str = ""
    reflection: bool = True  # gRPC server reflection (grpcurl without the proto files)
    # Bounded resources (xapp/server/limits.py; docs/api.md, "Limits"). The gRPC receive limit is derived from
    # the text limits above at start. RPCs handled at once (running or waiting for one of max_concurrency
    # slots); beyond it a call is refused at once with RESOURCE_EXHAUSTED, before its work starts
    max_in_flight_requests: int = 64
    max_streams_per_connection: int = 64  # concurrent gRPC calls on one connection (HTTP/2 streams)
    max_connections: int = 256  # gRPC connections open at once; more are refused by gRPC
    grpc_idle_timeout_s: float = 300.0  # a gRPC connection with no call for this long is closed (clients reconnect)
    handshake_timeout_s: float = 10.0  # a new gRPC connection must finish its HTTP/2 handshake within this
    # An HTTP connection is closed when no complete request (headers included) arrives for this long
    http_idle_timeout_s: float = 15.0
    # --- telemetry -----------------------------------------------------------------------------
    otlp_endpoint: str = ""  # empty: OTEL_EXPORTER_OTLP_* decide; none set means no export
    # Questions and sub-queries may carry operator data: spans carry their length only, unless this is on.
    trace_text: bool = hot(False)
    log_format: str = "auto"  # json, console or auto (console on a terminal)
    log_level: str = hot("INFO")

    def validate(self) -> Settings:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.chroma_mode not in ("embedded", "http"):
            raise ConfigError(f"chroma_mode must be 'embedded' or 'http', got {self.chroma_mode!r}")
        if self.deadline_ms <= 0 or self.max_deadline_ms <= 0:
            raise ConfigError("deadline_ms and max_deadline_ms must be > 0")
        if self.store_timeout_ms < 1:
            raise ConfigError(f"store_timeout_ms must be >= 1, got {self.store_timeout_ms}")
        if self.store_down_after < 1:
            raise ConfigError(f"store_down_after must be >= 1, got {self.store_down_after}")
        if self.store_retry_max_s < 0.5:
            raise ConfigError(f"store_retry_max_s must be >= 0.5 (the first back-off), got {self.store_retry_max_s}")
        if self.top_k < 1:
            raise ConfigError("top_k must be >= 1")
        if self.max_steps < 1:
            raise ConfigError("max_steps must be >= 1")
        if not 0 <= self.ngram_speculation <= 8:
            raise ConfigError(f"ngram_speculation must be in 0..8 tokens, got {self.ngram_speculation}")
        if self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1")
        for name in ("max_in_flight_requests", "max_streams_per_connection", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.max_in_flight_requests < self.max_concurrency:
            raise ConfigError("max_in_flight_requests must be >= max_concurrency (calls beyond it wait for a slot)")
        for name in ("grpc_idle_timeout_s", "handshake_timeout_s", "http_idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds")
        if not 1 <= self.max_options <= MAX_OPTIONS:
            raise ConfigError(f"max_options must be in 1..{MAX_OPTIONS} (the LLM labels options A-Z)")
        if self.llm_url and not self.llm_url.startswith(("http://", "https://")):
            raise ConfigError(f"llm_url must start with http:// or https://, got {self.llm_url!r}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            given, missing = (
                ("tls_cert_file", "tls_key_file") if self.tls_cert_file else ("tls_key_file", "tls_cert_file")
            )
            raise ConfigError(f"{given} is set but {missing} is not: TLS needs both the certificate and its key")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file as well")
        if not self.host.strip():
            raise ConfigError("host must not be empty (e.g. [::] for every interface, 127.0.0.1 for loopback)")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"log_format must be auto, json or console, got {self.log_format!r}")
        self.mdp.validate()
        return self

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data_dir"] = str(self.data_dir)
        return out


# --------------------------------------------------------------------------------------------------
# Loading: defaults < descriptor controls < environment < flags


#: Settings a running xApp takes over at once, and those that need a restart (declared on each field).
HOT_SETTINGS: frozenset[str] = frozenset(f.name for f in fields(Settings) if f.metadata.get("reload") == "hot")
RESTART_SETTINGS: frozenset[str] = frozenset(f.name for f in fields(Settings)) - HOT_SETTINGS


def _coerce(name: str, current: Any, value: Any) -> Any:
    """Convert a descriptor or environment value to the type of the default it replaces."""
    try:
        if isinstance(current, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, Path):
            return Path(str(value)).expanduser()
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {name}: cannot use {value!r} (expected {type(current).__name__})"
        ) from None


def _apply(settings: Settings, values: Mapping[str, Any], origin: str) -> Settings:
    changes: dict[str, Any] = {}
    known = {f.name for f in fields(Settings)}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        if value is None:
            continue
        if name == "mdp":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: mdp must be an object")
            mdp_known = {f.name for f in fields(MDPParams)}
            mdp_changes = {}
            for mkey, mvalue in value.items():
                mname = mkey.replace("-", "_")
                if mname not in mdp_known:
                    raise ConfigError(f"{origin}: unknown setting mdp.{mkey}")
                mdp_changes[mname] = _coerce(f"mdp.{mname}", getattr(settings.mdp, mname), mvalue)
            changes["mdp"] = dataclasses.replace(settings.mdp, **mdp_changes)
        else:
            changes[name] = _coerce(name, getattr(settings, name), value)
    return dataclasses.replace(settings, **changes)


def descriptor_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The O-RAN SC descriptor to read: ``CONFIG_FILE``, else the xApp framework's ``XAPP_DESCRIPTOR_PATH``."""
    env = os.environ if environ is None else environ
    if env.get("CONFIG_FILE"):
        return Path(env["CONFIG_FILE"])
    if env.get("XAPP_DESCRIPTOR_PATH"):
        path = Path(env["XAPP_DESCRIPTOR_PATH"])
        return path / "config-file.json" if path.is_dir() else path
    return None


def read_descriptor_controls(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read descriptor {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"descriptor {path} is not valid JSON: {exc}") from None
    controls = doc.get("controls", {}) if isinstance(doc, dict) else None
    if not isinstance(controls, dict):
        raise ConfigError(f"descriptor {path}: 'controls' must be an object")
    return controls


def environment_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "mdp":
            mdp: dict[str, str] = {}
            for mf in fields(MDPParams):
                key = f"ARGO_MDP_{mf.name.upper()}"
                if key in env:
                    mdp[mf.name] = env[key]
            if mdp:
                out["mdp"] = mdp
            continue
        key = f"ARGO_{f.name.upper()}"
        if key in env:
            out[f.name] = env[key]
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    descriptor: Path | None = None,
) -> Settings:
    """Build the settings: defaults < descriptor ``controls`` < ``ARGO_*`` environment < flags.

    ``flags`` holds only what the user gave on the command line (None values are ignored).
    """
    settings = Settings()
    path = descriptor if descriptor is not None else descriptor_path(environ)
    if path is not None:
        settings = _apply(settings, read_descriptor_controls(path), f"descriptor {path}")
    settings = _apply(settings, environment_overrides(environ), "environment")
    if flags:
        settings = _apply(settings, flags, "flags")
    return settings.validate()
