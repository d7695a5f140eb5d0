"""What a measured step is made of: the optimizer, the precision, checkpoint wrappers, inputs, loss.

Each function turns one workload setting into torch objects, and raises WorkloadError (naming the
flag) for a setting the measure reading cannot run.
"""
from __future__ import annotations

import contextlib
import inspect
from functools import wraps

import torch
from torch import nn
from torch.nn import functional as F

from layerwise.spec.errors import WorkloadError
from layerwise.workload import Workload

PURE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIXED_DTYPES = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}
LR = 1e-3  # any value: the learning rate never changes which tensors exist


# ---- optimizer --------------------------------------------------------------------------------
def _optimizer_class(name: str):
    table = {
        "sgd": (torch.optim.SGD, {}),
        "sgd-momentum": (torch.optim.SGD, {"momentum": 0.9}),
        "adagrad": (torch.optim.Adagrad, {}),
        "rmsprop": (torch.optim.RMSprop, {}),
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
    }
    if name in table:
        return table[name]
    if name == "adafactor":
        if not hasattr(torch.optim, "Adafactor"):
            raise WorkloadError(f"--optimizer adafactor needs torch >= 2.5 (torch.optim.Adafactor); this is torch {torch.__version__}")
        return torch.optim.Adafactor, {}
    if name == "lion":
        try:
            from lion_pytorch import Lion  # the reference implementation (lucidrains/lion-pytorch)
        except ImportError:
            raise WorkloadError("--optimizer lion: torch.optim has no Lion and the lion-pytorch package "
                                "is not installed; use the cost reading (`layerwise memory`) for Lion") from None
        return Lion, {}
    if name == "adam-8bit":  # bitsandbytes' state layout in plain torch (its update is a CUDA kernel)
        from layerwise.train.adam8bit import Adam8bit

        return Adam8bit, {}
    raise WorkloadError(f"--optimizer {name}: the measure reading cannot run it; use `layerwise memory`")


def make_optimizer(params, workload: Workload) -> torch.optim.Optimizer:
    """The workload's optimizer with its implementation pinned (loop | foreach | fused)."""
    cls, kwargs = _optimizer_class(workload.optimizer)
    accepted = inspect.signature(cls).parameters
    impl = workload.impl
    if impl == "fused":
        if "fused" not in accepted:
            raise WorkloadError(f"--optimizer-impl fused: {cls.__name__} has no fused implementation "
                                f"(use loop or foreach)")
        kwargs.update(fused=True, foreach=False)
    elif "foreach" in accepted:
        kwargs["foreach"] = impl == "foreach"
        if "fused" in accepted:
            kwargs["fused"] = False
    elif impl != "loop":
        raise WorkloadError(f"--optimizer-impl {impl}: {cls.__name__} only has a for-loop implementation")
    return cls(params, lr=LR, **kwargs)


# ---- precision --------------------------------------------------------------------------------
def apply_precision(module: nn.Module, workload: Workload) -> None:
    """Pure low precision casts the whole module; mixed precision leaves it fp32."""
    if workload.precision in PURE_DTYPES and workload.precision != "fp32":
        cast_floating(module, PURE_DTYPES[workload.precision])


