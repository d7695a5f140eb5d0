"""`layerwise memory MODEL --explain`: the formulas people quote, next to layerwise's components,
with each difference named and sized. Pure Python; rendering in report/explain.py.

Model states: ZeRO's 16 bytes per parameter for mixed-precision Adam (Rajbhandari et al. 2020 §3.1,
refdata/memory_flops_facts.md §1a), the 18 of HF's docs and DeepSpeed's estimators (§2, §3), the 20
of fp16 + fp32 copies of weights and gradients plus two moments, and DeepSpeed's
estimate_zero2/estimate_zero3_model_states_mem_needs (cost/model_states.py) beside what PyTorch holds.

Activations: Korthikanti et al. 2022 Table 2, sbh(34 + 5as/h) bytes per layer (§4; cost/korthikanti.py)
beside layerwise's saved activations at the start of backward, first under the formula's own
assumptions (fp16, eager attention with dropout, CUDA's 1-byte masks, no parallelism; "textbook"),
then one setting at a time to the workload asked for, each step sized by the cost reading itself.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from layerwise.cost.korthikanti import korthikanti_layer_bytes
from layerwise.cost.model_states import deepspeed_zero2_estimate, deepspeed_zero3_estimate
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.spec.transform import map_tree
from layerwise.workload import Workload

# Where the textbook puts dropout: attention probabilities, each residual branch, the embeddings
# (Korthikanti §4.1's masks; GPT-2's attn_pdrop, resid_pdrop, embd_pdrop). Not inside the MLP.
TEXTBOOK_DROPOUT_BLOCKS = ("attention", "transformer_block", "decoder_lm", "encoder", "vit")
TEXTBOOK_DROPOUT = 0.1


@dataclass(frozen=True)
class Row:
    """One named quantity in bytes (`bytes` may be negative for a difference)."""

    name: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    model: str
    trainable_params: int
    textbook_states: tuple[Row, ...]  # bytes/param conventions and DeepSpeed's estimators
    states: tuple[Row, ...]  # layerwise's model states (per device) and optimizer.step() temporaries
    state_notes: tuple[Row, ...]  # the differences, named and sized
    korthikanti: tuple[Row, ...]  # the formula's terms summed over the layers (empty: does not apply)
    korthikanti_notes: tuple[str, ...]  # where the model departs from the formula's assumptions
    textbook_activations: tuple[Row, ...]  # layerwise under the textbook set-up: in the layers, outside
    steps: tuple[Row, ...]  # from the textbook set-up to the workload asked for, one setting at a time
    activations: int  # layerwise's saved activations at the start of backward, for the workload
    peak_phase: str  # where the workload's peak is (activations matter most at "backward")

    def to_json(self) -> dict:
        def rows(rs):
            return [{"name": r.name, "bytes": r.bytes, "note": r.note} for r in rs]

        return {"trainable_params": self.trainable_params, "textbook_states": rows(self.textbook_states),
                "states": rows(self.states), "state_notes": rows(self.state_notes),
                "korthikanti": rows(self.korthikanti), "korthikanti_notes": list(self.korthikanti_notes),
                "textbook_activations": rows(self.textbook_activations), "steps": rows(self.steps),
                "activations": self.activations, "peak_phase": self.peak_phase}


# ---- the textbook set-up ------------------------------------------------------------------------------
def textbook_model(model: Model, p: float = TEXTBOOK_DROPOUT) -> Model:
    """The model with dropout where Korthikanti counts it (attention probabilities, residual
    branches, embeddings)."""
    def fn(_path, node):
        if node.type_name in TEXTBOOK_DROPOUT_BLOCKS and any(f.name == "dropout" for f in fields(node)):
            return replace(node, dropout=p)
        return node

    return replace(model, body=map_tree(model.body, fn))


def textbook_workload(workload: Workload) -> Workload:
    """fp16 activations, eager attention, CUDA's 1-byte dropout masks, no recomputation, no
    parallelism or adapters; the batch, sequence and optimizer asked for."""
    return Workload(batch=workload.batch, seq=workload.seq, image=workload.image, precision="fp16",
                    optimizer=workload.optimizer, optimizer_impl=workload.optimizer_impl, attention="eager",
                    device="cuda")


def saved_activations(model: Model, workload: Workload) -> int:
    """layerwise's activations at the start of backward: every saved tensor and the input batch."""
    from layerwise.cost.memory import training_memory

    report = training_memory(model, workload, cuda_allocator=False)
    return next(p.components.activations for p in report.phases if p.name == "backward" and p.where == "start")


