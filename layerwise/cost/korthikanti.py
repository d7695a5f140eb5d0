"""The closed-form activation memory of Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", arXiv 2205.05198, Table 2; memory_flops_facts.md §4).

This is THE PAPER'S FORMULA, kept as a cross-check for the per-block activation model (which sums
what each block saves); it is not that model. It assumes a GPT layer with d_ff = 4h, GeLU, dropout
with 1-byte masks, fp16/bf16 activations (2 B) and no FlashAttention.
Notation: s sequence, b micro-batch, h hidden, a heads, t tensor-parallel size.
"""
from __future__ import annotations

from fractions import Fraction

from layerwise.spec.errors import WorkloadError

RECOMPUTE = ("none", "selective", "full")


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, *, t: int = 1, sequence_parallel: bool = False,
                            recompute: str = "none") -> Fraction:
    """Activation bytes of one transformer layer (Table 2), exact as a Fraction.

    Terms (Sec. 4.1): attention 11sbh + 5as²b, MLP 19sbh, two LayerNorms 4sbh; = sbh(34 + 5as/h).
    With TP, 24sbh of the 34 (the parts inside the parallel regions) and the 5as²b score terms
    divide by t; the 10sbh at LayerNorm/dropout inputs are replicated unless sequence parallel.
    Selective recompute drops the 5as²b attention terms; full recompute keeps only the layer input
    (2sbh).
    """
    if recompute not in RECOMPUTE:
        raise WorkloadError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    if recompute == "full":
        return Fraction(2 * s * b * h)
    sbh = s * b * h
    replicated = Fraction(10 * sbh, t) if sequence_parallel else Fraction(10 * sbh)  # LN + dropout inputs
    parallel = Fraction(24 * sbh, t)  # QKV/attention-out/MLP tensors inside the TP regions
    scores = Fraction(5 * a * s * s * b, t) if recompute == "none" else Fraction(0)  # softmax, mask, dropout
    return replicated + parallel + scores


def korthikanti_model_bytes(s: int, b: int, h: int, a: int, n_layers: int, *, t: int = 1, p: int = 1,
                            sequence_parallel: bool = False, recompute: str = "none",
                            interleaved_m: int = 0) -> Fraction:
    """First pipeline stage under 1F1B: L/t·sbh(34 + 5as/h) summed over all L layers (pp micro-
    batches in flight x L/p layers each = L layers' worth, so not divided by p); the interleaved
    schedule with m chunks multiplies by 1 + (p - 1)/(pm). Embedding/output extras are omitted
    (< 0.01% for the 22B model, as the paper says)."""
    total = korthikanti_layer_bytes(s, b, h, a, t=t, sequence_parallel=sequence_parallel,
                                    recompute=recompute) * n_layers
    if interleaved_m:
        total *= 1 + Fraction(p - 1, p * interleaved_m)
    return total


def korthikanti_model_flops(batch: int, n_layers: int, s: int, h: int, vocab: int, *,
                            selective_recompute: bool = False) -> Fraction:
    """Appendix A: model FLOPs per iteration 72·B·L·s·h²·(1 + s/(6h) + v/(12hL)); the hardware
    FLOPs with selective recompute use s/(3h) (the recomputed attention scores)."""
    attn = Fraction(s, 3 * h) if selective_recompute else Fraction(s, 6 * h)
    return 72 * batch * n_layers * s * h * h * (1 + attn + Fraction(vocab, 12 * h * n_layers))
