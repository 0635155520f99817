"""Honest store health (issue 15, item 3): ``argo.v1.store`` and readiness follow what the store does.

Unit tests of :class:`xapp.store.health.StoreHealth`, then two end-to-end tests on a real server (gRPC and
HTTP on free ports, in this process, no LLM) against a real ``chroma run`` server:

* started while Chroma's port is dead: it serves (answers say retrieval is unavailable, the store is
  NOT_SERVING, not ready, alive), and once ``chroma run`` comes up on that port the store turns SERVING and
  answers carry sources, without a restart (before: ``serve`` exited 1, a crash-loop in a pod);
* a hung Chroma (SIGSTOP): answers stay inside their deadlines, the store goes NOT_SERVING within seconds,
  and SERVING again after SIGCONT (before: SERVING for over a minute, health probes stuck behind the ping).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kb_support import chroma_process, copy_builtin, free_port
from process_support import wait_until

from xapp.client import SyncArgoClient
from xapp.config import Settings
from xapp.server.app import ArgoServer, serve_async
from xapp.server.http import ALIVE_PATH, READY_PATH, http_extension
from xapp.store.health import StoreHealth

# Answers that must carry sources get room for a retrieval on a loaded machine; the others the default 1 s.
ROOMY_MS = 3000
QUESTION = "Which interface connects the near-RT RIC to the E2 nodes?"
OPTIONS = ["E2", "A1", "O1", "Uu"]


# ---------------------------------------------------------------------------------------- StoreHealth


def test_an_error_makes_the_store_not_serving_at_once_and_a_success_brings_it_back() -> None:
    health = StoreHealth(down_after=3)
    assert health.serving and health.detail == ""
    health.error("Chroma query failed: connection refused")
    assert not health.serving and "connection refused" in health.detail
    health.success()
    assert health.serving and health.detail == ""


def test_timeouts_count_in_a_row_and_a_success_resets_them() -> None:
    health = StoreHealth(down_after=2)
    health.timeout("Chroma did not answer within 500 ms")
    assert health.serving  # one slow query may be a loaded CPU
    health.success()
    health.timeout("Chroma did not answer within 500 ms")
    assert health.serving  # not in a row
    health.timeout("Chroma did not answer within 500 ms")
    assert not health.serving and "2 times in a row" in health.detail
    health.success()
    assert health.serving


def test_a_store_not_connected_is_never_serving() -> None:
    health = StoreHealth(connected=False, detail="cannot reach Chroma at 127.0.0.1:9")
    health.success()  # nothing was connected: a stray outcome does not make it serving
    assert not health.serving and "127.0.0.1:9" in health.detail
    health.connected()
    assert health.serving
    health.disconnected("Chroma went away")
    assert not health.serving and health.detail == "Chroma went away"
    with pytest.raises(ValueError, match="down_after"):
        StoreHealth(down_after=0)


# ------------------------------------------------------------------------------------ a real server


@dataclass
class Running:
    target: str
    http: str
    server: ArgoServer


@contextlib.contextmanager
def running_server(settings: Settings) -> Iterator[Running]:
    """``serve_async`` as ``argo-xapp serve`` runs it (the pipeline built from settings, the HTTP endpoints),
    on a loop of its own in a thread; stopped gracefully on exit."""
    http_port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    listening: list[ArgoServer] = []
    status: list[int] = []

    async def main() -> None:
        status.append(
            await serve_async(
                settings,
                grpc_port=0,
                host="127.0.0.1",
                stop=stop,
                on_listening=listening.append,
                extensions=[http_extension(settings, port=http_port, host="127.0.0.1")],
                handle_signals=False,
            )
        )

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: bool(listening) or bool(status), 30), "the server did not listen"
        assert listening, f"serve_async ended with status {status}"
        yield Running(f"127.0.0.1:{listening[0].port}", f"http://127.0.0.1:{http_port}", listening[0])
        assert not status, f"the server ended on its own with status {status}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()




def health(target: str, service: str = "") -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def store_settings(data_dir: Path, port: int) -> Settings:
    return Settings(
        data_dir=data_dir,
        llm=False,
        strategy="template",
        chroma_mode="http",
        chroma_host="127.0.0.1",
        chroma_port=port,
        store_retry_max_s=1.0,  # the back-off's cap: reconnect within about a second of Chroma coming up
        max_deadline_ms=ROOMY_MS,
    )


def timed_answer(client: SyncArgoClient, deadline_ms: int = 1000) -> tuple[float, Any]:
    t0 = time.monotonic()
    reply = client.answer(QUESTION, OPTIONS, deadline_ms=deadline_ms)
    return (time.monotonic() - t0) * 1000.0, reply


@pytest.mark.slow
def test_starts_without_a_reachable_store_and_takes_it_over_when_it_appears(
    builtin_kb_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    chroma_dir = copy_builtin(builtin_kb_settings, tmp_path / "chroma-data").chroma_dir
    with running_server(store_settings(tmp_path / "xapp", port)) as srv, SyncArgoClient(srv.target) as client:
        # Serving degraded, not crash-looping: the service answers, the store is down, not ready, alive.
        assert wait_until(lambda: health(srv.target) == "SERVING", 60), "never SERVING without a store"
        assert health(srv.target, "argo.v1.store") == "NOT_SERVING"
        assert http_status(srv.http + READY_PATH) == 503 and http_status(srv.http + ALIVE_PATH) == 200
        ms, reply = timed_answer(client)
        assert ms < 1000 + 100 and reply.answer.strip() and not reply.sources
        reason = reply.fallback_reason
        assert "retrieval unavailable" in reason and f"127.0.0.1:{port}" in reason, reason
        retrieved = client.retrieve("E2 interface", deadline_ms=500)
        assert not retrieved.passages and "retrieval unavailable" in retrieved.fallback_reason

        # Chroma comes up on that port: taken over without a restart, the built-in knowledge base in it.
        with chroma_process(chroma_dir, port):
            assert wait_until(lambda: health(srv.target, "argo.v1.store") == "SERVING", 20)
            assert http_status(srv.http + READY_PATH) == 200
            ms, reply = timed_answer(client, ROOMY_MS)
            assert reply.sources and "retrieval unavailable" not in reply.fallback_reason, reply.fallback_reason
            assert any(s.startswith("argo-kb/") for s in reply.sources)


@pytest.mark.slow
def test_a_hung_store_is_not_serving_within_seconds_and_answers_keep_their_deadline(
    builtin_kb_settings: Settings, tmp_path: Path
) -> None:
    chroma_dir = copy_builtin(builtin_kb_settings, tmp_path / "chroma-data").chroma_dir
    with chroma_process(chroma_dir, free_port()) as (port, chroma):
        settings = store_settings(tmp_path / "xapp", port)
        with running_server(settings) as srv, SyncArgoClient(srv.target) as client:
            assert wait_until(lambda: health(srv.target, "argo.v1.store") == "SERVING", 60)
            assert timed_answer(client, ROOMY_MS)[1].sources

            chroma.send_signal(signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
            hung_at = time.monotonic()
            late = []
            for _ in range(3):
                ms, reply = timed_answer(client)
                if ms > 1000 + 100:
                    late.append(ms)
                assert reply.answer.strip() and not reply.sources
            assert not late, f"answers later than their deadline: {late}"
            assert wait_until(lambda: health(srv.target, "argo.v1.store") == "NOT_SERVING", 5)
            assert time.monotonic() - hung_at < 8
            assert http_status(srv.http + READY_PATH) == 503 and http_status(srv.http + ALIVE_PATH) == 200
            assert health(srv.target) == "SERVING"  # the service still answers, through templates
            ms, reply = timed_answer(client)
            assert ms < 1000 + 100 and "retrieval unavailable" in reply.fallback_reason

            chroma.send_signal(signal.SIGCONT)
            assert wait_until(lambda: health(srv.target, "argo.v1.store") == "SERVING", 10)
            assert http_status(srv.http + READY_PATH) == 200
            assert timed_answer(client, ROOMY_MS)[1].sources


def test_readiness_without_the_store_is_a_setting(tmp_path: Path) -> None:
    """ready_requires_store=false: ready whenever the service answers (replicas sharing one Chroma)."""
    from grpc_health.v1._async import HealthServicer

    from xapp.server.health import HealthMonitor

    async def check(requires: bool) -> tuple[bool, bool]:
        monitor = HealthMonitor(HealthServicer(), llm_enabled=False, requires_store=lambda: requires)
        before = monitor.ready()
        await monitor.attach(lambda: {"store": False, "llm": True})
        ready = monitor.ready()
        await monitor.shutting_down()
        assert not monitor.ready()
        return before, ready

    assert asyncio.run(check(True)) == (False, False)
    assert asyncio.run(check(False)) == (False, True)
