"""The data contract shared by beam/, towers/, ranking/, export/ and serving/.

Defined once here: feature names, dtypes, shapes, the TFRecord feature specs of the three record
kinds (interaction examples, item catalog, user catalog), split names, rejection reasons, and the
id rules that both the data pipeline and the gateway enforce. Nothing here imports TensorFlow;
``tfrecord_spec`` builds the ``tf.io`` parsing spec on demand.
"""
from __future__ import annotations

import enum
import functools
import math
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
    DUPLICATE_EVENT = "duplicate_event"  # the same event id logged twice (re-sent to two replicas)
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


# --- Serving tensors: what the gateway sends to the models it calls --------------------------------
@dataclass(frozen=True)
class Tensor:
    """A named serving tensor. ``shape`` is per row and excludes the leading batch dimension;
    ``EMBEDDING`` is a size fixed by the trained model, ``TOKENS`` one chosen by the request."""

    name: str
    dtype: str  # numpy name: float32, int32
    shape: tuple = ()
    doc: str = ""

    def dims(self, embedding_dim: int, variable=-1) -> tuple:
        """Concrete per-row dims; ``variable`` stands for request-sized ones (-1 in Triton, None in TF)."""
        return tuple(embedding_dim if d == EMBEDDING else variable if d == TOKENS else d for d in self.shape)


EMBEDDING = -1  # the retrieval model's embedding_dim
TOKENS = -2  # tokens of the item text: any length up to the model's max_text_length
MAX_USER_ATTRIBUTES = 8
MAX_ITEM_CATEGORIES = 8

# The ranker scores rows; one row = (the request's user context, one candidate). A request for one
# user and C candidates sends C rows with the user context repeated, so rows are independent and
# Triton's dynamic batcher can merge concurrent requests into one batch.
RANKER_USER_INPUTS = (
    Tensor("user_row", "int32", (), "row of the user in the model's user vocabulary; 0 = unknown"),
    Tensor("user_attribute_rows", "int32", (MAX_USER_ATTRIBUTES,),
           "rows of the user's attributes in the attribute vocabulary; 0 = padding/unknown"),
    Tensor("query_embedding", "float32", (EMBEDDING,), "the query tower's output for this request"),
    Tensor("history_count", "float32", (), "number of recent items the request carried"),
    Tensor("hours_since_last", "float32", (), "hours from the most recent history item to now; 0 if none"),
)
RANKER_CANDIDATE_INPUTS = (
    Tensor("item_row", "int32", (), "row of the item in the id vocabulary; 0 = cold/new/unknown"),
    Tensor("item_category_rows", "int32", (MAX_ITEM_CATEGORIES,), "category rows; 0 = padding"),
    Tensor("item_embedding", "float32", (EMBEDDING,), "the item tower's embedding (content for cold items)"),
    Tensor("retrieval_score", "float32", (), "query · item score from retrieval"),
    Tensor("item_log_popularity", "float32", (), "log(1 + train interactions); 0 for new items"),
    Tensor("item_live_count", "float32", (), "the item's share of all items' decayed interaction counts since "
                                            "training, at the request's time, as live/decay.py share_feature "
                                            "reads it; 0 without live state"),
)
RANKER_INPUTS = RANKER_USER_INPUTS + RANKER_CANDIDATE_INPUTS
RANKER_OUTPUT = Tensor("score", "float32", (), "ranking score: higher is better")
MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class PackedColumns:
    """Where one RANKER_INPUTS tensor sits in its dtype's packed matrix."""

    name: str
    start: int
    width: int
    shape: tuple  # per row, concrete


@dataclass(frozen=True)
class PackedInput:
    """One packed matrix [rows, width]: the RANKER_INPUTS of one dtype, side by side in order."""

    name: str
    dtype: str
    width: int
    columns: tuple  # PackedColumns

    @property
    def tensor(self) -> Tensor:
        return Tensor(self.name, self.dtype, (self.width,))


@functools.lru_cache(maxsize=None)  # called per request by the gateway; the layout is fixed per dim
def ranker_packed_inputs(embedding_dim: int) -> tuple:
    """How the ranker's inputs travel to Triton: one matrix per dtype (``ranker_int32``,
    ``ranker_float32``) instead of ten tensors: each tensor costs the Triton Python backend and
    its client a round of bookkeeping on every request (benchmarks/bench_ranker.py compares
    both). The ranker's SavedModel serves this packed
    signature as ``serving_default``; the named one (``rows``) stays for other callers."""
    packed = []
    for dtype in ("int32", "float32"):
        columns, start = [], 0
        for t in RANKER_INPUTS:
            if t.dtype != dtype:
                continue
            shape = t.dims(embedding_dim)
            width = math.prod(shape)
            columns.append(PackedColumns(t.name, start, width, shape))
            start += width
        packed.append(PackedInput(f"ranker_{dtype}", dtype, start, tuple(columns)))
    return tuple(packed)


