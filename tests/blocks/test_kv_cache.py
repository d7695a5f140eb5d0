"""Decoding through the KV cache gives the same logits as one full forward, and the measured cache
is the textbook 2 · layers · batch · n_kv_heads · tokens · d_head · bytes."""
import pytest
import torch

from layerwise.measure.step import measure_step
from layerwise.presets import get_preset
from layerwise.workload import Workload

SMALL = dict(n_layers=2, d_model=64, n_heads=8, d_ff=96, vocab_size=97)


@pytest.mark.parametrize("name, over", [
    ("tiny-gpt", dict(vocab_size=97)),  # learned positions, MHA
    ("llama-2-7b", dict(SMALL, n_kv_heads=2)),  # RoPE, GQA
    ("mistral-7b", dict(SMALL, n_kv_heads=2, sliding_window=5)),  # window shorter than the text
])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_incremental_decode_equals_full_forward(name, over, impl, monkeypatch):
    from layerwise.build.runtime import set_attention_impl

    torch.manual_seed(0)
    module = get_preset(name, **over).build().eval()
    set_attention_impl(module, impl)
    if impl == "eager":  # --attention eager decodes eagerly too (it once ran sdpa through the cache)
        def refuse(*args, **kwargs):
            raise AssertionError("sdpa called with --attention eager")

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = module(ids)
        cache = module.init_kv_cache(2, 12, torch.float32)
        steps = [module(ids[:, :7], kv_cache=cache, start_pos=0)]
        steps += [module(ids[:, t:t + 1], kv_cache=cache, start_pos=t) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_measured_cache_is_the_textbook_size():
    model = get_preset("llama-2-7b", **SMALL, n_kv_heads=2)
    result = measure_step(model, Workload(mode="infer", batch=3, seq=16, new_tokens=4))  # inference: bf16 by default
    layers, batch, kv_heads, tokens, d_head, bf16 = 2, 3, 2, 16 + 4, 64 // 8, 2
    assert result.components["kv_cache"] == 2 * layers * batch * kv_heads * tokens * d_head * bf16
    fp32 = measure_step(model, Workload(mode="infer", batch=3, seq=16, new_tokens=4, precision="fp32"))
    assert fp32.components["kv_cache"] == 2 * result.components["kv_cache"]
