"""Transport security and caller authentication for the gateway.

TLS with a server certificate (and, with a client CA, mutual TLS: callers must present a
certificate that CA signed); a bearer-token check on every call except the health service, so
load balancers and orchestrators can probe without a secret. Tokens are compared in constant time.
"""
from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from tworec.serving.config import SecurityConfig

# Health checks stay open: probes carry no credentials. Everything else needs a token when tokens are set.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def server_credentials(config: SecurityConfig):
    """gRPC server credentials for ``config`` (None: plaintext); ValueError when it is incomplete."""
    if not config.tls:
        if config.tls_client_ca:
            raise ValueError("a client CA (mutual TLS) needs a server certificate and key too")
        return None
    if not (config.tls_cert and config.tls_key):
        raise ValueError("TLS needs both a certificate (--tls-cert) and a private key (--tls-key)")
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


def accepted_tokens(config: SecurityConfig) -> frozenset:
    """The bearer tokens of ``config.tokens_file`` (empty: no token check)."""
    if not config.tokens_file:
        return frozenset()
    tokens = frozenset(t.strip() for t in Path(config.tokens_file).read_text().splitlines() if t.strip())
    if not tokens:
        raise ValueError(f"{config.tokens_file} holds no token")
    return tokens


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens):
        self._tokens = [t.encode() for t in tokens]

    def _valid(self, metadata) -> bool:
        value = dict(metadata or ()).get("authorization", "")
        if not value.startswith("Bearer "):
            return False
        offered = value[len("Bearer "):].encode()
        return any(hmac.compare_digest(offered, t) for t in self._tokens)

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or details.method in OPEN_METHODS or self._valid(details.invocation_metadata):
            return handler

        def deny(_request_or_iterator, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token "
                                                           "(metadata 'authorization: Bearer <token>')")

        kind = ("stream" if handler.request_streaming else "unary") + "_" + \
               ("stream" if handler.response_streaming else "unary")
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(deny, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
