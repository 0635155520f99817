"""Who may talk to the xApp: TLS credentials from mounted PEM files, and bearer tokens for callers.

Plain text is the default (the RIC platform's own defaults are plain). With ``tls_cert_file`` and
``tls_key_file`` both ports speak TLS; ``tls_client_ca_file`` adds mutual TLS on gRPC (a client certificate
is required and verified against that CA). With ``auth_token_file`` every RPC but ``grpc.health.v1`` (kubelet
and RIC probes) needs ``authorization: Bearer <token>`` metadata matching a line of that file.

Every file is read when the server starts: a missing or unreadable one stops it with a message that names
the setting, rather than serving plain text by surprise.
"""

from __future__ import annotations

import hmac
import os
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from xapp.config import Settings
from xapp.errors import ConfigError
from xapp.telemetry.logging import get_logger

log = get_logger(__name__)

# Always reachable without a token: probes cannot send one.
OPEN_SERVICES = (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,)
TOKEN_CHECK_INTERVAL_S = 1.0  # how often the token file's mtime is looked at (a stat, not a read)


def read_file(setting: str, path: str) -> bytes:
    """The bytes of the file a setting names; ConfigError naming the setting when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise ConfigError(f"{setting}: {path} is empty")
    return data


def tls_enabled(settings: Settings) -> bool:
    return bool(settings.tls_cert_file and settings.tls_key_file)


def grpc_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and, with ``tls_client_ca_file``, mutual TLS) credentials for the gRPC port; None: plain text."""
    if not tls_enabled(settings):
        return None
    # The ssl module parses the pair first: grpc would only fail on the first handshake, without a reason.
    http_ssl_context(settings)
    key = read_file("tls_key_file", settings.tls_key_file)
    cert = read_file("tls_cert_file", settings.tls_cert_file)
    ca = read_file("tls_client_ca_file", settings.tls_client_ca_file) if settings.tls_client_ca_file else None
    if ca is not None:
        _check_ca(settings.tls_client_ca_file)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _check_ca(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"tls_client_ca_file: {path} holds no usable PEM certificate: {exc}") from None


def http_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTP port's TLS context (server side, no client certificates: kubelet probes have none)."""
    if not tls_enabled(settings):
        return None
    for setting in ("tls_cert_file", "tls_key_file"):
        read_file(setting, getattr(settings, setting))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"tls_cert_file {settings.tls_cert_file} and tls_key_file {settings.tls_key_file} are not a PEM "
            f"certificate and its private key: {exc}"
        ) from None
    return context


class TokenFile:
    """The accepted bearer tokens: one a line of a mounted secret (blank lines and ``#`` comments skipped),
    re-read when the file's mtime or size changes, so a rotated Kubernetes Secret applies without a restart."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._tokens: tuple[bytes, ...] = ()
        self._load(strict=True)

    def _load(self, *, strict: bool) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._stamp:
                return
            text = read_file("auth_token_file", self.path).decode("utf-8")
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            if strict:
                raise ConfigError(f"auth_token_file: cannot use {self.path}: {exc}") from None
            log.warning("token file unreadable; keeping the tokens read before", path=self.path, error=str(exc))
            return
        tokens = tuple(
            line.strip().encode() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        )
        if not tokens:
            if strict:
                raise ConfigError(f"auth_token_file: {self.path} holds no token (one a line)")
            log.warning("token file holds no token; keeping the tokens read before", path=self.path)
            return
        self._tokens, self._stamp = tokens, stamp
        if not strict:
            log.info("token file re-read", path=self.path, tokens=len(tokens))

    def tokens(self, now: float) -> tuple[bytes, ...]:
        with self._lock:
            if now - self._checked >= TOKEN_CHECK_INTERVAL_S:
                self._checked = now
                self._load(strict=False)
            return self._tokens

    def accepts(self, token: str, now: float) -> bool:
        candidate = token.encode()
        # Compare with every token, in constant time each: neither timing nor position tells which was close.
        matched = False
        for known in self.tokens(now):
            matched |= hmac.compare_digest(candidate, known)
        return matched


MISSING = "missing credentials: send gRPC metadata 'authorization: Bearer <token>' (this xApp requires a token)"
MALFORMED = "the authorization metadata must be 'Bearer <token>'"
WRONG = "the bearer token is not accepted by this xApp"


def check_authorization(tokens: TokenFile, metadata: Any, now: float) -> str | None:
    """None when the call carries an accepted token, else what to tell the caller."""
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        return MISSING
    value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return MALFORMED
    return None if tokens.accepts(token.strip(), now) else WRONG


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only answers UNAUTHENTICATED with ``message``."""

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises; the yield only makes this a stream handler

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(deny, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED, before any work, for a call without an accepted bearer token (health exempt)."""

    def __init__(self, tokens: TokenFile, clock: Callable[[], float]) -> None:
        self.tokens = tokens
        self._clock = clock

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        handler = await continuation(handler_call_details)
        if handler is None or method.lstrip("/").split("/")[0] in OPEN_SERVICES:
            return handler
        problem = check_authorization(self.tokens, handler_call_details.invocation_metadata, self._clock())
        return handler if problem is None else _denied(handler, problem)


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors the security settings ask for (none by default)."""
    if not settings.auth_token_file:
        return []
    import time

    return [BearerTokenInterceptor(TokenFile(settings.auth_token_file), time.monotonic)]


def http_host(host: str) -> str | None:
    """aiohttp's form of the gRPC listen address: None (every interface, IPv4 and IPv6) for ``[::]``,
    brackets dropped from other IPv6 addresses."""
    bare = host.strip()
    if bare in ("[::]", "::", ""):
        return None
    return bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare
