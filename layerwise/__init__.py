"""layerwise: size, prove, train, compress and export neural networks built from blocks.

    import layerwise
    layerwise.measure(my_module, torch.randn(8, 3, 224, 224), layerwise.Workload(optimizer="adamw"))

Importing the package imports no torch (the cost reading stays pure Python)."""
from layerwise import measure
from layerwise.workload import Workload

__all__ = ["Workload", "measure"]
