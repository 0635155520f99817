"""The client of xapp/client.py against a real `argo-xapp serve --no-llm` process (template path, the built-in
knowledge base): every RPC, sync and async; replies without passages on request; rounded milliseconds; the
deadline cap said in the reply. And the light install: `pip install argo-xapp` into a fresh venv, without
torch, chromadb or the server's other dependencies, answers through that server (slow).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.client import ArgoClient, Strategy, SyncArgoClient, ask
from xapp.config import STRATEGIES, Settings

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What does the E2 interface connect?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def target(builtin_kb_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("client-server") / "server.log"
    env = {**os.environ, "ARGO_DATA_DIR": str(builtin_kb_settings.data_dir), "OTEL_SDK_DISABLED": "true"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xapp", "serve", "--no-llm", "--grpc-port", str(port), "--http-port", "0"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        with SyncArgoClient(address) as client:
            end = time.monotonic() + 300
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if client.health() == "SERVING":
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < end, log.read_text()[-3000:]
                time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        proc.wait(30)


def test_strategy_enum_is_the_servers_list() -> None:
    assert [s.value for s in Strategy if s is not Strategy.DEFAULT] == list(STRATEGIES)


def test_every_rpc_sync(target: str) -> None:
    with SyncArgoClient(target, default_timeout_s=5) as client:
        full = client.answer(QUESTION, strategy=Strategy.TEMPLATE, deadline_ms=1000)
        light = client.answer(QUESTION, strategy="template", deadline_ms=1000, omit_passages=True)
        retrieves = [s for s in full.steps if s.action == pb.ACTION_RETRIEVE]
        assert retrieves and all(s.passages for s in retrieves)
        assert light.steps and not any(s.passages for s in light.steps)
        assert all(s.sources for s in light.steps if s.action == pb.ACTION_RETRIEVE)  # sources stay
        assert light.ByteSize() * 3 < full.ByteSize(), (light.ByteSize(), full.ByteSize())
        # Milliseconds rounded to 0.1 ms.
        values = [full.elapsed_ms, full.deadline_ms, *full.timings_ms.values(), *(s.latency_ms for s in full.steps)]
        for value in values:
            assert round(value, 1) == value, value
        assert full.requested_deadline_ms == 1000 and full.deadline_note == ""
        capped = client.answer(QUESTION, strategy="template", deadline_ms=120_000, timeout=5)
        assert capped.requested_deadline_ms == 120_000
        assert capped.deadline_note == "deadline 120000 ms capped to max_deadline_ms 1000 ms"
        assert capped.deadline_ms <= 1000

        events = list(client.answer_stream(QUESTION, strategy="template", deadline_ms=1000, omit_passages=True))
        assert events[-1].WhichOneof("event") == "answer" and events[-1].answer.answer
        assert all(not e.step.passages for e in events if e.WhichOneof("event") == "step")
        decomposed = client.decompose(QUESTION, deadline_ms=1000)
        assert decomposed.query
        retrieved = client.retrieve(decomposed.query, top_k=2, deadline_ms=1000)
        assert 1 <= len(retrieved.passages) <= 2
        synthesized = client.synthesize(QUESTION, [retrieved.step], deadline_ms=1000)
        assert synthesized.answer
        assert client.health() == "SERVING"
    doc = ask(target, QUESTION, strategy="template", deadline_ms=1000, omit_passages=True)
    assert doc["answer"] and doc["deadline_note"] is None and doc["requested_deadline_ms"] == 1000


def test_every_rpc_async(target: str) -> None:
    async def run() -> list[str]:
        async with ArgoClient(target, default_timeout_s=5) as client:
            await client.wait_serving(timeout=5)
            reply = await client.answer(QUESTION, strategy=Strategy.TEMPLATE, deadline_ms=1000, omit_passages=True)
            events = [e async for e in client.answer_stream(QUESTION, strategy="template", deadline_ms=1000)]
            decomposed = await client.decompose(QUESTION, deadline_ms=1000)
            retrieved = await client.retrieve(decomposed.query, deadline_ms=1000)
            synthesized = await client.synthesize(QUESTION, [retrieved.step], deadline_ms=1000)
            assert not any(s.passages for s in reply.steps)
            return [reply.answer, events[-1].answer.answer, decomposed.query, synthesized.answer,
                    await client.health()]  # fmt: skip

    out = asyncio.run(run())
    assert all(out) and out[-1] == "SERVING"


def test_wait_serving_waits_for_a_server_that_is_not_listening_yet() -> None:
    """A caller started before the xApp (a pod's sidecar, a bench) waits instead of failing UNAVAILABLE."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    port = free_port()

    async def run() -> float:
        async def late_server() -> grpc.aio.Server:
            await asyncio.sleep(0.5)
            server = grpc.aio.server()
            health = HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health, server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await health.set("", health_pb2.HealthCheckResponse.SERVING)
            return server

        started = asyncio.create_task(late_server())
        t0 = time.monotonic()
        async with ArgoClient(f"127.0.0.1:{port}") as client:
            await client.wait_serving(timeout=10)
        waited = time.monotonic() - t0
        await (await started).stop(None)
        return waited

    assert asyncio.run(run()) >= 0.5


# What `pip install argo-xapp` must never pull in: the server's dependencies.
SERVER_ONLY = ("torch", "chromadb", "vllm", "numpy", "structlog", "matplotlib", "aiohttp", "prometheus_client")


@pytest.mark.slow
def test_client_installs_alone_in_a_fresh_venv_and_answers(target: str, tmp_path: Path) -> None:
    # A copy of the sources (pip builds in the source tree; the working tree is not written to).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "xapp", src / "xapp", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    code = (
        "import importlib.util, json, sys\n"
        f"server_only = [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)]\n"
        "from xapp.client import SyncArgoClient, ask\n"
        f"doc = ask({target!r}, {QUESTION!r}, strategy='template', deadline_ms=1000, omit_passages=True)\n"
        "print(json.dumps({'server_only': server_only, 'answer': doc['answer'], 'path': doc['path'],\n"
        "                  'modules': sorted(m for m in sys.modules if m.startswith('xapp'))}))\n"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["server_only"] == [], result
    assert result["answer"] and result["path"] == "template"
    assert set(result["modules"]) <= {"xapp", "xapp.client", "xapp._proto", "xapp._proto.argo", "xapp._proto.argo.v1",
                                      "xapp._proto.argo.v1.argo_pb2", "xapp._proto.argo.v1.argo_pb2_grpc",
                                      "xapp.telemetry", "xapp.telemetry.propagation"}, result  # fmt: skip


def test_ask_over_grpc_follows_the_same_deadline_rules(target: str, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ARGO_DATA_DIR": str(tmp_path)}
        command = [sys.executable, "-m", "xapp", "ask", QUESTION, "--server", target, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    import json

    capped = cli("--strategy", "template", "--deadline-ms", "120000", "--json")
    assert capped.returncode == 0 and capped.stderr == "", capped.stderr
    doc = json.loads(capped.stdout)
    assert doc["deadline_note"] == "deadline 120000 ms capped to max_deadline_ms 1000 ms"
    assert doc["requested_deadline_ms"] == 120000 and doc["deadline_ms"] <= 1000
    text = cli("--strategy", "template", "--deadline-ms", "120000")
    assert "Deadline: deadline 120000 ms capped to max_deadline_ms 1000 ms" in text.stdout
    zero = cli("--deadline-ms", "0")  # an error here as locally, not "the server default"
    assert zero.returncode == 2 and "--deadline-ms must be > 0" in zero.stderr
