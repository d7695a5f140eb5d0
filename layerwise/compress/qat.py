"""Quantization-aware training (QAT): fake-quantized fine-tuning of a trained model, then conversion
to the same int8 model that post-training static quantization (quantize --mode static) gives.

torch.ao's FX graph mode (prepare_qat_fx -> train -> convert_fx), not torchao: torchao is not a
dependency, and its QAT targets LLM Linears (int8 dynamic activations + int4 weights), while the
models static int8 covers here are Conv/Linear/BatchNorm CNNs on the x86/fbgemm kernels. With
torch.ao both paths share the qconfig family (get_default_qat_qconfig_mapping is the QAT twin of
get_default_qconfig_mapping), the fused conv+bn+relu modules and convert_fx, so QAT against PTQ
compares the training and nothing else.

The recipe is PyTorch's QAT tutorial's: fine-tune with fake quantization (observers and BatchNorm
statistics live), then for the second half of the epochs freeze the observers' ranges and the
BatchNorm statistics, so the last updates see the scales the int8 model will use.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from layerwise.compress.finetune import FinetuneConfig, train_loop
from layerwise.compress.quantize import _quiet, check_static
from layerwise.spec.errors import LayerwiseError


def qat(module: nn.Module, loader, *, epochs: int = 2, lr: float = 1e-4, seed: int = 0, task: str = "classify",
        on_batch=None) -> nn.Module:
    """An int8 copy of `module` after `epochs` of fake-quantized fine-tuning on `loader` ((x, y) batches)."""
    if epochs < 1:
        raise LayerwiseError(f"qat: --epochs must be at least 1, got {epochs}")
    check_static(module, "qat")
    batches = iter(loader)
    try:
        example = next(batches)[0]
    except StopIteration:
        raise LayerwiseError("qat: the training split has no batch") from None
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    with _quiet():
        from torch.ao.nn.intrinsic.qat import freeze_bn_stats
        from torch.ao.quantization import disable_observer, get_default_qat_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

        model = copy.deepcopy(module).cpu().train()
        try:
            prepared = prepare_qat_fx(model, get_default_qat_qconfig_mapping(torch.backends.quantized.engine),
                                      (example,))
        except Exception as err:  # FX cannot trace data-dependent control flow
            raise LayerwiseError(f"qat: torch.fx could not trace the model ({err})") from None
        live = (epochs + 1) // 2  # epochs with observers and BatchNorm statistics updating
        train_loop(prepared, loader, FinetuneConfig(epochs=live, lr=lr, seed=seed), task=task, on_batch=on_batch)
        prepared.apply(disable_observer)
        prepared.apply(freeze_bn_stats)
        train_loop(prepared, loader, FinetuneConfig(epochs=epochs - live, lr=lr, seed=seed + 1), task=task,
                   on_batch=on_batch)
        return convert_fx(prepared.eval())
