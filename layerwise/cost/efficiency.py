"""The fractions of a datasheet peak that real kernels reach, used by the step-time model
(cost/step_time.py). Each is one number per op class, with where it comes from; none is fitted per
model. bench/time_accuracy.py checks the whole model against published Megatron-LM runs.

Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Efficiency:
    # Dense matmuls (cuBLAS GEMMs of transformer shapes, d_model >= 2048): about 80% of the Tensor
    # Core peak on A100. NVIDIA's "Matrix Multiplication Background User's Guide" (Deep Learning
    # Performance docs) shows large fp16 GEMMs on A100 at ~250-270 of 312 TFLOP/s; Korthikanti et
    # al. 2022 Table 4's 22B layer (7.7 ms forward for 0.98 TFLOP/GPU with its all-reduces and
    # elementwise kernels) is consistent with it.
    matmul: float = 0.75
    # Elementwise / normalisation / softmax kernels are bound by HBM bandwidth; streaming kernels
    # reach ~80-90% of the datasheet bandwidth (A100 80GB: ~1.7-1.8 of 2.04 TB/s, as in NVIDIA's
    # and the STREAM-style "babelstream" reports). We take 85%.
    bandwidth: float = 0.85
    # The eager attention core's kernels (QK^T and PV batched GEMMs, which at d_head 64-128 are
    # bound by writing and reading the s x s scores, the fused scale-mask-softmax, dropout) reach less
    # of HBM than streaming kernels. Korthikanti et al. 2022 Table 4: selective recompute adds 1.3 ms
    # to the backward of one 22B layer (TP 8, b 4, s 2048: 8 heads of d_head 96 per GPU), which is
    # exactly the attention core's forward; at 0.85 of HBM the roofline gives 1.04 ms, so the core
    # runs at 0.85 x 1.04 / 1.3 = 0.68 of HBM. Derived from that one published row (which is then a
    # calibration, not a check, of this number).
    eager_attention: float = 0.68
    # FlashAttention-2 (Dao 2023, Fig. 5-7): forward + backward of causal attention, head dim 128,
    # reaches ~55-70% of the A100 peak at sequence >= 2k (backward lower than forward). We take 60%.
    flash_attention: float = 0.60
    # NCCL collectives: nccl-tests "bus bandwidth" on NVSwitch (DGX A100) reaches ~230-240 of 300
    # GB/s per direction, and ~22-24 of 25 GB/s per HDR InfiniBand port: ~80% of the link.
    link: float = 0.80
    # Per-collective start-up latency (NCCL ring, tens of microseconds across nodes; a few inside one).
    latency_s: float = 10e-6


DEFAULT = Efficiency()
