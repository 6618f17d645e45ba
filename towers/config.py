"""Typed configuration of the two-tower retrieval model and its training: every setting once,
with its reason; the command line and saved configs derive from it (tworec.settings)."""
from __future__ import annotations

from dataclasses import dataclass

from tworec import settings
from tworec.contract import HISTORY_LENGTH, PROTOCOLS
from tworec.settings import setting

VARIANTS = ("content", "id_only")
SELECTIONS = ("hitrate@100", "hitrate@50", "hitrate@10", "val_loss")
ENCODERS = ("minilm", "tiny")
ENCODER_MODES = ("frozen", "finetune")


@dataclass(frozen=True)
class RetrievalConfig:
    variant: str = setting("content", "content: text + id + categories (the product); id_only: the no-text baseline",
                           choices=VARIANTS)
    protocol: str = setting("temporal", "temporal: train on train, select on valid; tfrs: the TFRS tutorials' "
                                        "random 80/20", choices=tuple(PROTOCOLS))
    embedding_dim: int = setting(64, "size of the query and item vectors the index holds")
    id_dim: int = setting(32, "item-id embedding size")
    category_dim: int = setting(16, "category embedding size")
    content_hidden: int = setting(256, "hidden units of the content head over the text vector (0: linear)")
    user_dim: int = setting(32, "user-id embedding size")
    history_length: int = setting(HISTORY_LENGTH, "recent items the query tower reads")
    id_dropout: float = setting(0.5, "share of training examples whose item id is hidden (DropoutNet), so the "
                                     "content path learns to serve cold items")
    user_dropout: float = setting(0.2, "share of training examples whose user id is hidden, so unknown users are "
                                       "served from their history")
    content_dropout: float = setting(0.0, "dropout on the text vector: makes the content head generalise rather "
                                          "than memorise warm items")
    temperature: float = setting(0.05, "softmax temperature of the in-batch loss")
    logq_correction: bool = setting(True, "correct the in-batch softmax for train popularity (sampling bias)")
    mixed_negatives: int = setting(0, "extra negatives sampled uniformly from the catalog per batch")
    remove_accidental_hits: bool = setting(True, "a batch's other copies of the positive are not negatives")
    cross_replica_negatives: bool = setting(True, "gather in-batch negatives from every replica, so the loss is "
                                                  "the same on any number of devices")
    batch_size: int = setting(256, "global batch, split across replicas")
    learning_rate: float = setting(0.003, "Adam learning rate")
    lazy_adam_above: int = setting(200_000, "items above which Adam updates only the batch's rows of the id tables "
                                           "(a step's cost then stays flat; below, dense Adam trains better and "
                                           "is affordable)")
    epochs: int = setting(15, "most epochs; early stopping may end sooner")
    selection: str = setting("hitrate@100", "what keeps the best epoch and stops training: the temporal "
                                            "protocol's validation HitRate@K, or the sampled-softmax val_loss "
                                            "(which tracks the ranking poorly)", choices=SELECTIONS)
    validation_queries: int = setting(10_000, "validation queries the HitRate selection scores (its cost per epoch)")
    new_item_offset: float | None = setting(None, "added to the retrieval score of items without an id embedding "
                                                  "(cold, new); none: fitted on validation after training")
    live_half_life_s: float = setting(7 * 86_400.0, "half-life of the decayed live interaction counts (trending) "
                                                    "the retrieval score and the ranker read; the gateway counts "
                                                    "with the exported model's")
    live_weight: float | None = setting(None, "weight of the live-count feature (live/decay.py) in the retrieval "
                                              "score; none: fitted on validation")
    live_tail_floor: float = setting(0.95, "the fitted live weight keeps validation tail HitRate@10 at least this "
                                           "share of the weight-0 model's")
    click_prior_base_rate: float = setting(0.03, "the exploration slot's prior: the click rate of a random item "
                                                 "shown to a random user (its scale; the content score orders it)")
    patience: int = setting(3, "early stopping: epochs without improvement")
    min_steps_before_stopping: int = setting(1000, "early stopping judges no epoch before this many optimizer steps "
                                                   "(small datasets have noisy early epochs)")
    encoder: str = setting("minilm", "text encoder: minilm (pretrained) or tiny (random, for tests)", choices=ENCODERS)
    encoder_mode: str = setting("frozen", "frozen: cached encoder outputs and a trainable head (the CPU default); "
                                          "finetune: the encoder's top layers train too (for GPUs)",
                                choices=ENCODER_MODES)
    finetune_layers: int = setting(2, "with encoder_mode finetune: how many top encoder layers train")
    max_text_length: int = setting(64, "tokens of item text the encoder reads")
    seed: int = setting(1, "seed of initialisation, dropout and shuffling")
    steps_per_epoch: int = setting(0, "0: one pass over train")

    def __post_init__(self):
        settings.check(self)

    # What fixes the shapes of the weights: a warm start needs the same values.
    ARCHITECTURE = ("variant", "embedding_dim", "id_dim", "category_dim", "content_hidden", "user_dim", "encoder",
                    "encoder_mode", "finetune_layers")

    def architecture_differences(self, other: "RetrievalConfig") -> list:
        return [f"{n}: {getattr(other, n)} → {getattr(self, n)}" for n in self.ARCHITECTURE
                if getattr(self, n) != getattr(other, n)]

    @property
    def selection_k(self) -> int | None:
        """K of a HitRate@K selection; None when the validation loss selects."""
        return None if self.selection == "val_loss" else int(self.selection.split("@")[1])

    @property
    def uses_content(self) -> bool:
        return self.variant == "content"

    @classmethod
    def tiny(cls, **overrides) -> "RetrievalConfig":
        """A small, fast configuration for tests."""
        base = dict(embedding_dim=16, id_dim=8, category_dim=4, content_hidden=32, user_dim=8,
                    history_length=10, batch_size=64, epochs=2, encoder="tiny", max_text_length=24)
        base.update(overrides)
        return cls(**base)
