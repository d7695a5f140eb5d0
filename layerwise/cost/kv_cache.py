"""KV cache bytes for MHA / MQA / GQA decoders, and what fits in a memory budget.

bytes/token = 2 (K and V) x n_layers x n_kv_heads x d_head x bytes/elem (vLLM paper §3;
memory_flops_facts.md §7). GQA/MQA use n_kv_heads, not n_heads. Multi-head latent attention
(DeepSeek-V2, arXiv 2405.04434 sec. 2.1.2, Table 1: (d_c + d_h^R) x l elements per token) caches
one latent of kv_rank plus the shared rotary key of d_rope per token and layer (`latent`). A sliding window (Mistral) caps
the cached tokens per sequence at the window (a rolling buffer). An 8-bit cache (fp8 e4m3 or int8)
also keeps one fp32 scale for K and one for V per layer (vLLM's per-tensor `k_scale`/`v_scale` of
its `--kv-cache-dtype fp8`; TensorRT-LLM's INT8/FP8 KV cache likewise scales per tensor).
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.precision import nbytes
from layerwise.spec.errors import WorkloadError


@dataclass(frozen=True)
class KVConfig:
    """What a decoder's cache depends on. n_kv_heads = n_heads: MHA; 1: MQA; else GQA."""

    n_layers: int
    n_kv_heads: int
    d_head: int
    dtype: str = "fp16"
    sliding_window: int = 0  # 0: no window; > 0: at most this many tokens cached per sequence
    latent: bool = False  # MLA: one compressed row per token and layer (d_head = kv_rank + d_rope), not K and V

    def __post_init__(self):
        for name in ("n_layers", "n_kv_heads", "d_head"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise WorkloadError(f"KV cache: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.sliding_window < 0:
            raise WorkloadError(f"KV cache: sliding_window must be >= 0, got {self.sliding_window}")


def kv_bytes_per_token(cfg: KVConfig) -> int:
    """One token of one sequence: 2 x L x n_kv_heads x d_head elements (MLA: L x (kv_rank + d_rope))."""
    per_layer = cfg.n_kv_heads * cfg.d_head * (1 if cfg.latent else 2)
    return nbytes(cfg.n_layers * per_layer, cfg.dtype)


def cached_tokens(cfg: KVConfig, prompt: int, new_tokens: int = 0) -> int:
    """Tokens cached per sequence: prompt + new_tokens (an upper bound by one: the last sampled
    token's K/V is never written), capped by the sliding window."""
    if prompt < 0 or new_tokens < 0:
        raise WorkloadError(f"prompt and --new-tokens must be >= 0, got {prompt}, {new_tokens}")
    total = prompt + new_tokens
    return min(total, cfg.sliding_window) if cfg.sliding_window else total


SCALED_DTYPES = ("fp8", "int8")  # 8-bit caches: per-layer fp32 scales for K and V


def kv_scale_bytes(cfg: KVConfig) -> int:
    return 2 * cfg.n_layers * 4 if cfg.dtype in SCALED_DTYPES else 0


def kv_cache_bytes(cfg: KVConfig, *, batch: int, prompt: int, new_tokens: int = 0) -> int:
    return batch * cached_tokens(cfg, prompt, new_tokens) * kv_bytes_per_token(cfg) + kv_scale_bytes(cfg)


@dataclass(frozen=True)
class Fit:
    """The largest context (tokens per sequence) or batch that fits, and what is left over."""

    value: int
    used_bytes: int
    budget_bytes: int


def max_context(cfg: KVConfig, *, budget_bytes: int, fixed_bytes: int, batch: int = 1,
                per_token_extra: int = 0) -> Fit:
    """Longest prompt+generation per sequence whose cache fits beside `fixed_bytes` (weights,
    overheads). `per_token_extra`: other bytes that grow per token per sequence (activations).
    With a sliding window, any length fits once the window does: returned as the window."""
    free = budget_bytes - fixed_bytes
    per = batch * (kv_bytes_per_token(cfg) + per_token_extra)
    if free < 0:
        raise WorkloadError(f"the fixed {fixed_bytes} bytes already exceed the budget of {budget_bytes}")
    tokens = free // per
    if cfg.sliding_window and tokens >= cfg.sliding_window:
        tokens = cfg.sliding_window  # unbounded length: the cache stops growing here
    return Fit(tokens, fixed_bytes + tokens * per, budget_bytes)


def max_batch(cfg: KVConfig, *, budget_bytes: int, fixed_bytes: int, tokens: int,
              per_sequence_extra: int = 0) -> Fit:
    """Most sequences of `tokens` (prompt + new) whose caches fit beside `fixed_bytes`."""
    free = budget_bytes - fixed_bytes
    if free < 0:
        raise WorkloadError(f"the fixed {fixed_bytes} bytes already exceed the budget of {budget_bytes}")
    per = kv_cache_bytes(cfg, batch=1, prompt=tokens) + per_sequence_extra
    n = free // per if per else 0
    return Fit(n, fixed_bytes + n * per, budget_bytes)


def kv_configs(block, dtype: str = "fp16") -> tuple[KVConfig, ...]:
    """The KV caches a spec tree needs: its self-attention layers grouped by (n_kv_heads, d_head,
    sliding_window), one KVConfig per group with n_layers = the group's size. Walks every child
    (a Repeat lists its copies), so mixed layer types each count. Cross-attention (context_dim > 0)
    caches the context once per request, not per token: not included."""
    groups: dict[tuple[int, int, int, bool], int] = {}

    def visit(b, copies: int = 1) -> None:
        if b.type_name == "attention" and not getattr(b, "context_dim", 0):
            key = (b.kv_heads, b.head_dim, b.sliding_window, False)
            groups[key] = groups.get(key, 0) + copies
            return
        if b.type_name == "mla":  # the latent and the shared rotary key (layerwise.blocks.mla)
            key = (1, b.cache_width, 0, True)
            groups[key] = groups.get(key, 0) + copies
            return
        for names, child in b.child_groups():  # equal neighbours (a repeat's layers) visited once
            visit(child, copies * len(names))

    visit(block)
    return tuple(KVConfig(n, kv, dh, dtype, sliding_window=w, latent=lat) for (kv, dh, w, lat), n in groups.items())


def seq2seq_kv_bytes(body, *, batch: int, prompt: int, new_tokens: int, dtype: str) -> tuple[int, int]:
    """An encoder-decoder's two caches (layerwise.blocks.seq2seq) and how many tensors they are:
    per decoder layer, the self-attention cache over prompt + new tokens, and the cross-attention
    keys/values of the `prompt`-long memory, projected once per sequence (not per generated token)."""
    dec = body.dec_block
    own = KVConfig(n_layers=body.dec_layers, n_kv_heads=dec.self_attn.kv_heads, d_head=dec.self_attn.head_dim,
                   dtype=dtype)
    cross = KVConfig(n_layers=body.dec_layers, n_kv_heads=dec.cross_attn.kv_heads, d_head=dec.cross_attn.head_dim,
                     dtype=dtype)
    total = kv_cache_bytes(own, batch=batch, prompt=prompt, new_tokens=new_tokens)
    return total + kv_cache_bytes(cross, batch=batch, prompt=prompt), 4 * body.dec_layers
