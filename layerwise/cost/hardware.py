"""A catalog of GPUs: memory, dense peak FLOP/s per dtype, memory bandwidth, and the source.

Peaks are *dense* (the datasheets print sparse Tensor Core numbers with an asterisk: dense is
half). GeForce fp16/bf16 Tensor numbers are with fp32 accumulate (what training uses). Memory is
the datasheet's nominal capacity read as GiB (HBM/GDDR stacks come in binary sizes); the driver
reports a little less (e.g. H100 80GB: 81,559 MiB), which `device_overhead_bytes` does not model.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from layerwise.spec.errors import WorkloadError

GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    bandwidth: int  # bytes/s (datasheet GB/s x 1e9)
    tflops: tuple[tuple[str, float], ...]  # dense peak TFLOP/s (TOPS for int8) per dtype
    source: str
    links: "Links | None" = None  # interconnect per GPU (cost/step_time.py); None: not catalogued

    def peak_flops(self, dtype: str = "bf16") -> int:
        """Dense peak FLOP/s for matmuls in `dtype`; an error lists the dtypes this GPU has."""
        table = dict(self.tflops)
        if dtype not in table:
            raise WorkloadError(f"{self.name} has no {dtype} peak in its datasheet; it has {', '.join(table)}")
        return round(table[dtype] * 1e12)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(d for d, _ in self.tflops)


@dataclass(frozen=True)
class Links:
    """What one GPU can send per direction (bytes/s), inside its node and to other nodes.

    `intra_node`: NVLink through NVSwitch (every pair at full rate) or, without NVLink, PCIe to the
    host. `inter_node`: the node's network divided by its GPUs (DGX: one NIC per GPU). Datasheets
    print NVLink as bidirectional totals (A100: 600 GB/s): per direction is half.
    """

    intra_node: int
    inter_node: int
    gpus_per_node: int
    kind: str  # "nvswitch" | "nvlink-mesh" | "pcie"
    source: str


def _links(intra_gbs, inter_gbs, per_node, kind, source):
    return Links(round(intra_gbs * 1e9), round(inter_gbs * 1e9), per_node, kind, source)


# NVLink per direction = links x 25 GB/s (V100: 6 NVLink2, A100: 12 NVLink3, H100: 18 NVLink4).
_DGX1 = _links(150, 6.25, 8, "nvlink-mesh", "V100 datasheet: NVLink 300 GB/s (both directions); DGX-1 datasheet: "
               "4x 100 Gb/s EDR InfiniBand per 8 GPUs")
_DGXA100 = _links(300, 25, 8, "nvswitch", "A100 datasheet: NVLink 600 GB/s (both directions); DGX A100 datasheet: "
                  "8x 200 Gb/s HDR InfiniBand (one per GPU)")
_DGXH100 = _links(450, 50, 8, "nvswitch", "H100 datasheet: NVLink 900 GB/s (both directions); DGX H100 datasheet: "
                  "8x 400 Gb/s NDR InfiniBand (one per GPU)")
# PCIe cards: no NVSwitch; the node's network is an assumption (cloud 8-GPU instances of these cards,
# e.g. AWS g5.48xlarge / g6.48xlarge, list 100 Gb/s), stated here because no datasheet gives it.
_NET = "assumed 100 Gb/s Ethernet per 8-GPU node (AWS g5.48xlarge/g6.48xlarge list 100 Gb/s)"
_PCIE4 = _links(32, 1.5625, 8, "pcie", "PCIe 4.0 x16: 32 GB/s per direction; " + _NET)
_PCIE5 = _links(64, 1.5625, 8, "pcie", "PCIe 5.0 x16: 64 GB/s per direction (H100 PCIe datasheet: 128 GB/s "
                "both directions; its optional 2-GPU NVLink bridge is not modelled); " + _NET)


def _gpu(name, mem_gib, bw_gbs, source, links=None, **tf):
    return GPU(name, round(mem_gib * GIB), round(bw_gbs * 1e9), tuple(tf.items()), source, links)


_A100 = "NVIDIA A100 Tensor Core GPU datasheet (SXM)"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet"
CATALOG: dict[str, GPU] = {g.name: g for g in (
    _gpu("v100-sxm2-16gb", 16, 900, "NVIDIA Tesla V100 datasheet (SXM2)", _DGX1, fp32=15.7, fp16=125),
    _gpu("v100-sxm2-32gb", 32, 900, "NVIDIA Tesla V100 datasheet (SXM2)", _DGX1, fp32=15.7, fp16=125),
    _gpu("a100-40gb", 40, 1555, _A100, _DGXA100, fp32=19.5, tf32=156, fp16=312, bf16=312, int8=624),
    _gpu("a100-80gb", 80, 2039, _A100, _DGXA100, fp32=19.5, tf32=156, fp16=312, bf16=312, int8=624),
    _gpu("h100-sxm", 80, 3350, _H100 + " (SXM)", _DGXH100, fp32=67, tf32=494.5, fp16=989.5, bf16=989.5,
         fp8=1979, int8=1979),
    _gpu("h100-pcie", 80, 2000, _H100 + " (PCIe)", _PCIE5, fp32=51, tf32=378, fp16=756.5, bf16=756.5,
         fp8=1513, int8=1513),
    _gpu("h200", 141, 4800, "NVIDIA H200 Tensor Core GPU datasheet (SXM)", _DGXH100, fp32=67, tf32=494.5,
         fp16=989.5, bf16=989.5, fp8=1979, int8=1979),
    _gpu("l4", 24, 300, "NVIDIA L4 Tensor Core GPU datasheet", _PCIE4, fp32=30.3, tf32=60, fp16=121, bf16=121,
         fp8=242.5, int8=242.5),
    # AWS's A10G is a variant of the A10; NVIDIA publishes no A10G datasheet, these are the A10's.
    _gpu("a10g", 24, 600, "NVIDIA A10 Tensor Core GPU datasheet (A10G: AWS variant, A10 numbers)",
         _PCIE4, fp32=31.2, tf32=62.5, fp16=125, bf16=125, int8=250),
    _gpu("rtx-3090", 24, 936, "NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A", _PCIE4, fp32=35.6,
         tf32=35.6, fp16=71, bf16=71, int8=284),
    _gpu("rtx-4090", 24, 1008, "NVIDIA Ada Lovelace GPU Architecture whitepaper, Appendix A", _PCIE4, fp32=82.6,
         tf32=82.6, fp16=165.2, bf16=165.2, fp8=330.3, int8=660.6),
)}

ALIASES = {
    "v100": "v100-sxm2-32gb", "v100-16gb": "v100-sxm2-16gb", "v100-32gb": "v100-sxm2-32gb",
    "a100": "a100-80gb", "a100-40g": "a100-40gb", "a100-80g": "a100-80gb",
    "h100": "h100-sxm", "h100-80gb": "h100-sxm", "h100-sxm5": "h100-sxm",
    "h200-141gb": "h200", "a10": "a10g", "3090": "rtx-3090", "4090": "rtx-4090",
}


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace(" ", "-").replace("_", "-")


def get_gpu(name: str) -> GPU:
    """A catalog entry by name or alias (case and spaces ignored), or an error with a 'did you mean'."""
    key = _normalise(name)
    key = ALIASES.get(key, key)
    if key not in CATALOG:
        close = difflib.get_close_matches(key, sorted([*CATALOG, *ALIASES]), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise WorkloadError(f"--gpu: unknown GPU {name!r}{hint} (known: {', '.join(CATALOG)})")
    return CATALOG[key]
