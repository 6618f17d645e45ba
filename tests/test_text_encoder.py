"""The tf-keras MiniLM encoder matches transformers' PyTorch BertModel on the same weights."""
import numpy as np
import pytest

from tworec.towers.tokenizer import minilm_dir, tokenize

TEXTS = [
    "Toy Story (1995). Categories: Animation, Children's, Comedy.",
    "A practical handbook of sourdough baking, with recipes for bread and pastry.",
    "Misérables, Les (1995)",
    "Galaxy",
]


@pytest.fixture(scope="module")
def tokens():
    return tokenize(TEXTS, max_length=32)


def test_tokenizer_pads_truncates_and_marks_padding(tokens):
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == len(TEXTS) and ids.shape[1] <= 32
    assert (ids[:, 0] == 101).all()  # [CLS]
    assert mask[3].sum() == 3 and (ids[3, mask[3] == 0] == 0).all()  # "[CLS] galaxy [SEP]" + padding


def test_minilm_parity_with_transformers_bertmodel(tokens):
    torch = pytest.importorskip("torch")
    from transformers import BertModel

    from tworec.towers.text_encoder import mean_pool, pretrained_minilm
    from tworec.tf_setup import tf

    reference = BertModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(tokens["input_ids"], dtype=torch.long),
                             attention_mask=torch.tensor(tokens["attention_mask"], dtype=torch.long)
                             ).last_hidden_state.numpy()
    encoder = pretrained_minilm()
    states = encoder(tf.constant(tokens["input_ids"]), tf.constant(tokens["attention_mask"])).numpy()
    mask = tokens["attention_mask"].astype(bool)
    diff = np.abs(states[mask] - expected[mask]).max()
    assert diff <= 1e-4, diff
    pooled = mean_pool(tf.constant(states), tf.constant(tokens["attention_mask"])).numpy()
    expected_pooled = (expected * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(pooled - expected_pooled).max() <= 1e-4
    # The pretrained encoder knows language: related texts are closer than unrelated ones.
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    related = tokenize(["a book about baking bread", "a film about space rockets"], 32)
    emb = mean_pool(encoder(tf.constant(related["input_ids"]), tf.constant(related["attention_mask"])),
                    tf.constant(related["attention_mask"])).numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb[0] @ unit[1] > emb[1] @ unit[1]


def test_the_encoder_cache_encodes_only_new_or_changed_item_texts(tmp_path, monkeypatch):
    import io

    from tworec.towers import encoder_cache
    from tworec.towers.config import RetrievalConfig

    monkeypatch.setenv("TWOREC_CACHE", str(tmp_path))
    encoded = []
    real = encoder_cache.encode_texts

    def counting(encoder, texts, *args):
        encoded.append(list(texts))
        return real(encoder, texts, *args)

    monkeypatch.setattr(encoder_cache, "encode_texts", counting)
    config = RetrievalConfig(encoder="tiny")
    encoder = encoder_cache.build_encoder(config)
    catalog = [f"item {i}: a {['red', 'blue', 'green'][i % 3]} thing" for i in range(50)] + [TEXTS[0]]
    progress = io.StringIO()
    first = encoder_cache.content_vectors(catalog, config, encoder, stream=progress)
    assert sorted(encoded[0]) == sorted(set(catalog)) and "items/s" in progress.getvalue()
    changed = catalog[:10] + ["item 10: now a purple thing"] + catalog[11:] + ["a brand-new item"]
    second = encoder_cache.content_vectors(changed, config, encoder, stream=progress)
    assert encoded[1] == ["item 10: now a purple thing", "a brand-new item"]  # nothing else re-encoded
    np.testing.assert_array_equal(np.delete(second[:-1], 10, 0), np.delete(first, 10, 0))
    np.testing.assert_allclose(second[10], real(encoder, ["item 10: now a purple thing"], config.max_text_length)[0], atol=1e-5)
    # Another encoder setting is another cache entry, never a stale vector.
    encoder_cache.content_vectors(catalog[:3], RetrievalConfig(encoder="tiny", max_text_length=16), encoder,
                                  stream=progress)
    assert len(encoded) == 3 and len(encoded[2]) == 3
