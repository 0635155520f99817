"""Waiting on real servers in tests: a condition to come true, a server process to report SERVING."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from xapp.client import SyncArgoClient


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_serving(client: SyncArgoClient, proc: subprocess.Popen[str], log: Path, timeout: float = 600) -> None:
    """Until the server process reports SERVING; the test fails with the end of its log if it exits first or
    does not get there within ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if client.health() == "SERVING":
                return
        except grpc.RpcError:
            pass  # not listening yet
        time.sleep(0.25)
    pytest.fail(f"server not SERVING after {timeout} s:\n{log.read_text()[-4000:]}")
