"""Registers the Recommender servicer with two guards the generated ``add_..._to_server`` lacks:

- request bytes that are not a valid message become INVALID_ARGUMENT (grpcio's default for a
  failed deserialisation is INTERNAL);
- an unexpected exception becomes INTERNAL with a generic message (the traceback goes to the log,
  never to the caller).
"""
from __future__ import annotations

import logging

import grpc

log = logging.getLogger("tworec.gateway")


class MalformedRequest:
    def __init__(self, message_type: str, size: int, reason: str):
        self.message_type, self.size, self.reason = message_type, size, reason


def _lenient(message_class):
    def deserialize(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception as err:  # noqa: BLE001 - any decoding failure is the caller's malformed input
            return MalformedRequest(message_class.DESCRIPTOR.full_name, len(data), type(err).__name__)
    return deserialize


def _guarded(method):
    def handle(request, context):
        if isinstance(request, MalformedRequest):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the request ({request.size} bytes) is not a valid {request.message_type}")
        try:
            return method(request, context)
        except Exception:
            if context.code() is not None:  # context.abort(...) was called: its status stands
                raise
            log.exception("unexpected error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged")
    handle.__name__ = method.__name__
    return handle


def add_recommender(servicer, server, pb, service_name: str):
    service = pb.DESCRIPTOR.services_by_name[service_name.rsplit(".", 1)[-1]]
    handlers = {}
    for method in service.methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(getattr(servicer, method.name)), request_deserializer=_lenient(request),
            response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