# The item tower as a served model: tokenised text (tokenizer.json of the text encoder) and
# category rows → an embedding, for items the model never saw.
ITEM_TOWER_INPUTS = (
    Tensor("input_ids", "int32", (TOKENS,), "WordPiece ids from the encoder's tokenizer.json"),
    Tensor("attention_mask", "int32", (TOKENS,), "1 for tokens, 0 for padding"),
    Tensor("item_category_rows", "int32", (MAX_ITEM_CATEGORIES,), "category rows; 0 = padding"),
)
ITEM_TOWER_OUTPUT = Tensor("item_embedding", "float32", (EMBEDDING,))

# --- Batch-exported embeddings (tworec export-embeddings) ------------------------------------------
EMBEDDING_ID = Feature("id", DType.STRING, doc="item id or user id")
EMBEDDING_KIND = Feature("kind", DType.STRING, doc='"item" or "user"')
EMBEDDING_VALUES = Feature("embedding", DType.FLOAT32, varlen=True, doc="the tower's unit vector")
EMBEDDING_TIMESTAMP = Feature("as_of", DType.INT64, doc="users: time of the state embedded; items: 0")
EMBEDDING_SCORE_SHIFT = Feature(
    "score_shift", DType.FLOAT32,
    doc="items: added to query · embedding in retrieval (the new-item offset for items without an id "
        "embedding, else 0); users: 0")
EMBEDDING_FEATURES = (EMBEDDING_ID, EMBEDDING_KIND, EMBEDDING_VALUES, EMBEDDING_TIMESTAMP, EMBEDDING_SCORE_SHIFT)

# --- Events: what users did after training (RecordEvents → the event log → the next data job) ----
class EventType(str, enum.Enum):
    """What a user did with an item. Impressions say what was shown; the others are interactions:
    they enter the user's history, trending and the next training."""

    IMPRESSION = "impression"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"


INTERACTION_TYPES = frozenset({EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.RATING})
MAX_EVENTS_PER_CALL = 1000
MAX_POSITION = 1000  # a served list's slot, 0-based


@dataclass(frozen=True)
class Event:
    """One event as the API takes it, the log stores it and the data job reads it."""

    event_id: str  # client-chosen: a re-sent event with the same id is applied once
    user_id: str
    item_id: str
    type: EventType
    timestamp: int  # unix seconds
    request_id: str = ""  # the Recommend answer the item came from, when it came from one
    position: int = -1  # its 0-based slot in that answer; -1: none
    value: float | None = None  # a rating's value, a purchase's amount
    propensity: float | None = None  # the probability the serving policy put the item in that slot

    def to_json(self) -> dict:
        out = {"event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
               "type": self.type.value, "timestamp": self.timestamp}
        if self.request_id:
            out["request_id"] = self.request_id
        if self.position >= 0:
            out["position"] = self.position
        if self.value is not None:
            out["value"] = self.value
        if self.propensity is not None:
            out["propensity"] = self.propensity
        return out

    @classmethod
    def from_json(cls, values: dict) -> "Event":
        return cls(values["event_id"], values["user_id"], values["item_id"], EventType(values["type"]),
                   int(values["timestamp"]), values.get("request_id", ""), int(values.get("position", -1)),
                   values.get("value"), values.get("propensity"))


class EventReject(str, enum.Enum):
    """Why RecordEvents (or the events source) refused an event."""

    BAD_EVENT_ID = "bad_event_id"
    BAD_USER_ID = "bad_user_id"
    BAD_ITEM_ID = "bad_item_id"
    UNKNOWN_TYPE = "unknown_type"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_REQUEST_ID = "bad_request_id"
    BAD_POSITION = "bad_position"
    BAD_VALUE = "bad_value"
    BAD_PROPENSITY = "bad_propensity"
    REPEATED_IN_CALL = "repeated_in_call"


def event_problem(event: Event, now: int, max_future_s: int) -> EventReject | None:
    """Why ``event`` is not acceptable at server time ``now``, or None. A timestamp more than
    ``max_future_s`` ahead of ``now`` is refused (clock skew is allowed, garbage is not)."""
    if not is_valid_id(event.event_id):
        return EventReject.BAD_EVENT_ID
    if not is_valid_id(event.user_id):
        return EventReject.BAD_USER_ID
    if not is_valid_id(event.item_id):
        return EventReject.BAD_ITEM_ID
    if not isinstance(event.type, EventType):
        return EventReject.UNKNOWN_TYPE
    if not MIN_TIMESTAMP < event.timestamp < MAX_TIMESTAMP:
        return EventReject.BAD_TIMESTAMP
    if event.timestamp > now + max_future_s:
        return EventReject.FUTURE_TIMESTAMP
    if event.request_id and not is_valid_id(event.request_id):
        return EventReject.BAD_REQUEST_ID
    if not -1 <= event.position < MAX_POSITION:
        return EventReject.BAD_POSITION
    if event.value is not None and not math.isfinite(event.value):
        return EventReject.BAD_VALUE
    if event.propensity is not None and not (math.isfinite(event.propensity) and 0 < event.propensity <= 1):
        return EventReject.BAD_PROPENSITY
    return None
