"""Saved tensors of the basic leaves, as PyTorch 2.x (CPU kernels) saves them. Shapes in comments;
R = rows = numel / last dim. Checked block by block in tests/cost/test_activations.py."""
from __future__ import annotations

from layerwise.cost.act_trace import T, Trace, nbytes, promote
from layerwise.cost.activations import act
from layerwise.spec.shapes import prod


def sizes(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def linear_op(tr: Trace, x: T, d_in: int, d_out: int, bias: bool, trainable: bool, prefix: str = "") -> T:
    """addmm/matmul on x (..., d_in): saves x (autocast: its low copy) if the weight trains, the
    weight (autocast: its cached low copy) if x needs grad."""
    w = tr.param(prefix + "weight", d_in * d_out, trainable, (d_out, d_in))
    if bias:
        tr.param(prefix + "bias", d_out, trainable)
    return tr.mm(x, w, (*x.shape[:-1], d_out), b_key=tr.key(prefix + "weight"))


@act("linear")
def _linear(b, tr: Trace, x: T) -> T:
    tr.begin()
    return linear_op(tr, x, b.d_in, b.d_out, b.bias, b.trainable)


@act("embedding")
def _embedding(b, tr: Trace, x: T) -> T:
    tr.begin()
    tr.param("weight", b.vocab_size * b.d_model, b.trainable)
    out = tr.new((*x.shape, b.d_model), tr.policy.dtype, b.trainable)
    if out.grad:
        tr.save(x)  # embedding_backward needs the ids (int64, B*S*8 bytes)
    return out


def _add_param(b, tr: Trace, x: T, numel: int) -> T:
    """x + a slice of a parameter: add saves nothing."""
    tr.begin()
    w = tr.param("weight", numel, b.trainable)
    return tr.pointwise(x, w)


@act("learned_positions")
def _learned(b, tr, x):
    return _add_param(b, tr, x, b.max_seq * b.d_model)


@act("token_type")
def _token_type(b, tr, x):
    return _add_param(b, tr, x, b.type_vocab_size * b.d_model)


@act("sinusoidal_positions")
def _sinusoid(b, tr: Trace, x: T) -> T:
    tr.begin()
    return tr.pointwise(x)  # x + table (the table is cast to x's dtype; it needs no grad)


@act("cls_token")
def _cls(b, tr: Trace, x: T) -> T:
    tr.begin()
    w = tr.param("weight", b.d_model, b.trainable)
    bsz, s, d = x.shape
    return tr.new((bsz, s + 1, d), promote(x.dtype, w.dtype), x.grad or w.grad)  # cat saves nothing


@act("select_token")
def _select(b, tr: Trace, x: T) -> T:
    tr.begin()
    if b.index == "mean":
        return tr.new((x.shape[0], x.shape[2]), x.dtype, x.grad)  # mean saves nothing
    return tr.view(x, (x.shape[0], x.shape[2]))  # x[:, i] is a view


@act("patch_embedding")
def _patch(b, tr: Trace, x: T) -> T:
    tr.begin("")
    tr.path.append("proj")
    try:
        bsz, c, h, w = x.shape
        ph, pw = sizes(b.patch, 2)
        n = (h // ph) * (w // pw)
        if b.kind == "conv":
            wt = tr.param("weight", b.d_model * c * ph * pw, b.trainable, (b.d_model, c, ph, pw))
            if b.bias:
                tr.param("bias", b.d_model, b.trainable)
            out = tr.mm(x, wt, (bsz, b.d_model, h // ph, w // pw), b_key=tr.key("weight"), conv=True)
            return tr.view(out, (bsz, n, b.d_model))  # flatten(2).transpose(1, 2): a view
        patches = tr.new((bsz, n, c * ph * pw), x.dtype, x.grad)  # reshape of a permute: a copy
        return linear_op(tr, patches, c * ph * pw, b.d_model, b.bias, b.trainable)
    finally:
        tr.path.pop()


def _conv_out(b, shape, nd):
    k, s, p, d = (sizes(getattr(b, f), nd) for f in ("kernel", "stride", "padding", "dilation"))
    spatial = tuple((shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd))
    return k, spatial


@act("conv1d", "conv2d")
def _conv(b, tr: Trace, x: T) -> T:
    tr.begin()
    nd = 1 if b.type_name == "conv1d" else 2
    k, spatial = _conv_out(b, x.shape, nd)
    w = tr.param("weight", b.c_out * (b.c_in // b.groups) * prod(k), b.trainable)
    if b.bias:
        tr.param("bias", b.c_out, b.trainable)
    return tr.mm(x, w, (x.shape[0], b.c_out, *spatial), b_key=tr.key("weight"), conv=True)


@act("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d")
def _pool(b, tr: Trace, x: T) -> T:
    tr.begin()
    nd = 1 if b.type_name.endswith("1d") else 2
    k = sizes(b.kernel, nd)
    s = sizes(b.stride if b.stride is not None else b.kernel, nd)
    p = sizes(b.padding, nd)
    spatial = tuple((x.shape[2 + i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(nd))
    out = tr.new((*x.shape[:2], *spatial), x.dtype, x.grad)
    if out.grad:
        tr.save(x)  # both backward kernels read the input
        if b.type_name.startswith("max"):
            tr.save(tr.new(out.shape, "int64", False))  # argmax indices, int64 like the output
    elif b.type_name.startswith("max"):  # no grad: the CPU max_pool2d still runs
        # max_pool2d_with_indices and drops the int64 indices on return (torch.profiler, torch 2.13)
        indices = tr.new(out.shape, "int64", False)
        del indices
    return out


@act("adaptive_avgpool1d", "adaptive_avgpool2d")
def _adaptive(b, tr: Trace, x: T) -> T:
    tr.begin()
    nd = 1 if b.type_name.endswith("1d") else 2
    o = sizes(b.output_size, nd)
    out = tr.new((*x.shape[:2], *o), x.dtype, x.grad)
    if out.grad and any(v != 1 for v in o):
        tr.save(x)  # output 1 (x 1) is x.mean(...), which saves nothing
    return out


@act("flatten")
def _flatten(b, tr: Trace, x: T) -> T:
    tr.begin()
    return tr.view(x, (*x.shape[: b.start_dim], prod(x.shape[b.start_dim:])))


def dropout_op(tr: Trace, x: T, p: float) -> T:
    """CPU: x * (bernoulli mask / (1-p)), the mask in x's dtype is saved; CUDA (or emulated):
    native_dropout's 1-byte bool mask. p == 0 returns x itself."""
    if p == 0 or not tr.policy.grad:
        return x
    mask_dtype = "bool" if tr.policy.dropout_mask_bytes == 1 else x.dtype
    mask = tr.new(x.shape, mask_dtype, False)
    out = tr.pointwise(x, dtype=x.dtype)
    if x.grad:
        tr.save(mask)
    return out


@act("dropout")
def _dropout(b, tr: Trace, x: T) -> T:
    tr.begin()
    return dropout_op(tr, x, b.p)


@act("batchnorm1d", "batchnorm2d")
def _batchnorm(b, tr: Trace, x: T) -> T:
    tr.begin()
    if b.affine:
        tr.param("weight", b.n_features, b.trainable)
        tr.param("bias", b.n_features, b.trainable)
    tr.buffers += 2 * b.n_features * 4 + 8  # running_mean, running_var (fp32), num_batches_tracked (int64)
    out = tr.new(x.shape, x.dtype, x.grad or (b.affine and b.trainable))
    stat = "fp32" if x.dtype == "fp32" or tr.policy.dtype == "fp32" else x.dtype  # pure half: half stats
    if out.grad:  # input, save_mean (C,), save_invstd (C,)
        tr.save(x, tr.new((b.n_features,), stat, False), tr.new((b.n_features,), stat, False))
    return out


def layernorm_op(tr: Trace, x: T, d: int, trainable: bool, bias: bool, prefix: str = "") -> T:
    """native_layer_norm saves the input and mean, rstd (R, 1) in fp32 (x's dtype if x is low and
    the weight is low too, i.e. a pure-bf16 model). CUDA autocast runs layer_norm in fp32."""
    tr.param(prefix + "weight", d, trainable)
    if bias:
        tr.param(prefix + "bias", d, trainable)
    if tr.policy.autocast is not None and tr.policy.autocast_device == "cuda" and x.dtype != "fp32":
        x = tr.new(x.shape, "fp32", x.grad)
    rows = x.numel // d
    stat = "fp32" if x.dtype == "fp32" or tr.policy.dtype == "fp32" else x.dtype
    out = tr.new(x.shape, x.dtype, x.grad or trainable)
    if out.grad:
        tr.save(x, tr.new((rows, 1), stat, False), tr.new((rows, 1), stat, False))
    return out


def rmsnorm_op(tr: Trace, x: T, d: int, trainable: bool, prefix: str = "") -> T:
    """torch.rms_norm (CPU): computes in fp32; saves x (an fp32 upcast if x is low precision),
    rstd (R, 1) fp32, and, only when the weight trains, x * rstd (fp32, x's shape) for the
    weight's gradient (a frozen norm under LoRA keeps no x * rstd: measured in tests/cost)."""
    w = tr.param(prefix + "weight", d, trainable)
    # --impl hf, LlamaRMSNorm in Python ops: weight * normed.to(input_dtype) saves the normalised x
    # in x's dtype and promotes the result to the weight's fp32 (low only for Qwen3's q/k norms)
    python = tr.policy.hf is not None and tr.policy.hf.llama_rmsnorm
    if not (x.grad or w.grad) and not python:
        return _rmsnorm_no_grad(tr, x, d)
    out = tr.new(x.shape, "fp32" if python else x.dtype, x.grad or w.grad)
    if out.grad:
        src = x if x.dtype == "fp32" else tr.new(x.shape, "fp32", x.grad)
        rstd = tr.new((x.numel // d, 1), "fp32", False)
        tr.save(src, rstd)
        normed = tr.new(x.shape, x.dtype if python else "fp32", False) if w.grad else None
        if normed is not None:
            tr.save(normed)
        if x.grad and tr.policy.hf is None:  # rstd and x * rstd (kept for the weight's gradient) are
            # freed by then: their nodes (rsqrt, the products) ran before pow's
            tr.steps[-1].inner = RMS_BACKWARD_FP32_COPIES * nbytes(x.numel, "fp32")
            tr.steps[-1].early = rstd.storage.nbytes + (normed.storage.nbytes if normed is not None else 0)
    return out


def _rmsnorm_no_grad(tr: Trace, x: T, d: int) -> T:
    """Without grad (inference) torch.rms_norm runs as its composite (aten rms_norm, in fp32):
    upcast = x.to(fp32); rstd = rsqrt(upcast.pow(2).mean(-1, keepdim).add_(eps)), the pow and mean
    dying after it; upcast * rstd, then times the weight (the first product dies), then
    .type_as(x). Most alive: the upcast, both products and rstd (measured op by op)."""
    rows = x.numel // d
    up = x if x.dtype == "fp32" else tr.new(x.shape, "fp32", False)
    sq, ms = tr.new(x.shape, "fp32", False), tr.new((rows, 1), "fp32", False)
    rstd = tr.new((rows, 1), "fp32", False)
    del sq, ms
    normed = tr.new(x.shape, "fp32", False)
    scaled = tr.new(x.shape, "fp32", False)  # * weight
    del normed, up
    out = scaled if x.dtype == "fp32" else tr.new(x.shape, x.dtype, False)
    del rstd, scaled
    return out


# torch.rms_norm's backward runs its composite's ops (aten/src/ATen/native/layer_norm.cpp
# rms_norm_symint: x.float(), pow(2).mean(-1) + eps, rsqrt, mul): at pow's backward the gradient
# through x * rstd (waiting to be added), mean's expanded one, x^1, 2 x^1 and their product are
# five fp32 tensors of x's size alive at once (traced op by op on torch 2.13, CPU)
RMS_BACKWARD_FP32_COPIES = 5


@act("layernorm")
def _layernorm(b, tr: Trace, x: T) -> T:
    tr.begin()
    return layernorm_op(tr, x, b.d_model, b.trainable, b.bias)


@act("rmsnorm")
def _rmsnorm(b, tr: Trace, x: T) -> T:
    tr.begin()
    return rmsnorm_op(tr, x, b.d_model, b.trainable)


SAVES_OUTPUT = {"relu", "sigmoid", "tanh", "softmax"}  # derivatives.yaml: these save `result`


def activation_op(tr: Trace, x: T, kind: str) -> T:
    if kind == "gelu_tanh" and tr.policy.hf is not None and tr.policy.hf.python_gelu:
        from layerwise.cost.act_hf import python_gelu  # --impl hf: NewGELUActivation

        return python_gelu(tr, x)
    if kind == "quick_gelu":  # x * sigmoid(1.702 x): sigmoid saves its result, the mul both factors
        sig = tr.new(x.shape, x.dtype, x.grad)
        if x.grad:
            tr.save(x, sig)
        return tr.new(x.shape, x.dtype, x.grad)
    out = tr.new(x.shape, x.dtype, x.grad)
    if out.grad:
        tr.save(out if kind in SAVES_OUTPUT else x)  # gelu, silu, leaky_relu save `self`
    return out


@act("activation")
def _activation(b, tr: Trace, x: T) -> T:
    tr.begin()
    return activation_op(tr, x, b.kind)
