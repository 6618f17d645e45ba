"""Embedding items the model never saw, from their text and categories alone (cold start and
live catalog upserts): the frozen encoder's pooled vector goes through the item tower's content
path; there is no id embedding to use."""
from __future__ import annotations

import numpy as np

from tworec.text import compose_item_text
from tworec.towers.catalog import MAX_CATEGORIES, Catalog, padded_rows
from tworec.towers.config import RetrievalConfig
from tworec.towers.encoder_cache import build_encoder, encode_texts, token_states


def category_rows(catalog: Catalog, category_lists) -> np.ndarray:
    index = {c: i + 1 for i, c in enumerate(catalog.categories)}
    return np.array([padded_rows(cats, index, MAX_CATEGORIES) for cats in category_lists],
                    np.int32).reshape(len(category_lists), MAX_CATEGORIES)


def embed_new_items(model, catalog: Catalog, config: RetrievalConfig, titles, descriptions=None,
                    category_lists=None, encoder=None) -> np.ndarray:
    if not config.uses_content:
        raise ValueError("the id_only variant cannot embed items it has not seen")
    descriptions = descriptions or [""] * len(titles)
    category_lists = category_lists or [()] * len(titles)
    texts = [compose_item_text(title=t, description=d, categories=c)
             for t, d, c in zip(titles, descriptions, category_lists)]
    encoder = encoder or build_encoder(config)
    if config.encoder_mode == "finetune":
        from tworec.tf_setup import tf

        bottom = encoder.cfg.num_layers - config.finetune_layers
        states, mask = token_states(encoder, texts, config.max_text_length, bottom)
        vectors = model.item_tower.pooled_from_states(tf.constant(states), tf.constant(mask)).numpy()
    else:
        vectors = encode_texts(encoder, texts, config.max_text_length)
    return model.content_embeddings(vectors, category_rows(catalog, category_lists))