def cast_floating(module: nn.Module, dtype: torch.dtype) -> None:
    """`module.to(dtype)` done by replacing each floating parameter/buffer (tied ones once).

    module.to() swaps tensors in place for tensor subclasses, which FakeTensors refuse once a
    weakref points at them; replacing the entries works alike for real and fake tensors."""
    memo: dict[int, torch.Tensor] = {}

    def cast(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            new = t.detach().to(dtype)
            memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
        return memo[id(t)]

    with torch.no_grad():
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for name, t in list(table.items()):
                    if t is not None and t.is_floating_point():
                        table[name] = cast(t)


def input_dtype(workload: Workload) -> torch.dtype:
    return PURE_DTYPES.get(workload.precision, torch.float32)


def autocast(workload: Workload, device: str):
    """torch.autocast for the mixed precisions, a no-op otherwise."""
    dtype = MIXED_DTYPES.get(workload.precision)
    if dtype is None:
        return contextlib.nullcontext()
    if not torch.amp.autocast_mode.is_autocast_available(device):
        raise WorkloadError(f"--precision {workload.precision}: torch.autocast is not available on {device}")
    try:
        return torch.autocast(device, dtype=dtype)
    except RuntimeError as err:  # an older torch without fp16 CPU autocast
        raise WorkloadError(f"--precision {workload.precision}: torch.autocast on {device} refused: {err}") from None


# ---- activation checkpointing -----------------------------------------------------------------
def repeated_block_paths(spec, path: str = "") -> list[str]:
    """Module paths of the copies inside every outermost `repeat` of a spec tree."""
    if getattr(spec, "type_name", "") == "repeat":
        return [f"{path}.{name}" if path else name for name, _ in spec.children()]
    out = []
    for name, child in spec.children():
        out += repeated_block_paths(child, f"{path}.{name}" if path else name)
    return out


def _guess_repeated(module: nn.Module) -> list[nn.Module]:
    """Without a spec: items of the outermost ModuleList/Sequential whose >= 2 items share a class."""
    for sub in module.modules():
        if isinstance(sub, (nn.ModuleList, nn.Sequential)):
            items = list(sub.children())
            if len(items) >= 2 and len({type(m) for m in items}) == 1:
                return items
    return []


def apply_checkpointing(module: nn.Module, workload: Workload, spec=None, classes: tuple[str, ...] = ()) -> int:
    """Wrap each repeated block's forward (or each module of the named classes) in
    torch.utils.checkpoint; returns how many."""
    if classes and workload.checkpointing != "full":
        raise WorkloadError("--checkpoint-modules names the modules --checkpointing full recomputes; "
                            "add --checkpointing full")
    if workload.checkpointing == "none":
        return 0
    if workload.checkpointing == "selective":
        return _checkpoint_attention_cores(module)
    if classes:
        blocks = modules_of_classes(module, classes)
    elif spec is not None:  # the spec says which blocks repeat; its paths are the module's names
        try:
            blocks = [module.get_submodule(p) for p in repeated_block_paths(spec)]
        except AttributeError:
            blocks = _guess_repeated(module)
    else:
        blocks = _guess_repeated(module)
    if not blocks:
        raise WorkloadError("--checkpointing full: the model has no repeated blocks (a `repeat`) to checkpoint")
    for block in blocks:
        _checkpoint_forward(block)
    return len(blocks)


def modules_of_classes(module: nn.Module, classes: tuple[str, ...]) -> list[nn.Module]:
    """The outermost submodules whose class name is one of `classes` (one inside another is
    already recomputed by its parent's checkpoint). A name that matches nothing is an error
    listing the classes the module has."""
    present = {type(m).__name__ for m in module.modules()}
    missing = [c for c in classes if c not in present]
    if missing:
        raise WorkloadError(f"--checkpoint-modules {','.join(missing)}: no module of that class; "
                            f"the module has {', '.join(sorted(present))}")
    found: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if type(child).__name__ in classes:
                found.append(child)
            else:
                visit(child)

    visit(module)
    return found


def _checkpoint_forward(block: nn.Module) -> None:
    block.forward = _checkpointed(block.forward)


def _checkpointed(fn):
    from torch.utils.checkpoint import checkpoint

    from layerwise.measure.cuda_conventions import in_recompute

    @wraps(fn)
    def run(*args, **kwargs):
        return checkpoint(in_recompute(fn), *args, use_reentrant=False, **kwargs)

    return run


def _checkpoint_attention_cores(module: nn.Module) -> int:
    """Selective recomputation (Korthikanti et al. 2022, as the cost reading models it): only
    the attention core - scores, softmax, dropout, probs @ v - is recomputed in backward; q, k, v
    and everything else stay saved. The core is AttentionModule's `_eager` / `_sdpa` method."""
    try:
        from layerwise.build.attention import AttentionModule
    except ImportError:
        AttentionModule = None
    from layerwise.build.mla import MLAModule  # latent attention: its _eager / _sdpa likewise

    cores = [m for m in module.modules() if AttentionModule is not None and isinstance(m, (AttentionModule, MLAModule))]
    if not cores:
        raise WorkloadError("--checkpointing selective recomputes the attention core; this model has no attention")
    for attn in cores:
        attn._eager = _checkpointed(attn._eager)
        attn._sdpa = _checkpointed(attn._sdpa)
        if isinstance(attn, AttentionModule):
            attn._eager_bias = _checkpointed(attn._eager_bias)  # with a score bias (T5)
            attn._sdpa_bias = _checkpointed(attn._sdpa_bias)
    return len(cores)


# ---- run-time module settings -----------------------------------------------------------------
def apply_runtime(module: nn.Module, workload: Workload, *, fake: bool = False) -> None:
    """Attention implementation; under fake tensors, MoE layers route "balanced" (every token to
    top_k distinct experts, equal shares) because learned top-k routing needs real router values.
    The bytes do not depend on which experts a token picks, only on how many rows each one gets."""
    from layerwise.build import runtime

    runtime.set_attention_impl(module, workload.attention)
    if fake:
        runtime.set_moe_routing(module, "balanced")


# ---- inputs and loss --------------------------------------------------------------------------
def make_input(kind: str, shape: tuple[int, ...], vocab_size: int, workload: Workload) -> torch.Tensor:
    """A random batch: token ids (int64) or floats in the step's input dtype."""
    if kind == "tokens":
        return torch.randint(0, vocab_size, shape)
    return torch.randn(shape, dtype=input_dtype(workload))


def make_targets(out_shape, task: str):
    """Class ids for every position but the last dim of the logits; None for task 'none'.

    lm: logits (B, S, V) -> next-token ids (B, S), drawn independently of the input, which is
    what shifting a (B, S+1) token batch gives, without slicing (and copying) the logits."""
    if task == "none":
        return None
    if task == "regress":  # real-valued targets, the output's shape
        return torch.randn(tuple(out_shape))
    return torch.randint(0, out_shape[-1], tuple(out_shape[:-1]))


def loss_of(out, targets, task: str) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if task == "none":
        return out.sum()
    if task == "regress":
        return F.mse_loss(out.float(), targets)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))


def with_router_loss(loss: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The training loss plus the MoE layers' router losses (aux + z), when any layer has them."""
    from layerwise.build.runtime import router_loss

    extra = router_loss(module)
    return loss if extra is None else loss + extra
