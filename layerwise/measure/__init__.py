"""The measure reading: the built module run under FakeTensorMode (or for real) with a live-storage
tracker for memory and FlopCounterMode's formulas for FLOPs. The ground truth the cost reading is
tested against (DESIGN.md "Ground truth, defined").

    from layerwise.measure.step import measure_step
    r = measure_step(get_preset("llama-2-7b"), Workload(seq=512))   # ~101.4 GiB, in optimizer.step

Modules: tracker (StorageTracker), step (measure_step), setup (workload -> optimizer, precision,
checkpointing, inputs, loss), result (StepMeasurement), procmem (RSS / CUDA readers), run_real
(real step in a clean subprocess), flops (FlopCounterMode with the CPU gaps closed).
"""