# ---- the pieces ------------------------------------------------------------------------------------------
def explain(model: Model, workload: Workload) -> Explanation:
    from layerwise.cost.memory import training_memory

    if workload.mode != "train":
        raise WorkloadError("--explain: the textbook terms describe a training step; drop --mode infer")
    report = training_memory(model, workload, cuda_allocator=False)
    trainable = _trainable(model, workload)
    opt = next(p for p in report.phases if p.name == "optimizer").components
    states = (Row("weights", opt.weights), Row("master_weights", opt.master_weights),
              Row("gradients", opt.gradients), Row("optimizer_states", opt.optimizer_states),
              Row("model states", opt.weights + opt.master_weights + opt.gradients + opt.optimizer_states),
              Row("optimizer.step() temporaries", opt.temporaries, f"{workload.impl} implementation"))
    korthikanti, k_notes = _korthikanti(model, workload)
    return Explanation(model.name, trainable, _textbook_states(model, workload, trainable), states,
                       _state_notes(model, workload, opt, trainable), korthikanti, k_notes,
                       _textbook_split(model, workload), tuple(_steps(model, workload)),
                       saved_activations(model, workload), report.peak_phase)


def _trainable(model: Model, workload: Workload) -> int:
    if workload.lora_rank:
        from layerwise.spec.lora import apply_lora

        model = apply_lora(model, workload.lora_rank)
    return model.params().trainable


def _largest_leaf_params(block) -> int:
    """DeepSpeed's largest_layer_params: the most parameters any one module holds itself."""
    kids = block.children()
    own = block.params().total if not kids else 0
    return max([own, *(_largest_leaf_params(child) for _, child in kids)])


def _textbook_states(model: Model, workload: Workload, n: int) -> tuple[Row, ...]:
    gpus = workload.dp
    z2 = deepspeed_zero2_estimate(n, num_gpus_per_node=gpus).gpu
    z3 = deepspeed_zero3_estimate(n, _largest_leaf_params(model.body), num_gpus_per_node=gpus).gpu
    return (
        Row("16 B/param (ZeRO §3.1)", 16 * n, "fp16 weights 2 + fp16 gradients 2 + fp32 master weights, "
            "momentum, variance 12 (Rajbhandari et al. 2020)"),
        Row("18 B/param (HF docs, DeepSpeed)", 18 * n, "+ fp32 gradients: fp16 weights 2 + fp32 weights 4 + "
            "gradients 4 + moments 8 ('18 = 2_grads_16bit + 4_grads_32bit + 4_params_32bit + 8_optimizer_states')"),
        Row("20 B/param", 20 * n, "fp16 weights and gradients 2 + 2, fp32 weights, gradients, momentum and "
            "variance 4 x 4"),
        Row(f"DeepSpeed estimate_zero2 ({gpus} GPU)", z2, "2P fp16 parameters + 18P / GPUs (no offload)"),
        Row(f"DeepSpeed estimate_zero3 ({gpus} GPU)", z3, "4 x largest layer's parameters + 18P / GPUs"),
    )


