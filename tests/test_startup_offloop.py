"""Start-up work runs off the event loop (issue 15, item 3): while a real ``argo-xapp serve`` imports vLLM,
builds its engine (the tiny W8A8 model of conftest.py), opens the knowledge base and calibrates, every
``/ric/v1/health/alive`` poll and every gRPC health check answers at once, NOT_SERVING until it is loaded.
Before, the engine was built on the loop: half of the polls timed out while it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kb_support import copy_builtin, free_port

from xapp.config import Settings
from xapp.server.http import ALIVE_PATH

pytestmark = pytest.mark.slow

POLL_S = 0.05
# Measured here, on 2 cores shared with other test runs (load average 2-3): 511-604 polls per start, the
# slowest 364-440 ms in three runs; a watchdog on the loop found no stall left in our code, only waits for
# the GIL and the CPU. Before: the loop stalled for seconds (a 2 s poll timed out, gRPC health took 5 s).
# The bound sits well below the chart's probe timeout (3 s) and well above this machine's noise.
ANSWER_WITHIN_S = 1.0


def test_health_answers_at_once_while_the_engine_starts(
    tiny_w8a8_dir: Path, builtin_kb_settings: Settings, tmp_path: Path
) -> None:
    data = copy_builtin(builtin_kb_settings, tmp_path / "data").data_dir  # no 30-second ingestion here
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "ARGO_DATA_DIR": str(data),
        "ARGO_MODEL": str(tiny_w8a8_dir),
        "ARGO_KV_CACHE_GIB": "0.25",
        "OTEL_SDK_DISABLED": "true",
    }
    log = tmp_path / "server.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xapp", "serve", "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    slow: list[str] = []
    statuses: list[str] = []
    alive_polls = 0
    worst = 0.0
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = health_pb2_grpc.HealthStub(channel)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{ALIVE_PATH}", timeout=2) as reply:
                    assert reply.status == 200
                alive_polls += 1
                worst = max(worst, time.monotonic() - t0)
                if time.monotonic() - t0 > ANSWER_WITHIN_S:
                    slow.append(f"/alive {(time.monotonic() - t0) * 1000:.0f} ms at poll {alive_polls}")
            except (OSError, urllib.error.URLError) as exc:  # not listening yet (or, later, too slow)
                if alive_polls:
                    slow.append(f"/alive failed after {alive_polls} polls: {exc}")
            if alive_polls:
                t1 = time.monotonic()
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if time.monotonic() - t1 > ANSWER_WITHIN_S:
                    slow.append(f"gRPC health {(time.monotonic() - t1) * 1000:.0f} ms at poll {alive_polls}")
                statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
                if statuses[-1] == "SERVING":
                    break
            time.sleep(POLL_S)
        channel.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert statuses and statuses[-1] == "SERVING", f"not SERVING in time:\n{log.read_text()[-3000:]}"
    assert statuses.count("NOT_SERVING") >= 10, statuses  # the polls did cover the start-up
    print(f"{alive_polls} /alive polls during start-up, slowest {worst * 1000:.0f} ms")
    assert not slow, f"{len(slow)} of {alive_polls} polls were slow: {slow[:10]}"
