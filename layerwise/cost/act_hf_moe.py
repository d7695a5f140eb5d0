"""`--impl hf`: the MoE layer of transformers 5.23 (Mixtral, Qwen2-MoE, Qwen3-MoE), op by op.
Legend: T tokens, k top_k, P = T * k (token, expert) pairs, E experts, F expert width, d d_model.

Read from models/mixtral/modeling_mixtral.py (MixtralTopKRouter, MixtralSparseMoeBlock),
models/qwen2_moe/modeling_qwen2_moe.py (Qwen2MoeTopKRouter, the shared expert and its sigmoid gate)
and integrations/moe.py `grouped_mm_experts_forward`, the experts' default implementation:
  router    F.linear(x, weight) (autocast: low logits), softmax in fp32 (Mixtral: of logits.float()),
            topk, `/= sum` in place (Mixtral; Qwen: when norm_topk_prob), Qwen: `.to(logits.dtype)`
  experts   the pairs sorted by expert; x[perm // k] gathered (P, d); one grouped matmul with the
            stacked gate_up_proj (E, 2F, d), act(gate) * up, one with down_proj (E, d, F), times the
            routing weights, un-permuted, summed over k. torch._grouped_mm is not autocast-enabled and
            transformers casts its input to the weights' dtype: the experts run in fp32 under autocast.
The parameters are HF's: two stacked (E, ., .) tensors a layer, not one Linear per expert (the
for-loop optimizer's temporaries follow the largest tensor).
"""
from __future__ import annotations

from layerwise.cost.act_trace import T, Trace, promote
from layerwise.cost.precision import nbytes
from layerwise.cost.act_leaves import activation_op
from layerwise.cost.act_moe import gate_shared
from layerwise.cost.activations import run


def moe(b, tr: Trace, x: T, *, renormalise: bool, float_logits: bool) -> T:
    """MixtralSparseMoeBlock / Qwen2MoeSparseMoeBlock.forward on x (B, S, d)."""
    d = x.shape[-1]
    rows = x.numel // d
    flat = tr.view(x, (rows, d))
    if tr.policy.hf.moe in ("deepseek_v2", "deepseek_v3"):
        return _deepseek(b, tr, x, flat)
    shared = None
    if b.shared_expert is not None:  # Qwen2-MoE runs its shared expert first, on every token
        shared = run(b.shared_expert, "shared_expert", tr, flat)
    weights, pairs = _route(b, tr, flat, renormalise, float_logits)
    out = _experts(b, tr, flat, weights, pairs)
    if shared is not None:
        shared = gate_shared(b, tr, flat, shared)
        tr.begin(".shared_add")
        out = tr.pointwise(out, shared)
    return tr.view(out, x.shape)


def _route(b, tr: Trace, flat: T, renormalise: bool, float_logits: bool) -> tuple[T, int]:
    """The router: (T, k) routing weights (fp32 for Mixtral, the logits' dtype for Qwen)."""
    rows, k = flat.shape[0], b.top_k
    logits = run(b.router, "router", tr, flat)
    tr.begin(".route")
    grad = logits.grad
    if float_logits and logits.dtype != "fp32":  # router_logits.float()
        logits = tr.new(logits.shape, "fp32", grad)
    probs = tr.new(logits.shape, "fp32", grad)
    tr.save(probs)  # softmax saves its result
    del logits
    top = tr.new((rows, k), "fp32", grad)
    tr.save(tr.new((rows, k), "int64", False))  # topk backward: the indices
    del probs
    if renormalise:  # top /= top.sum(): the in-place div saves the divisor and a copy of top
        total = tr.new((rows, 1), "fp32", grad)
        tr.save(total, tr.new(top.shape, "fp32", False))
    if not float_logits and tr.policy.autocast:  # Qwen: .to(router_logits.dtype)
        top = tr.new(top.shape, tr.policy.autocast, grad)
    return top, rows * k


def _deepseek(b, tr: Trace, x: T, flat: T) -> T:
    """DeepseekV2Moe / DeepseekV3MoE.forward: the router, the grouped experts, then the shared
    experts on the layer's input (residuals), added."""
    weights, pairs = _route_deepseek(b, tr, flat)
    out = tr.view(_experts(b, tr, flat, weights, pairs), x.shape)
    del weights
    shared = run(b.shared_expert, "shared_expert", tr, x)
    tr.begin(".shared_add")
    return tr.pointwise(out, shared)


