"""The data contract shared by beam/, towers/, ranking/, export/ and serving/.

Defined once here: feature names, dtypes, shapes, the TFRecord feature specs of the three record
kinds (interaction examples, item catalog, user catalog), split names, rejection reasons, and the
id rules that both the data pipeline and the gateway enforce. Nothing here imports TensorFlow;
``tfrecord_spec`` builds the ``tf.io`` parsing spec on demand.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class DType(enum.Enum):
    STRING = "string"
    INT64 = "int64"
    FLOAT32 = "float32"


@dataclass(frozen=True)
class Feature:
    """One feature of a record: a scalar (``varlen=False``) or a variable-length list."""

    name: str
    dtype: DType
    varlen: bool = False
    doc: str = ""


# --- Interaction examples (one per user-item interaction, in every split) -------------------------
USER_ID = Feature("user_id", DType.STRING, doc="user id, as in the source data")
ITEM_ID = Feature("item_id", DType.STRING, doc="item id of the interaction (the retrieval target)")
TIMESTAMP = Feature("timestamp", DType.INT64, doc="unix seconds, UTC")
RATING = Feature("rating", DType.FLOAT32, doc="explicit rating; 0.0 when the source has none")
HISTORY_ITEM_IDS = Feature(
    "history_item_ids", DType.STRING, varlen=True,
    doc="up to HISTORY_LENGTH items the user had strictly before `timestamp`, most recent first",
)
HISTORY_TIMESTAMPS = Feature(
    "history_timestamps", DType.INT64, varlen=True, doc="timestamps aligned with history_item_ids"
)
INTERACTION_FEATURES = (USER_ID, ITEM_ID, TIMESTAMP, RATING, HISTORY_ITEM_IDS, HISTORY_TIMESTAMPS)

# --- Item catalog records (every valid item, cold ones included) -----------------------------------
ITEM_TITLE = Feature("item_title", DType.STRING, doc="short display title")
ITEM_TEXT = Feature("item_text", DType.STRING, doc="the text the item tower reads (tworec.text)")
ITEM_CATEGORIES = Feature("item_categories", DType.STRING, varlen=True, doc="category names")
ITEM_FEATURES = (ITEM_ID, ITEM_TITLE, ITEM_TEXT, ITEM_CATEGORIES)

# --- User catalog records (datasets with user side data) ------------------------------------------
USER_ATTRIBUTES = Feature(
    "user_attributes", DType.STRING, varlen=True, doc='"key:value" strings, e.g. "gender:F"'
)
USER_FEATURES = (USER_ID, USER_ATTRIBUTES)

HISTORY_LENGTH = 50


class Split(str, enum.Enum):
    """Named TFRecord sets a data run writes. Every valid interaction lands in exactly one temporal
    split (train, valid, test, cold_train_period) and in exactly one TFRS-protocol split."""

    TRAIN = "train"
    VALID = "valid"
    TEST = "test"
    # Interactions with held-out cold items that fall in the train period: kept out of train so the
    # cold items stay unseen, written here so nothing is dropped.
    COLD_TRAIN_PERIOD = "cold_train_period"
    TFRS_TRAIN = "tfrs_train"
    TFRS_TEST = "tfrs_test"


TEMPORAL_SPLITS = (Split.TRAIN, Split.VALID, Split.TEST, Split.COLD_TRAIN_PERIOD)
TFRS_SPLITS = (Split.TFRS_TRAIN, Split.TFRS_TEST)


@dataclass(frozen=True)
class Protocol:
    """Which splits a model trains on, stops early on (None: fixed epochs) and is tested on."""

    train: Split
    valid: Split | None
    test: Split


PROTOCOLS = {
    "temporal": Protocol(Split.TRAIN, Split.VALID, Split.TEST),
    "tfrs": Protocol(Split.TFRS_TRAIN, None, Split.TFRS_TEST),  # the TFRS tutorials' random 80/20
}


class Reject(str, enum.Enum):
    """Why a row went to the dead-letter output."""

    EMPTY_LINE = "empty_line"
    BAD_ENCODING = "bad_encoding"
    WRONG_COLUMN_COUNT = "wrong_column_count"
    MALFORMED_RECORD = "malformed_record"
    BAD_USER_ID = "bad_user_id"
    BAD_ITEM_ID = "bad_item_id"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_RATING = "bad_rating"
    RATING_OUT_OF_RANGE = "rating_out_of_range"
    UNKNOWN_ITEM = "unknown_item"
    DUPLICATE = "duplicate"
    DUPLICATE_ITEM = "duplicate_item"
    DUPLICATE_USER = "duplicate_user"
    MISSING_TEXT = "missing_text"


# Ids: 1-128 printable characters, no whitespace, no field separators or quotes. The same rule
# guards the data pipeline and the gateway's requests.
MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"[^\s,;|\t\"'\\\x00-\x1f\x7f]{1,%d}" % MAX_ID_LENGTH)


def is_valid_id(value: str) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None and value.isprintable()


# Timestamps: unix seconds between 1970-01-01 and 2100-01-01.
MIN_TIMESTAMP = 0
MAX_TIMESTAMP = 4_102_444_800


def tfrecord_spec(features):
    """The ``tf.io.parse_example`` spec for a tuple of Features."""
    import tensorflow as tf

    tf_dtype = {DType.STRING: tf.string, DType.INT64: tf.int64, DType.FLOAT32: tf.float32}
    spec = {}
    for f in features:
        if f.varlen:
            spec[f.name] = tf.io.RaggedFeature(tf_dtype[f.dtype], row_splits_dtype=tf.int64)
        else:
            spec[f.name] = tf.io.FixedLenFeature([], tf_dtype[f.dtype])
    return spec
