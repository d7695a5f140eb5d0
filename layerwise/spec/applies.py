"""Workload settings a model has nothing to apply to, refused rather than ignored (DESIGN.md "Bad
input": a flag accepted and ignored is a defect). The command line refuses what a *command* cannot
honour (commands/_workload.py); this refuses what a *model* cannot, for every reading (cost and
measure) alike, so the library's answer and the CLI's are the same.

    --attention eager            a model without attention (ResNet, GRU, Mamba, an MLP) has no
                                 attention implementation to choose
    --checkpointing selective    it recomputes the attention core; without attention it is nothing
"""
from __future__ import annotations

from layerwise.spec.errors import WorkloadError

# the block types whose forward runs scaled dot-product attention (build/attention.py, build/mla.py)
ATTENTION_TYPES = ("attention", "mla")


def has_attention(block) -> bool:
    """Whether an attention block is anywhere in the tree."""
    if block.type_name in ATTENTION_TYPES:
        return True
    return any(has_attention(child) for _, child in block.child_groups())


def check_applies(model, workload) -> None:
    """WorkloadError naming the first workload setting `model` has nothing to apply to."""
    from layerwise.workload import Workload

    if has_attention(model.body):
        return
    if workload.attention != Workload().attention:
        raise WorkloadError(f"--attention {workload.attention} does not apply to {model.name}: it has no attention")
    if workload.checkpointing == "selective" and workload.mode == "train":
        raise WorkloadError(f"--checkpointing selective recomputes the attention core; {model.name} has no attention")
