"""A running xApp sees documents ingested after it started, without a restart.

A real gRPC server (template strategy, no LLM engine) serves a real pipeline; ``argo-xapp ingest`` runs as a
separate process afterwards, as an operator would run it. With a shared ``chroma run`` server the new chunks
are in the server's index at once; with the embedded store the xApp's knowledge base notices the writer's
generation bump and re-opens its client (see xapp.store.knowledge_base). Either way Retrieve and Answer
return the new document within seconds, and after an update only its new content.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kb_support import chroma_server, copy_builtin

from xapp._proto.argo.v1 import argo_pb2 as pb
from xapp.client import SyncArgoClient
from xapp.config import Settings
from xapp.pipeline.runner import build_pipeline
from xapp.server.app import ArgoServer
from xapp.store.knowledge_base import KnowledgeBase

T = TypeVar("T")
QUESTION = "Which A1 policy type id does the lab use for traffic steering?"
DOC = "# Lab policies\n\nThe A1 policy type id that the lab uses for traffic steering is {id}, set by the operator.\n"


def _poll(call: Callable[[], T], ok: Callable[[T], bool], timeout: float = 20.0) -> T:
    end = time.monotonic() + timeout
    while True:
        value = call()
        if ok(value) or time.monotonic() > end:
            return value
        time.sleep(0.2)


def _texts(reply: pb.RetrieveReply) -> str:
    return " ".join(p.text for p in reply.passages)


async def _serve(settings: Settings, stack: contextlib.AsyncExitStack) -> ArgoServer:
    pipeline = await stack.enter_async_context(build_pipeline(settings))
    server = ArgoServer(settings)
    await server.start(0, "127.0.0.1")
    await server.attach(pipeline)
    stack.push_async_callback(server.stop, 0)
    return server


@pytest.mark.parametrize("mode", ["embedded", "http"])
def test_running_server_answers_from_documents_ingested_after_it_started(
    mode: str, builtin_kb_settings: Settings, tmp_path: Path, run: Any
) -> None:
    settings = copy_builtin(builtin_kb_settings, tmp_path / "data").replace(strategy="template")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    lib = tmp_path / "lab-specs"
    lib.mkdir()
    ingest = [sys.executable, "-m", "xapp", "ingest", str(lib), "--data-dir", str(settings.data_dir), "--no-progress"]
    with contextlib.ExitStack() as stack:
        if mode == "http":
            port = stack.enter_context(chroma_server(settings.chroma_dir))
            settings = settings.replace(chroma_mode="http", chroma_host="127.0.0.1", chroma_port=port)
            env.update(ARGO_CHROMA_MODE="http", ARGO_CHROMA_HOST="127.0.0.1", ARGO_CHROMA_PORT=str(port))
        astack = contextlib.AsyncExitStack()
        server = run(_serve(settings, astack))
        stack.callback(lambda: run(astack.aclose()))
        with SyncArgoClient(f"127.0.0.1:{server.port}", default_timeout_s=10.0) as client:
            before = client.retrieve(QUESTION, top_k=3)
            assert before.passages and not any(p.source.startswith("lab-specs/") for p in before.passages)

            (lib / "policies.md").write_text(DOC.format(id=31337), encoding="utf-8")
            done = subprocess.run(ingest, capture_output=True, env=env, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
            t0 = time.monotonic()
            reply = _poll(lambda: client.retrieve(QUESTION, top_k=3), lambda r: "31337" in _texts(r))
            seen_after = time.monotonic() - t0
            assert "31337" in _texts(reply), f"{mode}: the server never returned the new document"
            assert reply.passages[0].source == "lab-specs/policies.md"
            assert seen_after < 5.0, f"{mode}: seen only after {seen_after:.1f} s"
            answer = client.answer(QUESTION, strategy="template", deadline_ms=2000)
            assert "lab-specs/policies.md" in answer.sources and "31337" in answer.answer

            # An update replaces: the server returns the new content and never the old one again.
            (lib / "policies.md").write_text(DOC.format(id=4242), encoding="utf-8")
            subprocess.run(ingest, check=True, capture_output=True, env=env)
            reply = _poll(lambda: client.retrieve(QUESTION, top_k=5), lambda r: "4242" in _texts(r))
            assert "4242" in _texts(reply) and "31337" not in _texts(reply)
            assert "31337" not in _texts(client.retrieve("traffic steering policy type id 31337", top_k=10))


def test_embedded_refresh_sees_another_process_writes(builtin_kb_settings: Settings, tmp_path: Path) -> None:
    """What the embedded case needs: a long-lived client re-opened after the writer's generation bump."""
    settings = copy_builtin(builtin_kb_settings, tmp_path / "data")
    reader = KnowledgeBase.open(settings)
    count = reader.count()
    assert reader.refresh() is False  # nothing changed yet
    lib = tmp_path / "lab-specs"
    lib.mkdir()
    (lib / "policies.md").write_text(DOC.format(id=31337), encoding="utf-8")
    cmd = [sys.executable, "-m", "xapp", "ingest", str(lib), "--data-dir", str(settings.data_dir), "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert reader.refresh() is True
    assert reader.count() == count + 1
    assert reader.query(QUESTION, 1)[0].source == "lab-specs/policies.md"
    subprocess.run(
        [sys.executable, "-m", "xapp", "kb", "remove", "lab-specs", "--data-dir", str(settings.data_dir)],
        check=True,
        capture_output=True,
    )
    # Without an explicit refresh: the next reads after the check interval see the removal.
    reply = _poll(lambda: reader.query(QUESTION, 1), lambda ps: ps[0].source != "lab-specs/policies.md", 10)
    assert reply[0].source != "lab-specs/policies.md" and reader.count() == count
