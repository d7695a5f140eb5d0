"""A decoder LM with its KV cache, fed token by token or a few at a time.

The cache is a fixed buffer per layer (layerwise.build.lm.init_kv_cache); attention reads only the
positions below the one being written, so stepping back (discarding rejected draft tokens) is
setting `length` back: the stale entries beyond it are overwritten by the next feed."""
from __future__ import annotations

import torch

from layerwise.spec.errors import LayerwiseError


class CachedLM:
    def __init__(self, module: torch.nn.Module, max_len: int, where: str):
        if not hasattr(module, "init_kv_cache"):
            raise LayerwiseError(f"{where}: not a decoder language model with a KV cache (a decoder_lm spec has one)")
        dtype = next(module.parameters()).dtype
        self.module, self.where = module, where
        # every position kept in order (no rolling window buffer), so `rewind` can step back
        self.cache = module.init_kv_cache(1, max_len, dtype, rolling=False)
        self.max_len = max_len
        # Mamba's states hold the past folded in: they cannot step back, nor take several tokens at once
        self.recurrent = any(hasattr(m, "init_state") for m in module.modules())
        self.length = 0  # positions whose keys/values are in the cache
        self.calls = 0  # forward passes run

    def feed(self, ids: list[int]) -> torch.Tensor:
        """Run the model on `ids` at positions length.. (writing their keys/values); returns the
        logits (len(ids), vocab_size): row i predicts the token after ids[i]."""
        if self.length + len(ids) > self.max_len:
            raise LayerwiseError(f"{self.where}: {self.length + len(ids)} positions exceed the cache of {self.max_len}")
        if self.recurrent and self.length and len(ids) > 1:
            raise LayerwiseError(f"{self.where}: a recurrent state (Mamba) takes one token at a time after the prompt, "
                                 f"got {len(ids)}; speculative decoding needs an attention model's KV cache")
        x = torch.tensor([ids], dtype=torch.long)
        logits = self.module(x, kv_cache=self.cache, start_pos=self.length)[0]
        self.length += len(ids)
        self.calls += 1
        return logits

    def catch_up(self, tokens: list[int], extra: list[int] = ()) -> torch.Tensor:
        """Feed what the cache lacks of `tokens` (all but positions already cached), then `extra`."""
        return self.feed(list(tokens[self.length:]) + list(extra))

    def rewind(self, length: int) -> None:
        if self.recurrent and length < self.length:
            raise LayerwiseError(f"{self.where}: a recurrent state (Mamba) cannot step back to position {length}; "
                                 f"speculative decoding needs an attention model's KV cache")
        self.length = min(self.length, length)