def _state_notes(model: Model, workload: Workload, opt, n: int) -> tuple[Row, ...]:
    from layerwise.cost.memory import _with_lora, trace_step
    from layerwise.cost.optimizers import state_bytes

    st = trace_step(_with_lora(model, workload), workload)
    per = lambda b: f"{b / n:.2f} B/param" if n else "-"  # noqa: E731
    states = opt.weights + opt.master_weights + opt.gradients + opt.optimizer_states
    optimizer = workload.optimizer if workload.optimizer != "adam-8bit" else "adam"
    steps = state_bytes(optimizer, [(1,)] * sum(1 for *_, t in st.trace.params.values() if t)).step
    return (
        Row(f"PyTorch {workload.precision} + torch.optim {workload.optimizer}", states,
            f"{per(states)}: weights {per(opt.weights)}, master {per(opt.master_weights)}, gradients "
            f"{per(opt.gradients)}, optimizer state {per(opt.optimizer_states)} (autocast keeps the weights and "
            f"their gradients in fp32 and no fp16 copy between steps; ZeRO's 16 keeps fp16 ones plus a master)"),
        Row("autocast weight copies", st.trace.cast_cache_bytes(),
            "low-precision copies of the weights, made in the forward and cached until backward: "
            "counted under activations, not model states"),
        Row("optimizer temporaries", opt.temporaries,
            f"optimizer.step() scratch ({workload.impl}): foreach makes full-size copies (sqrt of the second "
            f"moment: +4 B/param for AdamW), the for-loop one tensor at a time; the peak moves into the step "
            f"when activations are small"),
        Row("optimizer step scalars", steps, "one 4-byte `step` tensor per parameter tensor"),
    )


def _repeat(block, path: str = ""):
    """(path, repeat block) of the first repeated stack, or (None, None)."""
    if block.type_name == "repeat":
        return path, block
    for name, child in block.children():
        found = _repeat(child, f"{path}.{name}" if path else name)
        if found[1] is not None:
            return found
    return None, None


def _korthikanti(model: Model, workload: Workload) -> tuple[tuple[Row, ...], tuple[str, ...]]:
    """The formula's terms summed over the layers, at this batch and sequence (fp16 bytes)."""
    _, rep = _repeat(model.body)
    layer = getattr(rep, "block", None)
    attn, ffn = getattr(layer, "attn", None), getattr(layer, "ffn", None)
    if rep is None or layer.type_name != "transformer_block" or attn is None:
        return (), ("no stack of transformer layers: Korthikanti's formula does not apply",)
    shape = model.input_shape(workload.batch, workload.seq, workload.image)
    b, s = shape[0], shape[1]
    h, a, L = attn.d_model, attn.n_heads, rep.n_layers
    sbh = s * b * h
    rows = (Row("attention: 11·s·b·h", 11 * sbh * L, "QKV input, Q, K, V, output-projection input 2 sbh "
                "each, output dropout mask sbh"),
            Row("attention scores: 5·a·s²·b", 5 * a * s * s * b * L, "softmax output 2, its dropout mask 1, "
                "the dropped probabilities 2 (per score)"),
            Row("MLP: 19·s·b·h", 19 * sbh * L, "first linear's input 2, GeLU input 8, second linear's input 8, "
                "dropout mask 1"),
            Row("two LayerNorms: 4·s·b·h", 4 * sbh * L, "each norm's input"),
            Row(f"total: s·b·h·(34 + 5·a·s/h) x {L} layers", int(korthikanti_layer_bytes(s, b, h, a)) * L,
                f"s={s}, b={b}, h={h}, a={a}"))
    notes = []
    if ffn is not None and (getattr(ffn, "gated", False) or getattr(ffn, "d_ff", 4 * h) != 4 * h):
        notes.append(f"the formula assumes a 4h GeLU MLP; this one is {'gated, ' if ffn.gated else ''}"
                     f"d_ff = {ffn.d_ff} (= {ffn.d_ff / h:.2f} h)")
    if attn.kv_heads != a:
        notes.append(f"grouped-query attention: K and V have {attn.kv_heads} of {a} heads")
    if layer.norm != "layernorm":
        notes.append(f"{layer.norm} instead of LayerNorm")
    if getattr(layer, "parallel", False):
        notes.append("parallel attention and MLP share one norm")
    return rows, tuple(notes)


