"""Spec layer: block protocol, counts, errors, models, files. Pure Python, no torch."""
from layerwise.spec.base import REGISTRY, Block, LayerInfo, Shape, block_class, child_out, register, walk  # noqa: F401
from layerwise.spec.counts import FlopCtx, Flops, Params  # noqa: F401
from layerwise.spec.errors import LayerwiseError, SpecError, WorkloadError  # noqa: F401
from layerwise.spec.model import InputSpec, Model  # noqa: F401
