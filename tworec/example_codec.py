"""Encode and decode ``tf.train.Example`` protos without importing TensorFlow.

Beam workers write millions of examples, and importing TensorFlow in every worker costs seconds
and hundreds of MB. The message classes are built here from a descriptor that mirrors TensorFlow's
example.proto/feature.proto field for field (under the package ``tworec.wire`` so it never clashes
with TensorFlow's own); decoding uses them, encoding is hand-rolled because it is the job's hot
path.
tests/test_example_codec.py checks agreement with ``tf.train.Example`` both ways.
"""
from __future__ import annotations

import struct
from typing import Mapping, Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tworec.contract import (
    HISTORY_ITEM_IDS as _HISTORY_ITEM_IDS,
    HISTORY_TIMESTAMPS as _HISTORY_TIMESTAMPS,
    ITEM_ID as _ITEM_ID,
    RATING as _RATING,
    TIMESTAMP as _TIMESTAMP,
    USER_ID as _USER_ID,
    DType,
    Feature,
)

_F = descriptor_pb2.FieldDescriptorProto


def _message_classes():
    proto = descriptor_pb2.FileDescriptorProto(
        name="tworec/wire/example.proto", package="tworec.wire", syntax="proto3")

    def message(name, *fields, oneof=None):
        msg = proto.message_type.add(name=name)
        if oneof:
            msg.oneof_decl.add(name=oneof)
        for number, field_name, kind, type_name, label in fields:
            f = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if oneof:
                f.oneof_index = 0
        return msg

    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    message("BytesList", (1, "value", _F.TYPE_BYTES, None, rep))
    message("FloatList", (1, "value", _F.TYPE_FLOAT, None, rep))
    message("Int64List", (1, "value", _F.TYPE_INT64, None, rep))
    message("Feature",
            (1, "bytes_list", _F.TYPE_MESSAGE, ".tworec.wire.BytesList", opt),
            (2, "float_list", _F.TYPE_MESSAGE, ".tworec.wire.FloatList", opt),
            (3, "int64_list", _F.TYPE_MESSAGE, ".tworec.wire.Int64List", opt),
            oneof="kind")
    features = message("Features",
                       (1, "feature", _F.TYPE_MESSAGE, ".tworec.wire.Features.FeatureEntry", rep))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt,
                    type_name=".tworec.wire.Feature")
    message("Example", (1, "features", _F.TYPE_MESSAGE, ".tworec.wire.Features", opt))

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tworec.wire.Example"))


Example = _message_classes()
_LIST_FIELD = {DType.STRING: "bytes_list", DType.FLOAT32: "float_list", DType.INT64: "int64_list"}

# --- encoding: hand-rolled on the hot path ---------------------------------------------------------
# The same ids and timestamps recur in many examples (every history repeats the user's recent
# items), so their encoded bytes are cached; the caches are cleared when they grow large.

_SMALL_VARINTS = [bytes([i]) for i in range(128)]
_CACHE_LIMIT = 500_000


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    if 0 < value < 16384:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_LENGTHS = [_varint(n) for n in range(16384)]


def _field(number: int, payload: bytes) -> bytes:
    n = len(payload)
    return _SMALL_VARINTS[(number << 3) | 2] + (_LENGTHS[n] if n < 16384 else _varint(n)) + payload


def _cached(cache: dict, values, make) -> bytes:
    parts = list(map(cache.get, values))
    if None in parts:
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        for i, part in enumerate(parts):
            if part is None:
                parts[i] = cache[values[i]] = make(values[i])
    return b"".join(parts)


def _string_field(value) -> bytes:
    return _field(1, value.encode("utf-8") if isinstance(value, str) else bytes(value))


def _feature_of(kind: int, payload: bytes, packed: bool) -> bytes:
    """A ``Feature`` message: ``kind`` 1 BytesList (payload = its entries), 2 FloatList or
    3 Int64List (payload = the packed values)."""
    if packed:
        payload = _field(1, payload) if payload else b""
    return _field(kind, payload)


