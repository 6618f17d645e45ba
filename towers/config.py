"""Typed configuration of the two-tower retrieval model and its training."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from tworec.contract import PROTOCOLS

VARIANTS = ("content", "id_only")
SELECTIONS = ("hitrate@100", "hitrate@50", "hitrate@10", "val_loss")


@dataclass(frozen=True)
class RetrievalConfig:
    variant: str = "content"  # content: text + id + categories (the product); id_only: baseline
    protocol: str = "temporal"  # temporal: train on train, stop on valid; tfrs: train on tfrs_train
    embedding_dim: int = 64
    id_dim: int = 32
    category_dim: int = 16
    content_hidden: int = 256  # 0: a linear content head
    user_dim: int = 32
    history_length: int = 50
    id_dropout: float = 0.5  # DropoutNet: drop an item's id embedding, learn to rely on content
    user_dropout: float = 0.2  # drop the user id: learn to serve unknown users from history
    # Dropout on the text vector: the content head must generalise (to cold items) rather than
    # memorise each warm item's vector, which the id embedding is there for.
    content_dropout: float = 0.0
    temperature: float = 0.05
    logq_correction: bool = True  # correct in-batch softmax for train popularity (sampling bias)
    mixed_negatives: int = 0  # extra negatives sampled uniformly from the catalog per batch
    remove_accidental_hits: bool = True
    # Gather in-batch negatives from every replica, so the loss is the same on any number of GPUs.
    cross_replica_negatives: bool = True
    batch_size: int = 256  # global: split across replicas by MirroredStrategy
    learning_rate: float = 0.003
    epochs: int = 15
    # What picks the epoch kept and stops training: "hitrate@100" (also @10, @50) is the temporal
    # protocol's HitRate on the validation split (tworec.evaluation.validation), "val_loss" the
    # sampled-softmax loss there, which on MovieLens-100K picked an epoch 0.026 HitRate@100 worse.
    selection: str = "hitrate@100"
    validation_queries: int = 10_000  # at most, for the HitRate selection: its cost per epoch
    # Added to the retrieval score of items without an id embedding (cold, new). None: fitted on the
    # validation split after training (content variant, temporal protocol; else 0); a number: used
    # as given, e.g. to show new items more than validation would.
    new_item_offset: float | None = None
    patience: int = 3  # early stopping on the selection metric, in epochs
    # Early stopping judges no epoch before this many optimizer steps. On a small dataset an epoch
    # is a few dozen steps and the validation loss is noisy, so a patience in epochs alone stops a
    # model that has barely trained (the synthetic demo stopped after 126 steps).
    min_steps_before_stopping: int = 1000
    encoder: str = "minilm"  # minilm (pretrained) or tiny (random, for tests)
    encoder_mode: str = "frozen"  # frozen: cached encoder outputs; finetune: top layers trainable
    finetune_layers: int = 2
    max_text_length: int = 64
    seed: int = 1
    steps_per_epoch: int = 0  # 0: one pass over train

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {self.variant!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}")
        if self.encoder_mode not in ("frozen", "finetune"):
            raise ValueError("encoder_mode must be frozen or finetune")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, not {self.selection!r}")

    @property
    def selection_k(self) -> int | None:
        """K of a HitRate@K selection; None when the validation loss selects."""
        return None if self.selection == "val_loss" else int(self.selection.split("@")[1])

    @property
    def uses_content(self) -> bool:
        return self.variant == "content"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RetrievalConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    @classmethod
    def tiny(cls, **overrides) -> "RetrievalConfig":
        """A small, fast configuration for tests."""
        base = dict(embedding_dim=16, id_dim=8, category_dim=4, content_hidden=32, user_dim=8,
                    history_length=10, batch_size=64, epochs=2, encoder="tiny", max_text_length=24)
        base.update(overrides)
        return cls(**base)
