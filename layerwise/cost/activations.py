"""Saved activations per block: the bytes autograd keeps for backward when a block's built module
runs forward. Pure Python (no torch).

Convention. Each block type has a function in `ACT` keyed by its type_name:

    fn(block, tr: Trace, x: T) -> T

It runs the block *symbolically* on the input tensor `x` (cost/act_trace.py): it creates the
tensors the module's forward creates, marks the ones autograd saves (`tr.save`, or implicitly
through `tr.mm` for matmul/linear/conv), and returns the output tensor. Composites call their
children through `run(child, name, tr, x)` in the module's own dataflow, so a tensor read by
several consumers is one storage and is counted once. A composite with no function of its own is
run as a chain of its `trace()` children (sequential, repeat, encoder, vit, resnet).

The leaf functions live in cost/act_leaves.py, cost/act_seq.py (attention, ffn, moe, lora) and
cost/act_rnn.py (rnn, gru, lstm); the composites' dataflow in cost/act_composites.py (residual, repeat with checkpointing,
transformer_block, decoder_lm's tied head, ResNet blocks). Every number is tested against
`torch.autograd.graph.saved_tensors_hooks` on the built module (tests/cost/test_activations*.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from layerwise.cost.act_trace import ActPolicy, T, Trace
from layerwise.spec.base import Block, Shape
from layerwise.spec.errors import LayerwiseError

ACT: dict[str, Callable[[Block, Trace, T], T]] = {}


def act(*type_names: str):
    """Decorator: the activation function of these block types."""

    def deco(fn):
        for name in type_names:
            ACT[name] = fn
        return fn

    return deco


def run(block: Block, name: str, tr: Trace, x: T) -> T:
    """Run a child block under its path segment `name`."""
    if name:
        tr.path.append(name)
    try:
        fn = ACT.get(block.type_name)
        if fn is not None:
            n = len(tr.steps)
            out = fn(block, tr, x)
            for step in tr.steps[n:]:  # inner blocks named their own steps first
                step.op = step.op or block.type_name
            if len(tr.steps) == n + 1:  # a leaf: one step
                # a gradient exists only for a tensor that requires grad (LoRA: a frozen layer fed
                # by frozen layers has none)
                tr.steps[-1].io = (x.storage.nbytes if x.grad and x.dtype != "int64" else 0,
                                   out.storage.nbytes if out.grad else 0)
            return out
        kids = block.runs(x.shape)
        if not kids:
            raise LayerwiseError(f"{'.'.join(tr.path) or block.type_name}: no activation model for block type "
                                 f"{block.type_name!r} (layerwise/cost/activations.py)")
        for names, child, _ in kids:  # a run of equal copies: three traced, the rest lumped
            x = run_copies(tr, len(names), lambda i, t, names=names, child=child: run(child, names[i], tr, t), x,
                           names.__getitem__)
        return x
    finally:
        if name:
            tr.path.pop()


# A chain of more equal copies than this runs its first two and its last copy and stands the others
# in by one lump (Trace.lump), so 80 or 10**6 layers cost three.
LUMP_OVER = 4


def run_copies(tr: Trace, n: int, body, state, name: Callable[[int], str]):
    """`state = body(i, state)` for i in range(n), copy i named `name(i)` under the current path;
    the copies must be equal and their states alike (a repeat's layers, a MoE's equal experts)."""
    if n <= LUMP_OVER or not tr.lumping:
        for i in range(n):
            state = body(i, state)
        return state
    state = body(0, state)
    mark = tr.mark()
    state = body(1, state)
    here = ".".join(tr.path)
    full = (lambda i: f"{here}.{name(i)}") if here else name
    last = name(n - 2).rsplit(".", 1)[-1]
    if tr.lump(mark, n - 3, full(1), f"{full(2)}-{last}"):
        return body(n - 1, state)
    for i in range(2, n):
        state = body(i, state)
    return state


def run_outputs(tr: Trace, n: int, body, name: Callable[[int], str]) -> list[T]:
    """[body(i) for i in range(n)], the outputs all held by the caller: n equal copies on the same
    input (a MoE's experts on their capacity buffers); lumped as run_copies, the lumped copies'
    outputs standing as one tensor of their bytes."""
    if n <= LUMP_OVER or not tr.lumping:
        return [body(i) for i in range(n)]
    outs = [body(0)]
    mark = tr.mark()
    outs.append(body(1))
    here = ".".join(tr.path)
    full = (lambda i: f"{here}.{name(i)}") if here else name
    last = name(n - 2).rsplit(".", 1)[-1]
    held = tr.lump(mark, n - 3, full(1), f"{full(2)}-{last}", kept=outs[1].storage.nbytes)
    if held:
        y = outs[1]
        return [*outs, T(y.shape, y.dtype, y.grad, held), body(n - 1)]
    return [*outs, *(body(i) for i in range(2, n))]


@dataclass(frozen=True)
class BlockActs:
    """One block's forward on one input. `saved`: unique bytes autograd keeps (the input too if it
    is saved, autocast weight copies if saved); `casts`: autocast's cached weight copies (saved or
    not); `out_bytes`: the output tensor."""

    saved: int
    casts: int
    out_bytes: int
    trace: Trace


def input_tensor(tr: Trace, in_shape: Shape, *, tokens: bool, grad: bool) -> T:
    dtype = "int64" if tokens else tr.policy.dtype
    return tr.input(tuple(in_shape), dtype, grad and not tokens)


def activations(block: Block, in_shape: Shape, policy: ActPolicy = ActPolicy(), *, tokens: bool = False,
                input_grad: bool = True) -> BlockActs:
    """Saved bytes of `block` run once on a (B, ...) input. `tokens`: the input is int64 ids;
    `input_grad`: a float input that requires grad (an intermediate of a bigger model)."""
    import layerwise.cost.act_composites  # noqa: F401  (registers the functions)
    import layerwise.cost.act_leaves  # noqa: F401
    import layerwise.cost.act_seq  # noqa: F401
    import layerwise.cost.act_seq2seq  # noqa: F401
    import layerwise.cost.act_mamba  # noqa: F401
    import layerwise.cost.act_mla  # noqa: F401

    tr = Trace(policy)
    x = input_tensor(tr, in_shape, tokens=tokens, grad=input_grad)
    x.storage.kind = "act"  # a block's input in a model is an activation of the block before
    out = run(block, "", tr, x)
    return BlockActs(tr.saved_bytes(), tr.cast_cache_bytes(), out.storage.nbytes, tr)