def _textbook_split(model: Model, workload: Workload) -> tuple[Row, ...]:
    """layerwise under the textbook set-up, split into the repeated layers and the rest."""
    from layerwise.cost.memory import trace_step

    m, w = textbook_model(model), textbook_workload(workload)
    total = saved_activations(m, w)
    path, rep = _repeat(m.body)
    if rep is None:
        return (Row("layerwise, textbook set-up", total, "fp16, eager attention, dropout 0.1, 1-byte masks"),)
    tr = trace_step(m, w).trace
    prefix = path + "."
    inside = sum(s.nbytes for s, step in tr.saved.values() if tr.steps[step].path.startswith(prefix))
    return (Row("layerwise, textbook set-up", total, "fp16, eager attention, dropout 0.1 with CUDA's 1-byte "
                "masks, no recomputation or parallelism"),
            Row(f"  in the {rep.n_layers} layers", inside, "per layer as the formula, plus each norm's mean and "
                "1/std and the causal mask"),
            Row("  outside the layers", total - inside, "input ids and targets, embeddings, final norm, "
                "logits and the saved log-softmax"))


def _steps(model: Model, workload: Workload):
    """From the textbook set-up to `workload`, one setting at a time, each change sized."""
    m, w = textbook_model(model), textbook_workload(workload)
    before = saved_activations(m, w)
    changes = [
        ("dropout as configured", lambda m_, w_: (model, w_), _dropout_note(model)),
        (f"checkpointing {workload.checkpointing}", lambda m_, w_: (m_, w_.with_(checkpointing=workload.checkpointing)),
         "full: each layer keeps its input only; selective: the attention core (its s² tensors) is "
         "recomputed in backward"),
        (f"{workload.attention} attention", lambda m_, w_: (m_, w_.with_(attention=workload.attention)),
         "sdpa saves its output and the log-sum-exp, not the s x s scores, probabilities, mask and dropped "
         "probabilities (the 5·a·s²·b term); on CPU with dropout it takes the math path and keeps them"),
        (f"precision {workload.precision}", lambda m_, w_: (m_, w_.with_(precision=workload.precision)), None),
        (f"device {workload.device}", lambda m_, w_: (m_, w_.with_(device=workload.device)),
         "CPU's dropout keeps a mask in the activation's dtype; CUDA's is 1 byte"),
        ("other settings", lambda m_, w_: (model, workload), "LoRA adapters, gradient accumulation, parallelism"),
    ]
    yield Row("textbook set-up", before, "fp16, eager attention, dropout 0.1 with 1-byte masks")
    for name, change, note in changes:
        m2, w2 = change(m, w)
        after = saved_activations(m2, w2)
        if after != before or (m2, w2) != (m, w):
            if note is None:
                yield from _precision_rows(name, m, w, m2, w2, after - before)
            elif after != before:
                yield Row(name, after - before, note)
        m, w, before = m2, w2, after
    yield Row("this workload", before, "layerwise's saved activations at the start of backward")


def _dropout_note(model: Model) -> str:
    ps = set()

    def fn(_path, node):
        if node.type_name in TEXTBOOK_DROPOUT_BLOCKS and any(f.name == "dropout" for f in fields(node)):
            ps.add(node.dropout)
        return node

    map_tree(model.body, fn)
    if not any(ps):
        return "the model has no dropout: no masks and no dropped copies are saved"
    return f"dropout p = {', '.join(str(p) for p in sorted(ps))} where the model has it"


def _precision_rows(name: str, m, w, m2, w2, delta: int):
    """A precision change, split: autocast's saved weight copies, the fp32 log-softmax of the loss,
    and the rest (activations in another dtype; norms and softmax kept in fp32 under autocast)."""
    from layerwise.cost.memory import trace_step

    a, b = trace_step(m, w), trace_step(m2, w2)
    casts = _saved_casts(b.trace) - _saved_casts(a.trace)
    logits = b.log_softmax - a.log_softmax
    if casts:
        yield Row(f"{name}: autocast weight copies", casts, "low-precision copies of the weights saved for backward")
    if logits:
        yield Row(f"{name}: fp32 log-softmax", logits, "the loss's saved log-softmax in fp32, 4 bytes per logit "
                  "(autocast runs it in fp32; an fp32 model has fp32 logits)")
    if delta - casts - logits:
        yield Row(f"{name}: activation dtypes", delta - casts - logits,
                  "activations in the new dtype (fp32: 4 bytes); autocast keeps norms' and softmax outputs in fp32")


def _saved_casts(tr) -> int:
    return sum(s.nbytes for s, _ in tr.saved.values() if s.kind == "cast")