def _list_feature(dtype: DType, values) -> bytes:
    """The bytes of a ``Feature`` message holding ``values``."""
    if dtype is DType.STRING:
        return _feature_of(1, _cached(_string_fields, values, _string_field), packed=False)
    if dtype is DType.INT64:
        return _feature_of(3, _cached(_varint_bytes, values, _varint), packed=True)
    return _feature_of(2, struct.pack("<%df" % len(values), *values), packed=True)


def _map_entry(name: str, feature: bytes) -> bytes:
    return _field(1, _field(1, name.encode("utf-8")) + _field(2, feature))


def _scalar_entry(f: Feature, value) -> bytes:
    return _map_entry(f.name, _list_feature(f.dtype, (value,)))


_string_fields: dict = {}
_varint_bytes: dict = {}
_scalar_entries: dict = {}
_sorted_features: dict = {}


def encode(features: Sequence[Feature], record: Mapping[str, object]) -> bytes:
    """Serialize ``record`` (feature name → scalar, or list for varlen features), byte-identical
    to ``tf.train.Example.SerializeToString(deterministic=True)`` (map entries sorted by name)."""
    ordered = _sorted_features.get(features)
    if ordered is None:
        ordered = _sorted_features[features] = tuple(sorted(features, key=lambda f: f.name))
    entries = []
    for f in ordered:
        value = record[f.name]
        if f.varlen:
            entries.append(_map_entry(f.name, _list_feature(f.dtype, value)))
        else:
            entries.append(_scalar_entry_cached(f, value))
    return _field(1, b"".join(entries))


def _scalar_entry_cached(f: Feature, value) -> bytes:
    entry = _scalar_entries.get((f.name, value))
    if entry is None:
        if len(_scalar_entries) > _CACHE_LIMIT:
            _scalar_entries.clear()
        entry = _scalar_entries[(f.name, value)] = _scalar_entry(f, value)
    return entry


class InteractionEncoder:
    """Encodes all examples of one user (tworec.contract.INTERACTION_FEATURES) quickly.

    Histories are passed as already-encoded pieces (``string_piece``/``int_piece`` per history
    entry, most recent first), so a user's sequence encodes each id and timestamp once and every
    example's history is a join of slices."""

    def __init__(self, user_id: str):
        self._user_entry = _scalar_entry(_USER_ID, user_id)

    def encode(self, item_id: str, timestamp: int, rating: float, history_id_pieces,
               history_time_pieces) -> bytes:
        ids = _feature_of(1, b"".join(history_id_pieces), packed=False)
        times = _feature_of(3, b"".join(history_time_pieces), packed=True)
        body = b"".join((  # map entries in name order, as deterministic serialization writes them
            _map_entry(_HISTORY_ITEM_IDS.name, ids),
            _map_entry(_HISTORY_TIMESTAMPS.name, times),
            _scalar_entry_cached(_ITEM_ID, item_id),
            _scalar_entry_cached(_RATING, rating),
            _scalar_entry_cached(_TIMESTAMP, timestamp),
            self._user_entry,
        ))
        return _field(1, body)


def string_piece(value: str) -> bytes:
    """One entry of a BytesList, for InteractionEncoder histories."""
    return _string_field(value)


def int_piece(value: int) -> bytes:
    """One entry of a packed Int64List, for InteractionEncoder histories."""
    return _varint(value)


def decode(features: Sequence[Feature], data: bytes) -> dict:
    """Parse a serialized tf.train.Example into a record typed by ``features``."""
    example = Example.FromString(data)
    fmap = example.features.feature
    record = {}
    for f in features:
        values = list(getattr(fmap[f.name], _LIST_FIELD[f.dtype]).value) if f.name in fmap else []
        if f.dtype is DType.STRING:
            values = [v.decode("utf-8") for v in values]
        record[f.name] = values if f.varlen else values[0]
    return record
