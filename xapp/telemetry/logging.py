"""Structured logs: structlog, one JSON object per line (console rendering on a terminal).

Every line inside a traced request carries ``trace_id`` and ``span_id`` (hex, as Jaeger shows them), so a
log line leads to its trace and back. The standard-library loggers of the libraries we run on (vLLM,
Chroma, gRPC, OpenTelemetry, aiohttp) go through the same formatter: one stream, one format; what they
print that tells an operator nothing is silenced at its source (:mod:`xapp.telemetry.library_output`),
in vLLM's worker process too. ``notice`` says what a first start prepares (shown at WARNING too); the
gRPC interceptor writes one line per RPC (:mod:`xapp.telemetry.interceptor`).

Fields of a line: ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message), then
``trace_id``/``span_id`` when a span is current, ``rpc`` inside a gRPC handler, and whatever was bound.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog
from opentelemetry import trace

from xapp.config import Settings
from xapp.errors import ConfigError
from xapp.telemetry import library_output
from xapp.telemetry.attrs import LOG_SPAN_ID, LOG_TRACE_ID

# Libraries whose own loggers are routed through ours (they may have installed handlers of their own).
ROUTED_LOGGERS = ("vllm", "chromadb", "grpc", "opentelemetry", "aiohttp", "asyncio", "py.warnings")
# Libraries that log every HTTP request at INFO (Chroma's HTTP client): kept at WARNING or above.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")

_MARK = "_argo_xapp_handler"
# ``extra=`` keys of standard-library log calls that become fields of the line.
STDLIB_FIELDS = ("descriptor", "restart_required", "applied", "suppressed")
# What argo-xapp prepares on a first start (model conversion, knowledge-base ingestion) and how long it
# takes: said even when the level is WARNING (``argo-xapp ask``), since the wait would otherwise be silent.
NOTICE_LOGGER = "xapp.notice"


def add_trace_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: ``trace_id`` and ``span_id`` of the current OpenTelemetry span, if any."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault(LOG_TRACE_ID, format(ctx.trace_id, "032x"))
        event_dict.setdefault(LOG_SPAN_ID, format(ctx.span_id, "016x"))
    return event_dict


def parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.strip().upper())
    if not isinstance(value, int):
        raise ConfigError(f"log_level: unknown level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _use_console(log_format: str, stream: IO[str]) -> bool:
    if log_format == "console":
        return True
    if log_format == "json":
        return False
    if log_format != "auto":
        raise ConfigError(f"log_format must be auto, json or console, got {log_format!r}")
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def configure_logging(
    settings: Settings | None = None,
    *,
    level: str | int | None = None,
    log_format: str | None = None,
    stream: IO[str] | None = None,
    progress: bool = True,
) -> logging.Handler:
    """Configure structlog and the standard library's root logger; returns the handler it installed.

    ``level``/``log_format`` override the settings' ``log_level``/``log_format``; ``stream`` defaults to
    stderr. Calling it again replaces the previous configuration (tests, a reload). The libraries' own
    output is silenced at its source (:mod:`xapp.telemetry.library_output`); ``progress=False`` also turns
    their progress bars off.
    """
    settings = settings or Settings()
    lvl = parse_level(level if level is not None else settings.log_level)
    out = stream if stream is not None else sys.stderr
    console = _use_console(log_format or settings.log_format, out)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
        structlog.processors.StackInfoRenderer(),
    ]
    # Standard-library records carry no fields, except the extras we give them: the descriptor watcher's
    # (``extra={"descriptor": …}``) and ExportFailureFilter's count; libraries' own extras stay out.
    foreign = [*shared, structlog.stdlib.ExtraAdder(allow=list(STDLIB_FIELDS))]
    renderer: Any
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if console:
        # Plain tracebacks: the rich one prints every local (a vLLM config is thousands of lines).
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback)
    else:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    final.append(renderer)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a module-level logger used before configure_logging would keep the old setup.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=foreign, processors=final))
    handler.addFilter(library_output.LibraryFilter())
    handler.addFilter(library_output.ExportFailureFilter())
    setattr(handler, _MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)

    for name in ROUTED_LOGGERS:
        route_logger(name)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))
    # vLLM configures its logger when imported, here and in its worker process: through our handler.
    library_output.quiet_libraries(lvl, console=console, progress=progress)
    if not console and stream is None:
        # What is printed on stderr without a logger (a child's traceback, a library's print) becomes JSON too.
        library_output.json_stderr()
    _set_notice_level(lvl)
    logging.captureWarnings(True)
    return handler


def _set_notice_level(lvl: int) -> None:
    logging.getLogger(NOTICE_LOGGER).setLevel(logging.INFO if lvl <= logging.WARNING else lvl)


def notice(event: str, **fields: Any) -> None:
    """Say what a first start prepares and for how long (shown at the WARNING level too)."""
    structlog.stdlib.get_logger(NOTICE_LOGGER).info(event, **fields)


class _ToRootHandlers(logging.Handler):
    """Hands a record to the root logger's handlers (a logger that does not propagate, like vLLM's)."""

    def emit(self, record: logging.LogRecord) -> None:
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def library_handler() -> logging.Handler:
    """The handler of vLLM's dictConfig (:func:`xapp.telemetry.library_output.vllm_logging_config`).

    In a process whose logging is not configured yet — vLLM's worker process, which imports vLLM before
    anything else — it configures ours first, with the parent's level and format (from the environment).
    """
    if not any(getattr(h, _MARK, False) for h in logging.getLogger().handlers):
        configure_logging(
            level=os.environ.get(library_output.CHILD_LEVEL_ENV) or "WARNING",
            log_format=os.environ.get(library_output.CHILD_FORMAT_ENV) or "json",
            progress=os.environ.get("TQDM_DISABLE") != "1",
        )
    return _ToRootHandlers()


def set_log_level(level: str | int) -> int:
    """Change the level of every routed logger at run time (a hot ``log_level`` from the descriptor).

    Raises ConfigError for an unknown level; returns the numeric level applied.
    """
    lvl = parse_level(level)
    logging.getLogger().setLevel(lvl)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))
    library_output.set_library_levels(lvl)
    _set_notice_level(lvl)
    return lvl


def route_logger(name: str) -> None:
    """Send a library logger through the root handler: drop its own handlers, inherit the root level.

    Call again after importing a library that configures its logger at import time.
    """
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def get_logger(name: str | None = None, **bound: Any) -> Any:
    """A structlog logger (``log.info("event", key=value)``)."""
    return structlog.stdlib.get_logger(name, **bound)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
