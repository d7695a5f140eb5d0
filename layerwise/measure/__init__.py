"""The measure reading: the built module run under FakeTensorMode (or for real) with a live-storage
tracker for memory and FlopCounterMode's formulas for FLOPs. The ground truth the cost reading is
tested against (DESIGN.md "Ground truth, defined").

    from layerwise.measure.step import measure_step
    r = measure_step(get_preset("llama-2-7b"), Workload(seq=512))   # ~101.4 GiB, in optimizer.step

Modules: tracker (StorageTracker), step (measure_step), setup (workload -> optimizer, precision,
checkpointing, inputs, loss), result (StepMeasurement), procmem (RSS / CUDA readers), run_real
(real step in a clean subprocess), flops (FlopCounterMode with the CPU gaps closed).
"""
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    """`layerwise.measure(module, example_input, workload)` calls this package: the measure reading
    of any nn.Module (layerwise.measure.module_api.measure_module; torch is imported on the call)."""

    def __call__(self, module, example_input, workload=None, **options):
        from layerwise.measure.module_api import measure_module
        from layerwise.workload import Workload

        return measure_module(module, example_input, workload or Workload(), **options)


_sys.modules[__name__].__class__ = _CallablePackage
