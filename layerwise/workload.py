"""A workload: what one step (or one inference) does. Shared by the cost and measure readings and
the CLI, so a flag means the same everywhere. Pure Python."""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.spec.errors import WorkloadError

PRECISIONS = ("fp32", "fp16", "bf16", "fp16-mixed", "bf16-mixed")
OPTIMIZERS = ("sgd", "sgd-momentum", "adagrad", "rmsprop", "adam", "adamw", "adafactor", "lion", "adam-8bit")
OPTIMIZER_IMPLS = ("loop", "foreach", "fused")
CHECKPOINTING = ("none", "full", "selective")
ATTENTION = ("eager", "sdpa")
QUANT = ("none", "int8", "int4", "nf4")
MODES = ("train", "infer")
# The KV cache's storage dtype (--kv-dtype); fp8 and int8 keep one fp32 scale per layer for K and
# one for V (vLLM's per-tensor k_scale/v_scale)
KV_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
# Inference defaults to bf16 weights and activations (what LLMs are served in); training to fp32
DEFAULT_PRECISION = {"train": "fp32", "infer": "bf16"}
# The implementations each optimizer has (torch 2.13: RMSprop and Adafactor have no fused kernel;
# lion-pytorch's Lion and layerwise.train.adam8bit are for-loops).
IMPLS_OF = {name: OPTIMIZER_IMPLS for name in ("sgd", "sgd-momentum", "adagrad", "adam", "adamw")} | {
    "rmsprop": ("loop", "foreach"), "adafactor": ("loop", "foreach"), "lion": ("loop",), "adam-8bit": ("loop",)}
DEVICES = ("cpu", "cuda")
REFERENCES = ("layerwise", "hf")  # whose implementation a reading describes (the CLI's --impl)


@dataclass(frozen=True, kw_only=True)
class Workload:
    batch: int = 1
    seq: int | None = None  # tokens per sequence (token/sequence inputs); None: the model's default
    image: tuple[int, int] | None = None  # (H, W) for image inputs; None: the model's default
    mode: str = "train"
    precision: str | None = None  # None: DEFAULT_PRECISION of the mode (fp32 to train, bf16 to infer)
    optimizer: str = "adamw"
    optimizer_impl: str | None = None  # None: the device's default (cpu: loop, cuda: foreach)
    checkpointing: str = "none"
    attention: str = "sdpa"
    grad_accum: int = 1  # micro-batches per step; `batch` is the micro-batch
    zero: int = 0
    dp: int = 1
    tp: int = 1
    pp: int = 1
    lora_rank: int = 0
    quant: str = "none"
    new_tokens: int = 0  # inference: tokens generated after the prompt (KV cache)
    kv_dtype: str | None = None  # inference: the KV cache's dtype; None: the activations' (what our build keeps)
    device: str = "cpu"
    # --impl: whose code the reading describes, as --device names whose defaults: "layerwise" (our
    # build) or "hf" (transformers' modeling classes built from the same config.json)
    reference: str = "layerwise"

    def __post_init__(self):
        if self.precision is None and self.mode in MODES:
            object.__setattr__(self, "precision", DEFAULT_PRECISION[self.mode])
        for name, allowed in (("mode", MODES), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS),
                              ("checkpointing", CHECKPOINTING), ("attention", ATTENTION), ("quant", QUANT),
                              ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise WorkloadError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.reference not in REFERENCES:
            raise WorkloadError(f"--impl must be one of {', '.join(REFERENCES)}; got {self.reference!r}")
        if self.optimizer_impl is not None and self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise WorkloadError(f"--optimizer-impl must be one of {', '.join(OPTIMIZER_IMPLS)}; got {self.optimizer_impl!r}")
        if self.optimizer_impl is not None and self.optimizer_impl not in IMPLS_OF[self.optimizer]:
            raise WorkloadError(f"--optimizer-impl {self.optimizer_impl}: --optimizer {self.optimizer} has only "
                                f"{' and '.join(IMPLS_OF[self.optimizer])}")
        for name in ("batch", "grad_accum", "dp", "tp", "pp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise WorkloadError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("lora_rank", "new_tokens"):
            if getattr(self, name) < 0:
                raise WorkloadError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        self._check_kv_dtype()
        if self.zero not in (0, 1, 2, 3):
            raise WorkloadError(f"--zero must be 0, 1, 2 or 3, got {self.zero}")

    def _check_kv_dtype(self) -> None:
        if self.kv_dtype is None:
            return
        if self.kv_dtype not in KV_DTYPES:
            raise WorkloadError(f"--kv-dtype must be one of {', '.join(KV_DTYPES)}; got {self.kv_dtype!r}")
        if self.mode != "infer" or not self.new_tokens:
            raise WorkloadError("--kv-dtype: only a decode keeps a KV cache; give --mode infer and --new-tokens N")

    @property
    def impl(self) -> str:
        """The optimizer implementation in force: the device default unless one was chosen."""
        if self.optimizer_impl:
            return self.optimizer_impl
        default = "foreach" if self.device == "cuda" else "loop"
        return default if default in IMPLS_OF[self.optimizer] else "loop"

    @property
    def dropout_mask_bytes(self) -> int | None:
        """Bytes per element of a saved dropout mask: CUDA keeps 1-byte masks; CPU a full-precision
        one (None: the activation's own dtype)."""
        return 1 if self.device == "cuda" else None

    def with_(self, **changes) -> "Workload":
        return replace(self, **changes)
