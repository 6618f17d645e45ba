"""A GPU machine's check, for a device image without tworec's stack (bench/results.md, Training
speed): which of tworec's engines it holds, and how many items/s MiniLM's architecture (BERT, 6
layers, 384 wide, 12 heads, 1536 intermediate, 64 tokens, mean pooling) encodes there in PyTorch
with random weights. A stand-in, not the product's encoder (TensorFlow); needs torch and
transformers, which tworec does not install.

    python3 benchmarks/device_encoder_stand_in.py
"""
import importlib
import json
import sys
import time

ENGINES = ("tensorflow", "tf_keras", "tensorflow_recommenders", "scann", "apache_beam", "torch", "transformers")
TOKENS = 64  # the product's max_text_length
WARM_UP, TIMED = 3, 20


def engines() -> dict:
    found = {"python": sys.version.split()[0]}
    for name in ENGINES:
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "present")
        except Exception as err:  # any import failure means the engine is not usable there
            found[name] = f"missing ({type(err).__name__})"
    return found


def encoder_items_per_s() -> dict:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    model = BertModel(config).cuda().eval()
    out = {"gpu": torch.cuda.get_device_name(0)}
    for dtype in (torch.float32, torch.bfloat16):
        model = model.to(dtype)
        for batch in (256, 1024):
            ids = torch.randint(1000, 30000, (batch, TOKENS), device="cuda")
            mask = torch.ones_like(ids)
            seconds = []
            with torch.inference_mode():
                for step in range(WARM_UP + TIMED):
                    started = time.perf_counter()
                    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                    (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # mean pooling
                    torch.cuda.synchronize()
                    if step >= WARM_UP:
                        seconds.append(time.perf_counter() - started)
            out[f"{str(dtype).split('.')[-1]}_batch{batch}_items_per_s"] = round(batch / sorted(seconds)[TIMED // 2])
    return out


if __name__ == "__main__":
    print(json.dumps(engines()), flush=True)
    print(json.dumps(encoder_items_per_s()), flush=True)
