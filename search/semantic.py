"""The semantic leg of search and of SimilarItems: the pretrained MiniLM's own sentence space
(mean-pooled, unit-normalised) over each item's text, untouched by training. The two-tower's
item tower maps text into the collaborative space, which is right for "who will buy this" and
loses "what is this like"; this space keeps it.

Items are encoded through the per-item encoder cache (towers/encoder_cache.py). Queries are
encoded by ``QueryEncoder``: TensorFlow where the model is built (training, evaluation), its
TensorFlow Lite conversion in the gateway (a batch-1 call through TensorFlow's runtime costs
several times TFLite's invoke), accepted only when it matches TensorFlow on sample queries.
"""
from __future__ import annotations

import numpy as np

from tworec.towers.config import RetrievalConfig

QUERY_TOKENS = 32  # a typed query's tokens the encoder reads (longer queries are cut)


def encoder_config(max_text_length: int = RetrievalConfig().max_text_length) -> RetrievalConfig:
    """The encoder settings of the semantic space: pretrained MiniLM, frozen."""
    return RetrievalConfig(encoder="minilm", max_text_length=max_text_length)


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def item_vectors(texts, max_text_length: int = RetrievalConfig().max_text_length) -> np.ndarray:
    """[items, 384] unit vectors of item texts in the semantic space (cached per text)."""
    from tworec.towers.encoder_cache import content_vectors

    return unit(content_vectors(list(texts), encoder_config(max_text_length)))


class QueryEncoder:
    """Query text → unit vector [384] in the semantic space, with TensorFlow."""

    def __init__(self):
        from tworec.tf_setup import tf
        from tworec.towers.encoder_cache import build_encoder
        from tworec.towers.text_encoder import mean_pool

        encoder = build_encoder(encoder_config())

        @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32, name="ids"),
                                      tf.TensorSpec([1, None], tf.int32, name="mask")])
        def pooled(ids, mask):
            return mean_pool(encoder(ids, mask), mask)

        self.encoder, self.pooled = encoder, pooled

    def __call__(self, text: str) -> np.ndarray:
        from tworec.tf_setup import tf

        ids, mask = _tokens(text)
        return unit(self.pooled(tf.constant(ids), tf.constant(mask)).numpy()[0])

    def encode(self, texts) -> np.ndarray:
        return np.stack([self(t) for t in texts]) if len(texts) else np.zeros((0, 384), np.float32)

    def tflite(self, check=("a space opera with starships", "bread", "Galaxy Quest 2 (2026)"),
               tolerance: float = 1e-4) -> bytes:
        """The TFLite conversion, refused unless it matches TensorFlow on ``check`` queries."""
        from tworec.tf_setup import tf

        converter = tf.lite.TFLiteConverter.from_concrete_functions([self.pooled.get_concrete_function()],
                                                                    self.encoder)
        model = converter.convert()
        lite = LiteQueryEncoder(model)
        worst = max(float(np.abs(lite(q) - self(q)).max()) for q in check)
        if worst > tolerance:
            raise RuntimeError(f"the query encoder's TFLite conversion differs from TensorFlow by {worst:.2g}")
        return model


class LiteQueryEncoder:
    """Query text → unit vector, from the TFLite conversion (the gateway's form). One interpreter
    per thread: an interpreter is not safe to share."""

    def __init__(self, model: bytes):
        import threading

        self.model = model
        self._local = threading.local()

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            import warnings

            from tworec.tf_setup import tf

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
                interpreter = tf.lite.Interpreter(model_content=self.model)
            self._local.interpreter = interpreter
            self._local.inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
            self._local.output = interpreter.get_output_details()[0]["index"]
            self._local.width = 0
        return interpreter

    def __call__(self, text: str, max_tokens: int = QUERY_TOKENS) -> np.ndarray:
        """``text``'s unit vector; ``max_tokens``: an item's text is read as items were at build
        time (RetrievalConfig.max_text_length), a query up to QUERY_TOKENS."""
        interpreter = self._interpreter()
        ids, mask = _tokens(text, max_tokens)
        if ids.shape[1] != self._local.width:
            for name, index in self._local.inputs.items():
                interpreter.resize_tensor_input(index, ids.shape)
            interpreter.allocate_tensors()
            self._local.width = ids.shape[1]
        for name, index in self._local.inputs.items():
            interpreter.set_tensor(index, mask if "mask" in name else ids)
        interpreter.invoke()
        return unit(interpreter.get_tensor(self._local.output)[0])


def _tokens(text: str, max_tokens: int = QUERY_TOKENS):
    from tworec.towers.tokenizer import tokenize

    tokens = tokenize([text], max_tokens)
    return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)
