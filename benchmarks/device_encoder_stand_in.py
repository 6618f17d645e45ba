"""A GPU machine's check, for a device image without tworec's stack (bench/results.md, Training
speed): which of tworec's engines it holds, and how many items/s MiniLM's architecture (BERT, 6
layers, 384 wide, 12 heads, 1536 intermediate, 64 tokens, mean pooling) encodes there in PyTorch
with random weights. A stand-in, not the product's encoder (TensorFlow); needs torch and
transformers, which tworec does not install.

    python3 benchmarks/device_encoder_stand_in.py
"""
import importlib, json, sys, time
out = {"python": sys.version.split()[0]}
for name in ("tensorflow", "tf_keras", "tensorflow_recommenders", "scann", "apache_beam", "torch", "transformers"):
    try:
        m = importlib.import_module(name); out[name] = getattr(m, "__version__", "present")
    except Exception as err:
        out[name] = f"missing ({type(err).__name__})"
print(json.dumps(out), flush=True)
import torch
from transformers import BertConfig, BertModel
cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512)
model = BertModel(cfg).cuda().eval()
res = {"gpu": torch.cuda.get_device_name(0)}
for dtype in (torch.float32, torch.bfloat16):
    m = model.to(dtype)
    for batch in (256, 1024):
        ids = torch.randint(1000, 30000, (batch, 64), device="cuda")
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(3):
                m(input_ids=ids, attention_mask=mask)
            torch.cuda.synchronize()
            times = []
            for _ in range(20):
                t = time.perf_counter()
                h = m(input_ids=ids, attention_mask=mask).last_hidden_state
                pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        times.sort()
        res[f"{str(dtype).split('.')[-1]}_batch{batch}_items_per_s"] = round(batch / times[len(times) // 2])
print(json.dumps(res), flush=True)
