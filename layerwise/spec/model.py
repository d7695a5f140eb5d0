"""A model: a block tree plus what it eats (its input) and what it is trained for (its task)."""
from __future__ import annotations

from dataclasses import dataclass, field

from layerwise.spec.base import Block, Shape
from layerwise.spec.counts import Params
from layerwise.spec.errors import SpecError, WorkloadError
from layerwise.spec.fieldtypes import check_fields

INPUT_KINDS = ("tokens", "image", "features", "sequence")
TASKS = ("lm", "classify", "regress", "mlm", "seq2seq", "none")  # regress: real-valued targets; mlm: masked-token
# prediction; seq2seq: token pairs (S, 2) -> logits per target position (an encoder-decoder)


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """One sample's input, without the batch dimension.

    tokens: (S,) integer ids in [0, vocab_size); image: (C, H, W); features: (F,);
    sequence: (S, F) float vectors (an RNN over features).
    """

    kind: str
    shape: tuple[int, ...]
    vocab_size: int = 0  # tokens: ids are drawn from [0, vocab_size)
    max_seq: int = 0  # tokens: the longest sequence the position table allows (0: no table)
    patch: int = 0  # image: patch size the height and width must be divisible by (ViT)

    def __post_init__(self):
        if isinstance(self.shape, list):
            object.__setattr__(self, "shape", tuple(self.shape))
        check_fields(self)
        if self.kind not in INPUT_KINDS:
            raise SpecError(f"input.kind must be one of {list(INPUT_KINDS)}, got {self.kind!r}")
        if not self.shape or any(d <= 0 for d in self.shape):
            raise SpecError(f"input.shape must be positive integers, got {self.shape!r}")
        for name in ("vocab_size", "max_seq", "patch"):
            if getattr(self, name) < 0:
                raise SpecError(f"input.{name} must be >= 0, got {getattr(self, name)}")
        rank = {"tokens": 1, "image": 3, "features": 1, "sequence": 2}[self.kind]
        pairs = self.kind == "tokens" and len(self.shape) == 2 and self.shape[1] == 2  # (S, 2): encoder-decoders
        if len(self.shape) != rank and not pairs:
            raise SpecError(f"input.shape of {self.kind} inputs has {rank} size(s) per sample (or (S, 2): source and "
                            f"decoder ids of an encoder-decoder), got {list(self.shape)}")
        if self.kind == "tokens" and self.vocab_size <= 0:
            raise SpecError("input.vocab_size must be positive for token inputs")

    def batch_shape(self, batch: int, seq: int | None = None, image: tuple[int, int] | None = None) -> Shape:
        """The full input shape for a workload, checked against what the model allows."""
        if batch <= 0:
            raise WorkloadError(f"--batch must be a positive integer, got {batch}")
        shape = list(self.shape)
        if seq is not None:
            if self.kind not in ("tokens", "sequence"):
                raise WorkloadError(f"--seq applies to token or sequence inputs; this model takes {self.kind} {tuple(self.shape)}")
            if seq <= 0:
                raise WorkloadError(f"--seq must be positive, got {seq}")
            if self.max_seq and seq > self.max_seq:
                raise WorkloadError(f"--seq {seq} is longer than the model's {self.max_seq} positions")
            shape[0] = seq
        if image is not None:
            if self.kind != "image":
                raise WorkloadError(f"--image applies to image inputs; this model takes {self.kind} {tuple(self.shape)}")
            h, w = image
            if self.patch and (h % self.patch or w % self.patch):
                raise WorkloadError(f"--image {h}x{w} is not divisible by the patch size {self.patch}")
            shape[1], shape[2] = h, w
        return (batch, *shape)


@dataclass(frozen=True, kw_only=True)
class Model:
    """The root of a spec file or preset. `body` maps the batched input to the model's output
    (logits for `lm` and `classify`)."""

    name: str
    body: Block
    input: InputSpec
    task: str = "classify"
    source: str = ""  # where the architecture's numbers come from (a paper, a config, a repo)
    defaults: tuple[tuple[str, object], ...] = field(default=())  # preset overrides applied, for display

    def __post_init__(self):
        check_fields(self)
        if self.task not in TASKS:
            raise SpecError(f"model.task must be one of {list(TASKS)}, got {self.task!r}")

    def params(self) -> Params:
        return self.body.params()

    def input_shape(self, batch: int = 1, seq: int | None = None, image: tuple[int, int] | None = None) -> Shape:
        return self.input.batch_shape(batch, seq, image)

    def out_shape(self, in_shape: Shape) -> Shape:
        return self.body.out_shape(in_shape)

    def build(self):
        return self.body.build()
