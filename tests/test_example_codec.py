"""The TensorFlow-free Example codec agrees with tf.train.Example byte for byte, both ways."""
import numpy as np

from tworec import contract, example_codec


RECORD = {
    "user_id": "ü-ser 1",
    "item_id": "i9",
    "timestamp": 1_700_000_123,
    "rating": 4.5,
    "history_item_ids": ["i3", "i2", "日本"],
    "history_timestamps": [1_700_000_100, 5, -7],
}


def test_encode_matches_tensorflow_deterministic_serialization():
    import tensorflow as tf

    data = example_codec.encode(contract.INTERACTION_FEATURES, RECORD)
    parsed = tf.train.Example.FromString(data)
    assert parsed.SerializeToString(deterministic=True) == data
    spec = contract.tfrecord_spec(contract.INTERACTION_FEATURES)
    features = tf.io.parse_single_example(data, spec)
    assert features["user_id"].numpy().decode() == "ü-ser 1"
    assert features["timestamp"].numpy() == 1_700_000_123
    assert abs(features["rating"].numpy() - 4.5) < 1e-6
    assert [b.decode() for b in features["history_item_ids"].numpy()] == ["i3", "i2", "日本"]
    np.testing.assert_array_equal(features["history_timestamps"].numpy(), [1_700_000_100, 5, -7])


def test_decode_reads_what_tensorflow_writes():
    import tensorflow as tf

    def feature(kind, values):
        return tf.train.Feature(**{kind: getattr(tf.train, kind.title().replace("_", ""))(value=values)})

    example = tf.train.Example(features=tf.train.Features(feature={
        "item_id": feature("bytes_list", [b"B00X"]),
        "item_title": feature("bytes_list", ["Café".encode()]),
        "item_text": feature("bytes_list", [b"text"]),
        "item_categories": feature("bytes_list", []),
    }))
    record = example_codec.decode(contract.ITEM_FEATURES, example.SerializeToString())
    assert record == {"item_id": "B00X", "item_title": "Café", "item_text": "text", "item_categories": []}


def test_empty_lists_round_trip():
    record = dict(RECORD, history_item_ids=[], history_timestamps=[])
    data = example_codec.encode(contract.INTERACTION_FEATURES, record)
    assert example_codec.decode(contract.INTERACTION_FEATURES, data) == record


def test_the_per_user_fast_encoder_writes_the_same_bytes_as_the_generic_one():
    encoder = example_codec.InteractionEncoder(RECORD["user_id"])
    for history in (RECORD["history_item_ids"], []):
        times = RECORD["history_timestamps"][:len(history)]
        record = dict(RECORD, history_item_ids=history, history_timestamps=times)
        fast = encoder.encode(RECORD["item_id"], RECORD["timestamp"], RECORD["rating"],
                              [example_codec.string_piece(i) for i in history],
                              [example_codec.int_piece(t) for t in times])
        assert fast == example_codec.encode(contract.INTERACTION_FEATURES, record)
