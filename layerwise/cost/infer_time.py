"""Inference latency on a GPU: the prefill of the prompt and the token-by-token decode with a KV
cache, each a roofline over the whole model (Williams et al. 2009; applied to transformer inference
in Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2, and kipply's "Transformer
Inference Arithmetic", 2022):

    seconds = max(matmul FLOPs / (peak x matmul efficiency), bytes / (HBM bandwidth x bandwidth efficiency))

  prefill      FLOPs: the forward of batch x prompt tokens (cost/flops.py, the same count `flops
               --mode infer` reports); bytes: every weight read once (by storage dtype: quantized
               matrices with their scales) + the prompt's keys and values written to the cache.
  decode step  one token per sequence attending to the L cached keys: FLOPs of that forward
               (cost/flops.py decode_flops); bytes: every weight read again + the cache read
               (L tokens per sequence, at --kv-dtype; a sliding window caps L) + the new token's
               keys and values written. At small batch the weights dominate: decode is
               bandwidth-bound, and its time per token barely grows with the batch.
The time to first token is the prefill: its last position's logits give the first new token (no
queueing, tokenisation or sampling time). Elementwise kernels (norms, activations, softmax) are not
in this roofline: they move activations, small beside the weights for decode and beside the GEMMs'
time for a prefill of hundreds of tokens. The efficiencies are cost/efficiency.py's (no fitting).
One GPU holds the whole model. Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.cost.efficiency import Efficiency
from layerwise.cost.hardware import GPU
from layerwise.cost.time import Roofline
from layerwise.spec.errors import WorkloadError
from layerwise.spec.model import Model
from layerwise.workload import Workload


@dataclass(frozen=True)
class InferenceTime:
    gpu: GPU
    peak_dtype: str  # the Tensor Core peak the matmuls run at
    kv_dtype: str  # the cache's dtype (--kv-dtype, else the activations')
    batch: int
    prompt: int
    new_tokens: int
    prefill: Roofline
    first_step: Roofline  # the first decode step (L = prompt + 1 keys)
    last_step: Roofline  # the last one (L = prompt + new_tokens keys)
    decode_seconds: float  # the sum over the steps of max(compute, memory)
    decode_bound: str  # of most steps
    memory_peak_bytes: int  # `layerwise memory --mode infer` on this workload

    @property
    def ttft_seconds(self) -> float:
        return self.prefill.seconds

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens per second over the whole batch."""
        return self.batch * self.new_tokens / self.decode_seconds

    @property
    def total_seconds(self) -> float:
        return self.prefill.seconds + self.decode_seconds

    @property
    def fits(self) -> bool:
        return self.memory_peak_bytes <= self.gpu.memory_bytes


def peak_dtype(gpu: GPU, precision: str) -> str:
    """bf16 and fp16 run on their Tensor Core peaks; fp32 at the fp32 one (TF32 is a choice the
    user makes with torch.backends, not the default for inference)."""
    name = "fp32" if precision == "fp32" else precision.split("-")[0]
    gpu.peak_flops(name)  # an error naming what the GPU has
    return name


def inference_time(model: Model, workload: Workload, gpu: GPU, eff: Efficiency = Efficiency()) -> InferenceTime:
    from layerwise.cost.flops import decode_flops, model_flops
    from layerwise.cost.memory import _kv_config, inference_memory, kv_groups, mamba_mixer, state_bytes
    from layerwise.cost.kv_cache import cached_tokens, kv_bytes_per_token
    from layerwise.cost.precision import policy

    if workload.mode != "infer" or workload.new_tokens < 1:
        raise WorkloadError("time --mode infer needs --new-tokens N >= 1 (the tokens decoded after the prompt)")
    dtype = peak_dtype(gpu, workload.precision)
    mem = inference_memory(model, workload)
    weights = mem.components.weights
    kv_dtype = workload.kv_dtype or policy(workload.precision).activations
    if _kv_config(model, kv_dtype) is None and mamba_mixer(model) is None:
        raise WorkloadError(f"time --mode infer: {model.name} decodes through two caches (an encoder-decoder); "
                            f"only decoder LMs (a KV cache, or Mamba's states) are timed")
    b, s, n = workload.batch, model.input_shape(workload.batch, workload.seq)[1], workload.new_tokens
    groups = kv_groups(model, kv_dtype)  # Gemma 2/3: global and sliding-window layers apart

    def cache(new: int = 0, extra: int = 0) -> int:  # bytes of the caches read, each group capped
        if mamba_mixer(model) is not None:  # Mamba: its states, the same size at every step
            return state_bytes(model, 1, kv_dtype)[0]
        return sum((cached_tokens(g, s, new) + extra) * kv_bytes_per_token(g) for g in groups)

    peak, bw = gpu.peak_flops(dtype) * eff.matmul, gpu.bandwidth * eff.bandwidth

    def roof(flops: int, nbytes: int) -> Roofline:
        return Roofline(flops, nbytes, flops / peak, nbytes / bw)

    prefill = roof(model_flops(model, replace(workload, new_tokens=0, kv_dtype=None)).flops.fwd_matmul,
                   weights + b * cache())
    one = replace(workload, new_tokens=1)
    f0 = decode_flops(model, one).fwd_matmul  # the step at L = s + 1 keys
    per_key = decode_flops(model, replace(one, new_tokens=2)).fwd_matmul - 2 * f0  # step 2 attends one key more
    steps = [roof(f0 + per_key * i, weights + b * cache(i + 1, 1)) for i in range(n)]
    bandwidth_steps = sum(st.bound == "bandwidth" for st in steps)
    return InferenceTime(gpu=gpu, peak_dtype=dtype, kv_dtype=kv_dtype, batch=b, prompt=s, new_tokens=n, prefill=prefill,
                         first_step=steps[0], last_step=steps[-1], decode_seconds=sum(st.seconds for st in steps),
                         decode_bound="bandwidth" if 2 * bandwidth_steps >= n else "compute",
                         memory_peak_bytes=mem.peak_bytes)
