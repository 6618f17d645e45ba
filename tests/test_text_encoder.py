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
