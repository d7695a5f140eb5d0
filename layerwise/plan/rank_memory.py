"""Per-rank memory of `train-parallel`'s layouts on PyTorch's own engines (train/parallel.py),
read off the memory model (cost/memory.py) run on what one rank holds.

Tensor parallelism (torch.distributed.tensor.parallel, Megatron's split): a rank's transformer
block is the block with n_heads / tp query heads, n_kv_heads / tp key-value heads (d_head kept)
and d_ff / tp hidden units; its norms and residual stream stay whole (replicated). The embedding is
row-parallel over the vocabulary and the head column-parallel with a replicated (all-gathered)
output, so a rank keeps vocab / tp rows of each as model states while the logits and the loss see
the whole vocabulary. The rank's step is therefore read as two runs of the memory model, phase by
phase: the model states (weights, gradients, optimizer states) of the narrowed model with vocab /
tp, and the activations and temporaries of the narrowed model with the whole vocabulary, plus
one term of the engine's own: the row-parallel embedding's output exists three times through the
step (the rank's masked lookup, the all-reduce's output and its autograd wrapper, each (B, S,
d_model) in the weights' dtype), two more than a single process keeps (measured with PyTorch 2.13's
functional collectives; the row-parallel projections inside the blocks keep no such copies).

Pure Python (no torch). tests/distributed/test_parallel_training.py measures each rank's peak
(the live-storage tracker on the rank's local tensors) against this.
"""
from __future__ import annotations

from dataclasses import replace

from layerwise.cost.memory import training_memory
from layerwise.cost.precision import nbytes, policy
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload

STATES = ("weights", "master_weights", "gradients", "optimizer_states")
WORK = ("activations", "temporaries", "kv_cache")


def narrow_block(block, tp: int):
    """One tensor-parallel rank's transformer block: its heads and FFN hidden units split by tp
    (the projections keep their other fields: trainable, init)."""
    attn, ffn = block.attn, block.ffn
    for name, value in (("n_heads", attn.n_heads), ("n_kv_heads", attn.kv_heads), ("d_ff", getattr(ffn, "d_ff", 0))):
        if not value or value % tp:
            raise WorkloadError(f"--tp {tp} does not divide {name} = {value}")
    q, kv = attn.n_heads // tp * attn.head_dim, attn.kv_heads // tp * attn.head_dim
    attn = replace(attn, n_heads=attn.n_heads // tp, n_kv_heads=attn.kv_heads // tp, d_head=attn.head_dim,
                   q_proj=_linear(attn.q_proj, d_out=q), k_proj=_linear(attn.k_proj, d_out=kv),
                   v_proj=_linear(attn.v_proj, d_out=kv), o_proj=_linear(attn.o_proj, d_in=q))
    d_ff = ffn.d_ff // tp
    ffn = replace(ffn, d_ff=d_ff, up_proj=_linear(ffn.up_proj, d_out=d_ff), down_proj=_linear(ffn.down_proj, d_in=d_ff),
                  gate_proj=_linear(ffn.gate_proj, d_out=d_ff) if ffn.gate_proj is not None else None)
    return replace(block, attn=attn, ffn=ffn)


def _linear(proj, **dims):
    if proj.type_name != "linear":
        raise WorkloadError(f"tensor parallelism splits plain linear projections, not {proj.type_name}")
    return replace(proj, **dims)


def tp_rank_model(model: Model, tp: int, vocab_size: int) -> Model:
    body = model.body
    return replace(model, body=replace(body, block=narrow_block(body.block, tp), vocab_size=vocab_size))


def tp_rank_peak_bytes(model: Model, workload: Workload, tp: int) -> int:
    """Peak bytes of one tensor-parallel rank's training step (no sequence parallelism)."""
    if tp == 1:
        return training_memory(model, workload, cuda_allocator=False).peak_bytes
    vocab = model.body.vocab_size
    if vocab % tp:
        raise WorkloadError(f"--tp {tp} does not divide vocab_size = {vocab}")
    states = training_memory(tp_rank_model(model, tp, vocab // tp), workload, cuda_allocator=False).phases
    work = training_memory(tp_rank_model(model, tp, vocab), workload, cuda_allocator=False).phases
    if [(p.name, p.where) for p in states] != [(p.name, p.where) for p in work]:
        raise AssertionError("the two readings of a tensor-parallel rank must walk the same phases")
    b, seq = model.input_shape(workload.batch, workload.seq, None)
    embed_copies = 2 * b * seq * model.body.d_model * nbytes(1, policy(workload.precision).weights)
    return max(sum(getattr(s.components, f) for f in STATES) + sum(getattr(w.components, f) for f in WORK)
               + (embed_copies if s.name != "optimizer" else 0) for s, w in zip(states, work))
