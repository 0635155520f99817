"""Keeping strangers out (issue 15, defect 5): TLS and mutual TLS from certificates made here, bearer tokens,
both ports on the ``--host`` address, reflection switchable, refusal of half or unreadable TLS settings.

Real servers on free ports answer on the template path (no engine); certificates come from ``cryptography``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from xapp.client import ArgoClient, SyncArgoClient
from xapp.config import Settings
from xapp.errors import ConfigError
from xapp.server.app import ArgoServer
from xapp.server.http import ALIVE_PATH, http_extension
from xapp.server.security import MALFORMED, MISSING, WRONG, TokenFile, check_authorization, http_host

QUESTION = "What does the E2 interface connect in O-RAN?"
TOKEN = "t0ken-for-the-caller-xapp"


# -- certificates made at test time ------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path  # signs the server's and the good client's certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # another CA: a client that trusts only it must not trust the server
    rogue_cert: Path  # a client certificate from the rogue CA
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, *, ca: bool, sans: Sequence[x509.GeneralName] = ()
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer else (name, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: Any = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key, server_key, client_key, rogue_client_key = (_key() for _ in range(5))
    ca = _cert("argo test CA", ca_key, None, ca=True)
    rogue = _cert("rogue CA", rogue_key, None, ca=True)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _cert("argo-xapp", server_key, (ca.subject, ca_key), ca=False, sans=sans)
    client = _cert("caller-xapp", client_key, (ca.subject, ca_key), ca=False)
    rogue_client = _cert("stranger", rogue_client_key, (rogue.subject, rogue_key), ca=False)
    return Pki(
        ca=_write(d / "ca.pem", ca),
        server_cert=_write(d / "server.pem", server),
        server_key=_write(d / "server.key", key=server_key),
        client_cert=_write(d / "client.pem", client),
        client_key=_write(d / "client.key", key=client_key),
        rogue_ca=_write(d / "rogue-ca.pem", rogue),
        rogue_cert=_write(d / "rogue.pem", rogue_client),
        rogue_key=_write(d / "rogue.key", key=rogue_client_key),
    )


# -- unit checks: settings and tokens ---------------------------------------------------------------------


def test_half_tls_settings_are_refused_with_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert_file is set but tls_key_file is not"):
        Settings(tls_cert_file="/etc/tls/tls.crt").validate()
    with pytest.raises(ConfigError, match="tls_key_file is set but tls_cert_file is not"):
        Settings(tls_key_file="/etc/tls/tls.key").validate()
    with pytest.raises(ConfigError, match="tls_client_ca_file .*needs tls_cert_file"):
        Settings(tls_client_ca_file="/etc/tls/ca.crt").validate()
    with pytest.raises(ConfigError, match="host must not be empty"):
        Settings(host=" ").validate()


def test_tokens_are_checked_and_a_rotated_file_applies(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# callers\n{TOKEN}\n\n  second-token  \n")
    tokens = TokenFile(str(path))
    assert check_authorization(tokens, [("authorization", f"Bearer {TOKEN}")], 0.0) is None
    assert check_authorization(tokens, [("authorization", "bearer second-token")], 0.0) is None
    assert check_authorization(tokens, [], 0.0) == MISSING
    assert check_authorization(tokens, [("authorization", TOKEN)], 0.0) == MALFORMED
    assert check_authorization(tokens, [("authorization", "Basic dXNlcjpwdw==")], 0.0) == MALFORMED
    assert check_authorization(tokens, [("authorization", "Bearer # callers")], 0.0) == WRONG  # comments aren't tokens
    assert check_authorization(tokens, [("authorization", f"Bearer {TOKEN}x")], 0.0) == WRONG
    # A Kubernetes Secret rotated in place: the new file applies at the next check, the old token stops.
    path.write_text("rotated-token-with-another-length\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert check_authorization(tokens, [("authorization", "Bearer rotated-token-with-another-length")], 10.0) is None
    assert check_authorization(tokens, [("authorization", f"Bearer {TOKEN}")], 10.0) == WRONG
    # An emptied file keeps the tokens read before (a half-written secret must not lock everyone out or in).
    path.write_text("")
    assert check_authorization(tokens, [("authorization", "Bearer rotated-token-with-another-length")], 20.0) is None
    with pytest.raises(ConfigError, match="holds no token|is empty"):
        TokenFile(str(path))
    with pytest.raises(ConfigError, match="auth_token_file: cannot use"):
        TokenFile(str(tmp_path / "missing"))


def test_http_host_follows_the_grpc_host() -> None:
    assert http_host("[::]") is None  # every interface, IPv4 and IPv6
    assert http_host("127.0.0.1") == "127.0.0.1"
    assert http_host("[::1]") == "::1"


def test_unreadable_or_bad_tls_files_stop_the_start(pki: Pki, tmp_path: Path, run: Callable[..., Any]) -> None:
    base = Settings(data_dir=tmp_path, llm=False)
    missing = base.replace(tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file=str(pki.server_key))
    with pytest.raises(ConfigError, match=r"tls_cert_file: cannot read .*nope\.pem"):
        run(ArgoServer(missing).start(0, "127.0.0.1"))
    swapped = base.replace(tls_cert_file=str(pki.server_key), tls_key_file=str(pki.server_cert))
    with pytest.raises(ConfigError, match="are not a PEM certificate and its private key"):
        run(ArgoServer(swapped).start(0, "127.0.0.1"))
    no_ca = base.replace(
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), tls_client_ca_file=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="tls_client_ca_file: cannot read"):
        run(ArgoServer(no_ca).start(0, "127.0.0.1"))
    with pytest.raises(ConfigError, match="auth_token_file: cannot use"):
        run(ArgoServer(base.replace(auth_token_file=str(tmp_path / "no-tokens"))).start(0, "127.0.0.1"))


# -- real servers ------------------------------------------------------------------------------------------


@dataclass
class Served:
    server: ArgoServer
    http_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
def start_server(
    builtin_kb_settings: Settings, builtin_kb: Any, run: Callable[..., Any]
) -> Iterator[Callable[..., Served]]:
    """Start an ArgoServer (and its HTTP endpoints) with these security settings, serving templates."""
    from xapp.pipeline.runner import ArgoPipeline

    stops: list[Callable[[], Any]] = []

    def start(**changes: Any) -> Served:
        settings = builtin_kb_settings.replace(max_deadline_ms=5000, **changes).validate()

        async def go() -> Served:
            server = ArgoServer(settings)
            await server.start(0, "127.0.0.1")
            http = http_extension(settings, port=0, host="127.0.0.1")(server)
            await http.start()
            await server.attach(ArgoPipeline(settings, builtin_kb, llm=None))

            async def stop() -> None:
                await http.stop()
                await server.stop(0)

            stops.append(stop)
            return Served(server, http.port)

        return run(go())  # type: ignore[no-any-return]

    yield start
    for stop in stops:
        run(stop())


@pytest.fixture(scope="module")
def tls_token_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory, start_server: Any) -> Served:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(TOKEN + "\n")
    return start_server(  # type: ignore[no-any-return]
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), auth_token_file=str(tokens)
    )


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, start_server: Any) -> Served:
    return start_server(  # type: ignore[no-any-return]
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
        tls_client_ca_file=str(pki.ca),
        reflection=False,
    )


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


@pytest.mark.slow
def test_tls_with_the_right_token_answers_and_strangers_are_refused(tls_token_server: Served, pki: Pki) -> None:
    target = tls_token_server.target
    with SyncArgoClient(target, ca_file=pki.ca, token=TOKEN, default_timeout_s=10) as client:
        reply = client.answer(QUESTION, strategy="template", deadline_ms=3000)
        assert reply.answer and reply.sources
        events = list(client.answer_stream(QUESTION, strategy="template", deadline_ms=3000))
        assert events[-1].answer.answer
    # A client that does not trust the CA never gets as far as the RPC (system roots only).
    with SyncArgoClient(target, tls=True, token=TOKEN) as stranger:
        code, _ = _code(lambda: stranger.answer(QUESTION, strategy="template", timeout=3))
        assert code == grpc.StatusCode.UNAVAILABLE
    with SyncArgoClient(target, ca_file=pki.rogue_ca, token=TOKEN) as stranger:
        code, _ = _code(lambda: stranger.answer(QUESTION, strategy="template", timeout=3))
        assert code == grpc.StatusCode.UNAVAILABLE
    # Plain text to a TLS port fails too.
    with SyncArgoClient(target, token=TOKEN) as plain:
        assert _code(lambda: plain.answer(QUESTION, strategy="template", timeout=3))[0] == grpc.StatusCode.UNAVAILABLE

    # Tokens: missing or wrong → UNAUTHENTICATED with what to send, for unary and streaming RPCs alike.
    with SyncArgoClient(target, ca_file=pki.ca) as anonymous:
        code, details = _code(lambda: anonymous.answer(QUESTION, strategy="template", timeout=3))
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, MISSING)
        code, details = _code(lambda: list(anonymous.answer_stream(QUESTION, strategy="template", timeout=3)))
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, MISSING)
        code, _ = _code(lambda: anonymous.retrieve("E2", timeout=3))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Health stays open: kubelet and RIC probes send no token.
        assert anonymous.health() == "SERVING"
        reflection = reflection_pb2_grpc.ServerReflectionStub(anonymous.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        code, _ = _code(lambda: list(reflection.ServerReflectionInfo(iter([request]), timeout=3)))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # with tokens on, reflection needs one too
    with SyncArgoClient(target, ca_file=pki.ca, token="not-the-token") as wrong:
        code, details = _code(lambda: wrong.answer(QUESTION, strategy="template", timeout=3))
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, WRONG)


@pytest.mark.slow
def test_async_client_speaks_tls_with_a_token_file(tls_token_server: Served, pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"# the caller's token\n{TOKEN}\n")

    async def go() -> tuple[str, str]:
        async with ArgoClient(tls_token_server.target, ca_file=pki.ca, token_file=token_file) as client:
            await client.wait_serving(timeout=5)
            reply = await client.answer(QUESTION, strategy="template", deadline_ms=3000, timeout=10)
            return reply.answer, await client.health()

    answer, health = asyncio.run(go())
    assert answer and health == "SERVING"


@pytest.mark.slow
def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_server: Served, pki: Pki) -> None:
    target = mtls_server.target
    with SyncArgoClient(target, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key) as client:
        assert client.answer(QUESTION, strategy="template", deadline_ms=3000, timeout=10).answer
        # reflection=False: the reflection service is not there at all.
        reflection = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        code, _ = _code(lambda: list(reflection.ServerReflectionInfo(iter([request]), timeout=3)))
        assert code == grpc.StatusCode.UNIMPLEMENTED
    with SyncArgoClient(target, ca_file=pki.ca) as no_cert:
        assert _code(lambda: no_cert.answer(QUESTION, strategy="template", timeout=3))[0] == grpc.StatusCode.UNAVAILABLE
        assert _code(lambda: no_cert.health(timeout=3))[0] == grpc.StatusCode.UNAVAILABLE
    with SyncArgoClient(target, ca_file=pki.ca, cert_file=pki.rogue_cert, key_file=pki.rogue_key) as rogue:
        assert _code(lambda: rogue.answer(QUESTION, strategy="template", timeout=3))[0] == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_http_port_speaks_tls_with_the_same_certificate(tls_token_server: Served, pki: Pki) -> None:
    url = f"https://127.0.0.1:{tls_token_server.http_port}{ALIVE_PATH}"
    context = ssl.create_default_context(cafile=str(pki.ca))
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert response.status == 200 and b"alive" in response.read()
    with pytest.raises(urllib.error.URLError):  # an untrusted certificate
        urllib.request.urlopen(url, context=ssl.create_default_context(cafile=str(pki.rogue_ca)), timeout=5)
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP to the TLS port
        urllib.request.urlopen(url.replace("https://", "http://"), timeout=5)


# -- --host binds both ports -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listeners(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port or len(address) != width:
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(str(ipaddress.IPv4Address(raw[::-1])))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                v6 = ipaddress.IPv6Address(words)
                found.add(str(v6.ipv4_mapped or v6))  # gRPC binds 127.0.0.1 as ::ffff:127.0.0.1
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc/net")
def test_serve_host_binds_both_ports_to_loopback(tmp_path: Path) -> None:
    grpc_port, http_port = _free_port(), _free_port()
    env = {**os.environ, "ARGO_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"}
    command = [sys.executable, "-m", "xapp", "serve", "--no-llm", "--host", "127.0.0.1",
               "--grpc-port", str(grpc_port), "--http-port", str(http_port)]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Both ports listen before the pipeline loads: no need to wait for the knowledge base.
        end = time.monotonic() + 60
        while not (_listeners(grpc_port) and _listeners(http_port)):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.1)
        assert _listeners(grpc_port) == {"127.0.0.1"}
        assert _listeners(http_port) == {"127.0.0.1"}, "the HTTP port must follow --host"
    finally:
        proc.kill()  # only the sockets were under test; a SIGTERM would wait for the first ingestion
        proc.wait(30)
