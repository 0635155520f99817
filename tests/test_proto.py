"""The generated code in xapp/_proto matches proto/ (regenerated into a tmp dir by the one command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from xapp.server import codegen


def test_generated_code_is_up_to_date() -> None:
    stale = codegen.stale_files()
    assert stale == [], f"xapp/_proto is stale; run `python -m xapp.server.codegen`: {stale}"


def test_staleness_check_detects_a_changed_proto(tmp_path: Path) -> None:
    # The check must be able to fail: a proto with one more field no longer matches the committed code.
    proto = tmp_path / "proto"
    (proto / "argo" / "v1").mkdir(parents=True)
    text = (codegen.PROTO_DIR / "argo" / "v1" / "argo.proto").read_text()
    changed = text.replace("string model = 13;", "string model = 13;\n  string extra = 99;")
    assert changed != text
    (proto / "argo" / "v1" / "argo.proto").write_text(changed)
    assert "argo/v1/argo_pb2.py" in codegen.stale_files(codegen.OUT_DIR, proto)


def test_generated_package_imports_cleanly_in_a_fresh_interpreter() -> None:
    code = (
        "from xapp._proto.argo.v1 import argo_pb2, argo_pb2_grpc;"
        "print(argo_pb2.DESCRIPTOR.services_by_name['ArgoService'].full_name, argo_pb2_grpc.ArgoServiceStub)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("argo.v1.ArgoService ")


def test_check_command_exit_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xapp.server.codegen", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
