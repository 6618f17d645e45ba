"""Transport security and caller authentication for the gateway.

TLS with a server certificate (and, with a client CA, mutual TLS: callers must present a
certificate that CA signed); a bearer-token check on every call except the health service, so
load balancers and orchestrators can probe without a secret. Tokens are compared in constant time.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import grpc

# Health checks stay open: probes carry no credentials. Everything else needs a token when tokens are set.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


@dataclass(frozen=True)
class SecurityConfig:
    tls_cert: str | None = None  # PEM server certificate chain
    tls_key: str | None = None  # PEM private key
    tls_client_ca: str | None = None  # PEM CA bundle: require client certificates it signed (mTLS)
    tokens_file: str | None = None  # accepted bearer tokens, one per line

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_key)

    def server_credentials(self):
        if not self.tls:
            if self.tls_client_ca:
                raise ValueError("a client CA (mutual TLS) needs a server certificate and key too")
            return None
        if not (self.tls_cert and self.tls_key):
            raise ValueError("TLS needs both a certificate (--tls-cert) and a private key (--tls-key)")
        client_ca = Path(self.tls_client_ca).read_bytes() if self.tls_client_ca else None
        return grpc.ssl_server_credentials([(Path(self.tls_key).read_bytes(), Path(self.tls_cert).read_bytes())],
                                           root_certificates=client_ca, require_client_auth=client_ca is not None)

    def tokens(self) -> frozenset:
        if not self.tokens_file:
            return frozenset()
        tokens = frozenset(t.strip() for t in Path(self.tokens_file).read_text().splitlines() if t.strip())
        if not tokens:
            raise ValueError(f"{self.tokens_file} holds no token")
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