def _route_deepseek(b, tr: Trace, flat: T) -> tuple[T, int]:
    """DeepseekV2TopkRouter: F.linear(x.float(), weight.float()) (autocast: low logits), softmax in
    fp32 (saved), topk (indices saved), times routed_scaling_factor (a new tensor, whatever the
    factor). DeepseekV3TopkRouter: sigmoid (saves its output, in the logits' dtype), plus the fp32
    e_score_correction_bias (a buffer) for the choice, the weights gathered from the sigmoid (indices
    saved), divided in place by their sum when norm_topk_prob, times routed_scaling_factor."""
    rows, k = flat.shape[0], b.top_k
    logits = run(b.router, "router", tr, flat)
    tr.begin(".route")
    grad = logits.grad
    if b.scoring == "sigmoid":
        tr.buffers += nbytes(b.n_experts, tr.policy.dtype)
        scores = tr.new(logits.shape, logits.dtype, grad)
        tr.save(scores)
        choice = tr.new(logits.shape, "fp32", False)  # + bias; the masked copy, then topk indices
        masked = tr.new(logits.shape, "fp32", False)
        del choice, masked
        top = tr.new((rows, k), scores.dtype, grad)  # gather
        tr.save(tr.new((rows, k), "int64", False))
        if b.norm_topk:  # topk_weights /= denominator: the in-place div saves the divisor and a copy
            total = tr.new((rows, 1), top.dtype, grad)
            tr.save(total, tr.new(top.shape, top.dtype, False))
    else:
        probs = tr.new(logits.shape, "fp32", grad)
        tr.save(probs)
        top = tr.new((rows, k), "fp32", grad)
        tr.save(tr.new((rows, k), "int64", False))
        del probs
    del logits
    return tr.new(top.shape, top.dtype, grad), rows * k  # * routed_scaling_factor


def _experts(b, tr: Trace, flat: T, weights: T, pairs: int) -> T:
    """grouped_mm_experts_forward: every tensor below has P rows, in the weights' dtype. A step's
    `io`: the gradients its backward holds at once (act(gate) * up: both factors' and the output's)."""
    tr.begin(".experts.gather")
    rows, d = flat.shape
    f, train = b.d_ff, b.params().trainable > 0
    dtype = tr.policy.dtype  # input.to(weight.dtype): fp32 masters under autocast
    grad = flat.grad or (train and tr.policy.grad)
    order = [tr.new((pairs,), "int64", False) for _ in range(2)]  # torch.sort: expert ids, perm
    src = tr.new((pairs,), "int64", False)  # perm // k
    picked = tr.new((pairs, d), flat.dtype, flat.grad)  # x[perm // k]
    tr.save(src)  # index backward: the indices
    sample = tr.new((pairs,), weights.dtype, weights.grad)  # weights.reshape(-1)[perm]
    tr.save(order[1])
    del order
    if picked.dtype != dtype:
        picked = tr.new(picked.shape, dtype, picked.grad)
    tr.begin(".experts.gate_up_proj")
    gate_up = tr.param("experts.gate_up_proj", b.n_experts * 2 * f * d, train, (b.n_experts, 2 * f, d))
    proj = tr.new((pairs, 2 * f), dtype, grad)  # (P, 2F)
    tr.save(picked, gate_up)
    tr.steps[-1].io = (picked.storage.nbytes if picked.grad else 0, proj.storage.nbytes)  # its gradients
    del picked
    tr.begin(".experts.act")
    act = activation_op(tr, T((pairs, f), dtype, grad, proj.storage), b.activation)  # saves the gate view
    hid = tr.new((pairs, f), dtype, grad)  # act(gate) * up saves both
    tr.save(act, T((pairs, f), dtype, grad, proj.storage))
    tr.steps[-1].io = (2 * hid.storage.nbytes, hid.storage.nbytes)
    del act, proj
    tr.begin(".experts.down_proj")
    down = tr.param("experts.down_proj", b.n_experts * d * f, train, (b.n_experts, d, f))
    out = tr.new((pairs, d), dtype, grad)
    tr.save(hid, down)
    tr.steps[-1].io = (hid.storage.nbytes, out.storage.nbytes)
    del hid
    tr.begin(".experts.combine")
    weighted = tr.new((pairs, d), promote(dtype, sample.dtype), grad or sample.grad)
    tr.save(out, sample)  # proj_out * sample_weights: mul saves both
    del out, sample
    inv = [tr.new((pairs,), "int64", False) for _ in range(2)]  # inv_perm, arange
    back = tr.new((pairs, d), weighted.dtype, weighted.grad)  # weighted[inv_perm]
    tr.save(inv[0])
    del weighted, inv
    summed = tr.new((rows, d), back.dtype, back.grad)  # .view(T, k, d).sum(1)
    del back
    return summed if summed.dtype == flat.dtype else tr.new(summed.shape, flat.dtype, summed.grad)
