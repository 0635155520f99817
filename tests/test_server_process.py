"""`argo-xapp serve` as a real process: it becomes SERVING, answers, and on SIGTERM stops accepting,
finishes the request in flight, and exits 0. It loads its own vLLM engine (the tiny W8A8 model of
conftest.py) and the shipped knowledge base into a fresh data directory, exactly as in production.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from monitoring_support import load as load_monitoring
from monitoring_support import queried_metrics, served_metrics
from process_support import wait_serving

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.client import SyncArgoClient

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server_process(tmp_path: Path, tiny_w8a8_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "ARGO_DATA_DIR": str(tmp_path / "data"),
        "ARGO_MODEL": str(tiny_w8a8_dir),
        "ARGO_KV_CACHE_GIB": "0.25",
        "ARGO_GRACE_PERIOD_S": "5",
        "OTEL_SDK_DISABLED": "true",
    }
    with log_path.open("w") as log, (tmp_path / "server.stdout").open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xapp", "serve", "--grpc-port", str(port), "--http-port", "0"],
            env=env,
            stdout=out,
            stderr=log,
            text=True,
        )
    try:
        yield proc, f"127.0.0.1:{port}", log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)




def test_sigterm_drains_the_request_in_flight_and_exits_0(
    server_process: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, target, log = server_process
    with SyncArgoClient(target, default_timeout_s=5) as client:
        wait_serving(client, proc, log)
        assert client.answer("What does the E2 interface connect?", deadline_ms=1000).answer.strip()
        # Every metric the shipped dashboard and alert rules query is served after one request.
        http_port = next(
            json.loads(line)["http_port"] for line in log.read_text().splitlines() if '"http listening"' in line
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ric/v1/metrics", timeout=10) as resp:
            text = resp.read().decode()
        served = served_metrics(text)
        assert 'model="tiny-qwen2-w8a8"' in text and 'quantization="compressed-tensors"' in text, text  # build_info
        assert "argo_xapp_ready 1.0" in text, text
        assert queried_metrics(*load_monitoring()) - served == set(), text
        assert "argo_xapp_rpc_requests_total" in served and not [n for n in served if n.endswith("_created")]

        result: dict[str, Any] = {}

        def in_flight() -> None:
            try:
                result["reply"] = client.answer(
                    "What is the near-RT RIC?", strategy="always-reason", deadline_ms=900, timeout=3
                )
            except grpc.RpcError as exc:
                result["error"] = (exc.code(), exc.details())

        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(0.15)  # the request is in the pipeline now
        sigterm_at = time.time()  # wall clock, as the log's timestamps
        proc.send_signal(signal.SIGTERM)
        thread.join(10)
        returncode = proc.wait(30)

    text = log.read_text()
    assert returncode == 0, text[-4000:]
    assert "reply" in result, (result, text[-4000:])
    assert result["reply"].answer.strip()
    assert result["reply"].path in (pb.PATH_LLM, pb.PATH_TEMPLATE, pb.PATH_MIXED)
    # Drained within the 5 s grace period: the server stopped serving once the request in flight was answered
    # (closing the engine and the interpreter's exit come after, and take seconds more on a loaded CPU).
    stopped = next(json.loads(line) for line in text.splitlines() if '"event": "stopped"' in line)
    drained_in = datetime.fromisoformat(stopped["timestamp"].replace("Z", "+00:00")).timestamp() - sigterm_at
    assert drained_in < 5 + 1, f"drained in {drained_in:.1f} s"
    assert "Traceback" not in text, text[-4000:]
    # Everything the server and the libraries it runs (vLLM and its worker process, torch, Chroma) wrote,
    # from start-up to the exit: JSON lines only (no ARGO_LOG_FORMAT set: serve logs JSON by default).
    lines = [json.loads(line) for line in text.splitlines()]  # raises on the first line that is not JSON
    assert (log.parent / "server.stdout").read_text() == ""
    assert all({"event", "level", "logger", "timestamp"} <= set(line) for line in lines), lines
    events = [line["event"] for line in lines]
    assert "listening" in events and "serving" in events and "stopping" in events and "stopped" in events
    answered = [line for line in lines if line["event"] == "answered" and line["rpc"] == "Answer"]
    assert len(answered) == 2, events
    for line in answered:
        assert line["code"] == "OK" and line["path"] in ("llm", "template", "mixed")
        assert line["strategy"] in ("mdp", "always-reason") and isinstance(line["fallbacks"], list)
        assert line["deadline_ms"] > 0 and line["elapsed_ms"] > 0
        assert "trace_id" not in line  # OTEL_SDK_DISABLED: no spans, no ids
    assert not [line for line in lines if line["logger"].startswith("xapp.server.rpc") and line["rpc"] == "Check"]
    stopping = next(line for line in lines if line["event"] == "stopping")
    assert {"in_flight", "waiting", "grace_s"} <= set(stopping)
    # After the stop nothing listens any more.
    with SyncArgoClient(target) as after, pytest.raises(grpc.RpcError) as info:
        after.health(timeout=1)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_engine_that_cannot_start_is_reported_in_json_lines_and_exit_1(
    tmp_path: Path, tiny_w8a8_dir: Path, builtin_kb_settings: Any
) -> None:
    # A KV cache larger than the machine's memory: vLLM's engine process fails and prints its traceback.
    import shutil

    data = tmp_path / "data"
    shutil.copytree(builtin_kb_settings.data_dir, data)  # a warm knowledge base of its own
    env = {
        **os.environ,
        "ARGO_DATA_DIR": str(data),
        "ARGO_MODEL": str(tiny_w8a8_dir),
        "ARGO_KV_CACHE_GIB": "100000",
        "OTEL_SDK_DISABLED": "true",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "xapp", "serve", "--grpc-port", str(free_port()), "--http-port", "0"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    events = [line["event"] for line in lines]
    assert "cannot build the pipeline" in events and events[-1] == "exiting", events
    assert proc.stdout == ""
