"""Post-training quantization of a built model, one path per model type (docs/COMPRESS.md):

  dynamic      int8 weights, activations quantized on the fly: Linear, LSTM, GRU
               (torch.ao.quantization.quantize_dynamic; per-tensor symmetric weight scales); the
               position table and a ViT's patch conv are stored weight-only int8 (int8_tables).
  static       int8 weights and activations for CNNs: torch.ao FX graph mode (prepare_fx ->
               calibrate -> convert_fx) on the x86/fbgemm backend; conv+batchnorm(+relu) are fused,
               weights per-channel symmetric.
  weight-int8  weight-only int8 Linears (WeightOnlyLinear), per-channel or grouped scales.
  weight-int4  weight-only int4 Linears, two codes per byte, grouped scales (default group 32).

torch.ao.quantization warns that it moves to torchao; it works on CPU in torch 2.13 and torchao is
not a dependency, so the warnings are silenced here.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from layerwise.compress.qlinear import WeightOnlyLinear, quantize_weight
from layerwise.spec.errors import LayerwiseError

MODES = ("dynamic", "static", "weight-int8", "weight-int4")
DEFAULT_GROUP = {"weight-int8": 0, "weight-int4": 32}  # 0: one scale per output channel
_STATIC_OK = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
_DYNAMIC = (nn.Linear, nn.LSTM, nn.GRU)


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def quantize(module: nn.Module, mode: str, *, calibration=None, group_size: int | None = None) -> nn.Module:
    """A quantized copy of `module` (eval mode, CPU). `calibration`: an iterable of input batches
    (static mode only: the observers record activation ranges on them)."""
    if mode not in MODES:
        raise LayerwiseError(f"quantize: mode must be one of {', '.join(MODES)}, got {mode!r}")
    module = copy.deepcopy(module).eval().cpu()
    if mode == "dynamic":
        return _dynamic(module)
    if mode == "static":
        return _static(module, calibration)
    group = DEFAULT_GROUP[mode] if group_size is None else group_size
    return weight_only(module, bits=8 if mode == "weight-int8" else 4, group_size=group)


def _dynamic(module: nn.Module) -> nn.Module:
    if not any(isinstance(m, _DYNAMIC) for m in module.modules()):
        raise LayerwiseError("quantize --mode dynamic: the model has no Linear, LSTM or GRU layer to quantize "
                             "(for a CNN use --mode static)")
    if isinstance(module, _DYNAMIC):  # quantize_dynamic swaps children only, never the root
        module = nn.Sequential(module)
    with _quiet():
        from torch.ao.quantization import quantize_dynamic

        module = quantize_dynamic(module, {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)
    return int8_tables(module)


# ---- weight-only int8 tables (dynamic mode) ------------------------------------------------------
TABLE_ATTR = "int8_table"  # module attribute: (codes int8 (same shape as the weight), scale fp32 (rows,))


def int8_tables(module: nn.Module) -> nn.Module:
    """Dynamic mode also stores the position table (learned_positions, (max_seq, d)) and a ViT's patch
    conv weight ((d, c_in, ph, pw)) as int8 codes with one fp32 scale per row / output channel. The
    weight is replaced by its dequantized value, so the module computes exactly what the file holds
    (docs/COMPRESS.md gives the accuracy cost)."""
    from layerwise.build.layers import LearnedPositions, PatchEmbedding

    for m in list(module.modules()):
        if type(m) is LearnedPositions:
            _to_table(m)
        elif type(m) is PatchEmbedding and type(m.proj) is nn.Conv2d:
            _to_table(m.proj)
    return module


def _to_table(m: nn.Module) -> None:
    w = m.weight.detach().float()
    codes, scale = quantize_weight(w.reshape(w.shape[0], -1), 8, w[0].numel())  # (rows, n), (rows, 1)
    codes, scale = codes.reshape(w.shape), scale.reshape(-1).contiguous()
    setattr(m, TABLE_ATTR, (codes, scale))
    with torch.no_grad():
        m.weight.copy_(dequant_table(codes, scale))


def dequant_table(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 codes (rows, ...) and fp32 scale (rows,) -> fp32 (rows, ...); the one place this is computed,
    so a reloaded model is bit-identical to the saved one."""
    return (codes.float().reshape(codes.shape[0], -1) * scale[:, None]).reshape(codes.shape)


def set_table(m: nn.Module, codes: torch.Tensor, scale: torch.Tensor) -> None:
    """Reload: the module's table from stored codes and scales."""
    setattr(m, TABLE_ATTR, (codes.clone(), scale.clone()))
    with torch.no_grad():
        m.weight.copy_(dequant_table(codes, scale))


def check_static(module: nn.Module, what: str = "quantize --mode static") -> None:
    """Static int8 covers conv/linear/batchnorm CNNs; any other parameterised layer is an error."""
    for path, m in module.named_modules():
        own = list(m.parameters(recurse=False))
        if own and not isinstance(m, _STATIC_OK):
            raise LayerwiseError(f"{what}: layer {path or '<root>'} ({type(m).__name__}) is not "
                                 "supported; static int8 covers Conv/Linear/BatchNorm CNNs "
                                 "(use --mode dynamic or weight-int8 for transformers and RNNs)")


def _static(module: nn.Module, calibration) -> nn.Module:
    check_static(module)
    batches = list(calibration or [])
    if not batches:
        raise LayerwiseError("quantize --mode static needs calibration batches (a few hundred samples)")
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    with _quiet():
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        try:
            prepared = prepare_fx(module, get_default_qconfig_mapping(torch.backends.quantized.engine), (batches[0],))
        except Exception as err:  # FX cannot trace data-dependent control flow
            raise LayerwiseError(f"quantize --mode static: torch.fx could not trace the model ({err}); "
                                 "use --mode dynamic") from None
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared)


def weight_only(module: nn.Module, *, bits: int, group_size: int = 0) -> nn.Module:
    """Replace every nn.Linear by a WeightOnlyLinear. A layer whose d_in the group does not divide
    falls back to one scale per output channel (the size predictor does the same)."""
    found = False
    for path, m in list(module.named_modules()):
        for name, child in list(m.named_children()):
            if type(child) is nn.Linear:
                group = group_size if group_size and child.in_features % group_size == 0 else 0
                setattr(m, name, WeightOnlyLinear.from_linear(child, bits=bits, group_size=group))
                found = True
    if type(module) is nn.Linear:
        group = group_size if group_size and module.in_features % group_size == 0 else 0
        return WeightOnlyLinear.from_linear(module, bits=bits, group_size=group)
    if not found:
        raise LayerwiseError(f"quantize --mode weight-int{bits}: the model has no Linear layer "
                             "(weight-only quantization is for transformer Linears; for a CNN use --mode static)")
    return module
