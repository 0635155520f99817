"""Bounded resources: a flood of oversized requests is refused by gRPC before it is parsed, and the server's
memory stays where it was (issue 15, defect 2). The server is a real ``argo-xapp serve`` process on the
template path (no LLM), reading a copy of the session's built-in knowledge base.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from process_support import wait_serving

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp._proto.argo.v1 import argo_pb2_grpc as pb_grpc
from xapp.client import SyncArgoClient

FLOOD_REQUESTS = 128
FLOOD_BYTES = 3_900_000  # just under gRPC's default 4 MiB receive limit: what the probe sent
FLOOD_CHANNELS = 16  # connections the flood spreads over (a real probe opens several)
# The bound: the flood may raise the server's resident memory by at most this much, at its peak and after.
# Before the limits the same flood took it from 654 MB to 1184 MB, and it stayed at 1165 MB (docs/api.md, "Limits").
RSS_PEAK_BOUND_MB = 150
RSS_AFTER_BOUND_MB = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class TemplateServer:
    proc: subprocess.Popen[str]
    target: str
    log: Path


@pytest.fixture(scope="module")
def template_server(
    builtin_kb_settings: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TemplateServer]:
    tmp = tmp_path_factory.mktemp("limits")
    data = tmp / "data"
    shutil.copytree(builtin_kb_settings.data_dir, data)  # its own copy: Chroma files are not shared live
    port = free_port()
    log = tmp / "server.log"
    env = {
        **os.environ,
        "ARGO_DATA_DIR": str(data),
        "ARGO_LLM": "0",
        "ARGO_STRATEGY": "template",
        "OTEL_SDK_DISABLED": "true",
    }
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xapp", "serve", "--grpc-port", str(port), "--http-port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    server = TemplateServer(proc, f"127.0.0.1:{port}", log)
    try:
        with SyncArgoClient(server.target, default_timeout_s=5) as client:
            wait_serving(client, proc, log, timeout=240)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def answer_ok(target: str) -> pb.AnswerReply:
    with SyncArgoClient(target, default_timeout_s=5) as client:
        return client.answer("What does the E2 interface connect?", strategy="template", deadline_ms=1000)


async def _flood(target: str) -> list[tuple[grpc.StatusCode, str]]:
    request = pb.AnswerRequest(question="x" * FLOOD_BYTES, strategy="template", deadline_ms=1000)
    channels = [grpc.aio.insecure_channel(target) for _ in range(FLOOD_CHANNELS)]
    stubs = [pb_grpc.ArgoServiceStub(ch) for ch in channels]

    async def one(k: int) -> tuple[grpc.StatusCode, str]:
        try:
            await stubs[k % FLOOD_CHANNELS].Answer(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    try:
        return await asyncio.gather(*(one(k) for k in range(FLOOD_REQUESTS)))
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))


@pytest.mark.slow
def test_a_flood_of_oversized_requests_is_refused_and_memory_stays_bounded(template_server: TemplateServer) -> None:
    pid = template_server.proc.pid
    answer_ok(template_server.target)  # warm: the first answer's allocations are not the flood's
    time.sleep(0.5)
    baseline = rss_mb(pid)
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak.append(rss_mb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        outcomes = asyncio.run(_flood(template_server.target))
    finally:
        sampling.set()
        sampler.join(5)
    flood_s = time.monotonic() - t0
    time.sleep(1.0)
    after = rss_mb(pid)
    figures = (
        f"baseline {baseline:.0f} MB, peak {max(peak):.0f} MB, after {after:.0f} MB, "
        f"{FLOOD_REQUESTS} x {FLOOD_BYTES / 1e6:.1f} MB refused in {flood_s:.1f} s"
    )
    print(figures)
    codes = {code for code, _ in outcomes}
    assert codes <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT}, (codes, figures)
    # The message says what was too large and what the limit is.
    assert all("larger than max" in details or "question:" in details for _, details in outcomes), outcomes[:3]
    assert max(peak) - baseline < RSS_PEAK_BOUND_MB, figures
    assert after - baseline < RSS_AFTER_BOUND_MB, figures
    # … and it still answers.
    assert answer_ok(template_server.target).answer.strip()


def test_the_http_port_cuts_off_slow_headers_and_refuses_oversized_ones() -> None:
    from xapp.server.http import MAX_HEADER_LINE_BYTES, HttpEndpoints

    async def main() -> tuple[float, bytes, bytes]:
        async with HttpEndpoints(ready=lambda: True, port=0, host="127.0.0.1", idle_timeout_s=0.5) as http:
            # A client that starts a request and never finishes its headers (slowloris) …
            reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
            writer.write(b"GET /ric/v1/health/alive HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
            t0 = time.monotonic()
            closed = await asyncio.wait_for(reader.read(), timeout=5)  # b"" once the server closes it
            cut_after = time.monotonic() - t0
            writer.close()
            # … a header over the limit …
            reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
            big = b"X-Big: " + b"a" * (MAX_HEADER_LINE_BYTES + 1) + b"\r\n"
            writer.write(b"GET /ric/v1/health/alive HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
            refused = await asyncio.wait_for(reader.readline(), timeout=5)
            writer.close()
            # … and a normal probe.
            reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
            writer.write(b"GET /ric/v1/health/alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            ok = await asyncio.wait_for(reader.readline(), timeout=5)
            writer.close()
            return cut_after, closed + refused, ok

    cut_after, refused, ok = asyncio.run(main())
    assert cut_after < 2.0 and refused.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4")), (cut_after, refused)
    assert ok.startswith(b"HTTP/1.1 200"), ok
