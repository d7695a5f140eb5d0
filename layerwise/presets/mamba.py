"""The Mamba family (layerwise.blocks.mamba): a decoder_lm whose repeated block is a mamba_block,
no positions (the scan is causal and ordered), a final RMSNorm and a tied head (HF
MambaForCausalLM). Pure Python. Also the HF importer of `model_type` mamba:
  mamba  vocab_size, hidden_size, state_size, num_hidden_layers, intermediate_size (d_inner; absent:
         expand x hidden_size, as MambaConfig computes it, which a config's own value overrides), conv_kernel, use_bias, use_conv_bias, time_step_rank ("auto": ceil(hidden/16)),
         layer_norm_epsilon, tie_word_embeddings (default true)
"""
from __future__ import annotations

from layerwise.spec.base import block_class
from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import InputSpec, Model

REQUIRED = object()

MAMBA = dict(vocab_size=REQUIRED, d_model=REQUIRED, n_layers=REQUIRED, max_seq=2048, d_state=16, expand=2, d_conv=4,
             d_inner=0,  # 0: expand * d_model
             dt_rank=0,  # 0: ceil(d_model / 16)
             bias=False, conv_bias=True, norm_eps=1e-5, tie_embeddings=True)


def build_mamba(name: str, source: str, k: dict) -> Model:
    d = k["d_model"]
    mixer = block_class("mamba_mixer")(d_model=d, d_inner=k["d_inner"] or k["expand"] * d, d_state=k["d_state"], d_conv=k["d_conv"],
                                       dt_rank=k["dt_rank"] or -(-d // 16), bias=k["bias"], conv_bias=k["conv_bias"])
    block = block_class("mamba_block")(mixer=mixer, norm_eps=k["norm_eps"])
    body = block_class("decoder_lm")(vocab_size=k["vocab_size"], d_model=d, n_layers=k["n_layers"], block=block,
                                     max_seq=k["max_seq"], positions="none", tie_embeddings=k["tie_embeddings"],
                                     final_norm="rmsnorm", norm_eps=k["norm_eps"])
    inp = InputSpec(kind="tokens", shape=(k["max_seq"],), vocab_size=k["vocab_size"], max_seq=k["max_seq"])
    return Model(name=name, body=body, input=inp, task="lm", source=source)


def hf_mamba(c) -> tuple[str, dict]:
    rank = c.get("time_step_rank", "auto")
    if rank != "auto" and (isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0):
        raise LayerwiseError(f"{c.where}: 'time_step_rank' must be \"auto\" or a positive integer, got {rank!r}")
    if c.get("hidden_act", "silu") != "silu":
        raise LayerwiseError(f"{c.where}: 'hidden_act' {c.get('hidden_act')!r} is not supported (silu)")
    return "mamba", dict(vocab_size=c.int("vocab_size"), d_model=c.int("hidden_size"), n_layers=c.int("num_hidden_layers"),
                         d_state=c.int("state_size", 16), expand=c.int("expand", 2), d_conv=c.int("conv_kernel", 4),
                         d_inner=c.int("intermediate_size") if "intermediate_size" in c.data else 0,
                         dt_rank=0 if rank == "auto" else rank, bias=c.bool("use_bias", False),
                         conv_bias=c.bool("use_conv_bias", True), norm_eps=c.float("layer_norm_epsilon", 1e-5),
                         tie_embeddings=c.bool("tie_word_embeddings", True))
