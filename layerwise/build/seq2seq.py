"""Torch modules of the encoder-decoder spec (layerwise.blocks.seq2seq), and greedy generation
with two KV caches: the decoder's self-attention cache grows by one position per new token; the
cross-attention keys/values are projected from the encoder's memory once per sequence."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cross_kv(attn: nn.Module, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-attention's keys and values of the memory (B, Sk, D): (B, n_kv_heads, Sk, d_head)."""
    b, sk, _ = memory.shape
    k = attn.k_proj(memory).view(b, sk, attn.kv_heads, attn.d_head)
    v = attn.v_proj(memory).view(b, sk, attn.kv_heads, attn.d_head)
    if attn.k_norm is not None:
        k = attn.k_norm(k)
    return k.transpose(1, 2), v.transpose(1, 2)


def cross_attend(attn: nn.Module, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cross-attention of x (B, S, D) over cached keys/values (inference: no dropout)."""
    b, s, _ = x.shape
    q = attn.q_proj(x).view(b, s, attn.n_heads, attn.d_head)
    if attn.q_norm is not None:
        q = attn.q_norm(q)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, enable_gqa=attn.kv_heads != attn.n_heads)
    return attn.o_proj(y.transpose(1, 2).reshape(b, s, attn.n_heads * attn.d_head))


class DecoderBlockModule(nn.Module):
    """Children self_attn_norm, self_attn, [self_attn_dropout], cross_attn_norm, cross_attn, ...,
    ffn_norm, ffn, [ffn_dropout]."""

    def __init__(self, children: dict[str, nn.Module], norm_position: str):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.norm_position = norm_position
        self.cross_cache = None  # (k, v) while a cached decode runs; set by EncoderDecoderModule

    def _branch(self, name: str, x: torch.Tensor, memory: torch.Tensor | None, bias=None) -> torch.Tensor:
        if name == "self_attn":
            y = self.self_attn(x) if bias is None else self.self_attn(x, bias=bias)
        elif self.cross_cache is not None:
            y = cross_attend(self.cross_attn, x, *self.cross_cache)
        else:
            y = self.cross_attn(x, memory)
        drop = getattr(self, f"{name}_dropout", None)
        return drop(y) if drop is not None else y

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:  # (B, S, D); bias: T5's (1, H, S, S)
        for name in ("self_attn", "cross_attn", "ffn"):
            norm = getattr(self, f"{name}_norm")
            if name == "ffn":
                drop = getattr(self, "ffn_dropout", None)
                branch = (lambda h: drop(self.ffn(h))) if drop is not None else self.ffn
            else:
                branch = (lambda h, n=name: self._branch(n, h, memory, bias))
            x = norm(x + branch(x)) if self.norm_position == "post" else x + branch(norm(x))
        return x


class EncoderDecoderModule(nn.Module):
    def __init__(self, children: dict[str, nn.Module], spec):
        super().__init__()
        for name, module in children.items():
            self.add_module(name, module)
        self.tied = spec.tie_embeddings

    # ---- the two stacks -------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor, side: str, start: int = 0) -> torch.Tensor:
        table = self.tgt_embed if side == "dec" and hasattr(self, "tgt_embed") else self.embed
        x = table(ids)  # (B, S, D)
        pos = getattr(self, f"{side}_pos", None) or getattr(self, "pos", None)
        if pos is not None:
            x = pos(x, start)
        norm = getattr(self, f"{side}_embed_norm", None)  # BART's layernorm_embedding
        if norm is not None:
            x = norm(x)
        return self.drop(x) if hasattr(self, "drop") else x

    def _bias(self, side: str, s: int, sk: int, start: int = 0) -> torch.Tensor | None:
        """T5's relative position bias (1, H, s, sk) for queries at start.., or None."""
        table = getattr(self, f"{side}_rel_bias", None)
        return table(s, sk, start) if table is not None else None

    def encode(self, src: torch.Tensor) -> torch.Tensor:  # (B, S) ids -> memory (B, S, D)
        x = self._embed(src, "enc")
        bias = self._bias("enc", src.shape[1], src.shape[1])
        for block in self.encoder:
            x = block(x) if bias is None else block(x, bias)
        return self.enc_norm(x) if hasattr(self, "enc_norm") else x

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        """(B, S) decoder ids -> logits (B, S, vocab_size). memory None: the blocks read their
        cross caches (set by forward's cached path)."""
        x = self._embed(tgt, "dec", start)
        bias = self._bias("dec", tgt.shape[1], start + tgt.shape[1], start)
        for block in self.decoder:
            x = block(x, memory) if bias is None else block(x, memory, bias)
        if hasattr(self, "dec_norm"):
            x = self.dec_norm(x)
        return F.linear(x, self.head_weight()) if self.tied else self.lm_head(x)

    def head_weight(self) -> torch.Tensor:
        if not self.tied:
            return self.lm_head.weight
        return self.tgt_embed.weight if hasattr(self, "tgt_embed") else self.embed.weight

    # ---- KV caches ------------------------------------------------------------------------------
    def init_kv_cache(self, batch: int, max_len: int, dtype: torch.dtype, src_len: int | None = None) -> list[torch.Tensor]:
        """[k_0, v_0, ..., k_{L-1}, v_{L-1}] self-attention caches (B, n_kv_heads, max_len, d_head),
        then the same for cross-attention over src_len memory positions (default max_len)."""
        device = self.embed.weight.device
        out = []
        for length, name in ((max_len, "self_attn"), (src_len or max_len, "cross_attn")):
            for block in self.decoder:
                attn = getattr(block, name)
                shape = (batch, attn.kv_heads, length, attn.d_head)
                out += [torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)]
        return out

    def fill_cross(self, memory: torch.Tensor, kv_cache: list[torch.Tensor]) -> None:
        """Project the memory (B, Sk, D) into every decoder layer's cross cache, once per sequence."""
        n = len(self.decoder)
        for i, block in enumerate(self.decoder):
            k, v = cross_kv(block.cross_attn, memory)
            kv_cache[2 * (n + i)][:, :, :k.shape[2]] = k
            kv_cache[2 * (n + i) + 1][:, :, :v.shape[2]] = v

    def forward(self, ids: torch.Tensor, kv_cache: list[torch.Tensor] | None = None,
                start_pos: int = 0) -> torch.Tensor:
        """ids (B, S, 2): source and decoder input -> logits (B, S, vocab_size). With `kv_cache`
        (init_kv_cache): (B, S, 2) encodes the source into the cross caches and runs the decoder
        input from start_pos; (B, S) decoder ids continue a cached decode at start_pos."""
        if kv_cache is None:
            return self.decode(ids[..., 1], self.encode(ids[..., 0]))
        blocks = list(self.decoder)
        n = len(blocks)
        if ids.dim() == 3:
            self.fill_cross(self.encode(ids[..., 0]), kv_cache)
            ids = ids[..., 1]
        try:
            for i, block in enumerate(blocks):
                block.self_attn.kv = (kv_cache[2 * i], kv_cache[2 * i + 1], start_pos)
                block.cross_cache = (kv_cache[2 * (n + i)], kv_cache[2 * (n + i) + 1])
            return self.decode(ids, None, start_pos)
        finally:
            for block in blocks:
                block.self_attn.kv, block.cross_cache = None, None

    @torch.no_grad()
    def generate(self, src: torch.Tensor, start_token: int, new_tokens: int) -> torch.Tensor:
        """Greedy decoding: (B, S) source ids -> (B, new_tokens) ids, one token per step through
        both caches (the memory is projected once)."""
        was = self.training
        self.eval()
        try:
            b = src.shape[0]
            cache = self.init_kv_cache(b, new_tokens, self.embed.weight.dtype, src_len=src.shape[1])
            tok = torch.full((b, 1), start_token, dtype=torch.long, device=src.device)
            out = []
            self.fill_cross(self.encode(src), cache)
            for pos in range(new_tokens):
                tok = self(tok, cache, pos)[:, -1:].argmax(-1)  # (B, 1)
                out.append(tok)
            return torch.cat(out, dim=1)
        finally:
            self.train(was)
