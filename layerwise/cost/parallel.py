"""Per-device model states under data (ZeRO-1/2/3, FSDP), tensor, sequence and pipeline
parallelism, with CPU offload.

ZeRO (Rajbhandari et al. 2020, §5; memory_flops_facts.md §1a), with Ψ parameters, DP degree N_d:
  baseline  (2 + 2 + K)Ψ           stage 1 (P_os)   2Ψ + 2Ψ + KΨ/N_d
  stage 2   2Ψ + (2 + K)Ψ/N_d      stage 3 (P_os+g+p, = FSDP FULL_SHARD)  (2 + 2 + K)Ψ/N_d
generalised here to any bytes/param split (a Convention or a ModelStates): stage >= 1 shards
master weights and optimizer states, >= 2 also gradients, 3 also weights. A shard holds
ceil(Ψ/N_d) elements (DeepSpeed and FSDP pad the flat buffer to a multiple of N_d).
Tensor parallelism (Megatron-LM) divides the sharded matrices by tp; norms (and the biases that
follow a row-parallel linear) are replicated, so the API takes the two counts apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.model_states import ModelStates
from layerwise.cost.precision import Convention, convention
from layerwise.spec.errors import WorkloadError


@dataclass(frozen=True)
class ParamSplit:
    """Parameters of a model (or a pipeline stage): split across tp ranks, or replicated on each."""

    tp_sharded: int
    tp_replicated: int = 0

    def per_tp_rank(self, tp: int) -> int:
        if self.tp_sharded % tp:
            raise WorkloadError(f"--tp {tp} does not divide the {self.tp_sharded} tensor-parallel parameters")
        return self.tp_sharded // tp + self.tp_replicated

    def __add__(self, other: "ParamSplit") -> "ParamSplit":
        return ParamSplit(self.tp_sharded + other.tp_sharded, self.tp_replicated + other.tp_replicated)

    def __mul__(self, k: int) -> "ParamSplit":
        return ParamSplit(self.tp_sharded * k, self.tp_replicated * k)


@dataclass(frozen=True)
class Parallel:
    """How a training job is laid out. dp x tp x pp devices."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    zero: int = 0  # 0 plain DDP; 1 optimizer states; 2 + gradients; 3 + parameters (FSDP)
    sequence_parallel: bool = False  # Megatron SP: LayerNorm/dropout activations split by tp too
    offload_optimizer: bool = False  # ZeRO-Offload: master weights, optimizer states, grads on CPU
    offload_params: bool = False  # ZeRO-3 / FSDP CPU offload of the parameters

    def __post_init__(self):
        for name in ("dp", "tp", "pp"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise WorkloadError(f"--{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.zero not in (0, 1, 2, 3):
            raise WorkloadError(f"--zero must be 0, 1, 2 or 3, got {self.zero!r}")
        if self.sequence_parallel and self.tp == 1:
            raise WorkloadError("sequence parallelism needs --tp > 1")
        if self.offload_params and self.zero != 3:
            raise WorkloadError("parameter offload needs --zero 3 (FSDP)")
        if self.offload_optimizer and self.zero == 0:
            raise WorkloadError("optimizer offload needs --zero 1, 2 or 3")

    @property
    def n_devices(self) -> int:
        return self.dp * self.tp * self.pp


@dataclass(frozen=True)
class DeviceStates:
    """Model states on one GPU and on the CPU (per GPU process) when offloaded."""

    gpu: ModelStates
    cpu: ModelStates


def _shard(bytes_per_param: int, n: int, nd: int, on: bool) -> int:
    """Bytes of a state of `n` elements, sharded over `nd` ranks when `on` (ceil: padded shards)."""
    return bytes_per_param * (-(-n // nd) if on else n)


def zero_model_states(n_params: int, *, stage: int, dp: int, bytes_per_param: str | Convention = "zero-16") -> ModelStates:
    """Per-device model states for `n_params` under ZeRO `stage` with DP degree `dp` (no TP/offload)."""
    return device_model_states(ParamSplit(n_params), Parallel(dp=dp, zero=stage), bytes_per_param).gpu


def device_model_states(params: ParamSplit, par: Parallel, bytes_per_param: str | Convention = "zero-16") -> DeviceStates:
    """Model states of one device for the parameters `params` of its pipeline stage.

    bytes_per_param: a Convention (or its name) giving bytes of weights/grads/master/optimizer per
    parameter; integers, so that each term is exact. Offload moves the states it names to the CPU
    memory of the same process (the CPU copy is sharded the same way).
    """
    conv = convention(bytes_per_param) if isinstance(bytes_per_param, str) else bytes_per_param
    n = params.per_tp_rank(par.tp)  # elements this tp rank holds before ZeRO
    dp, z = par.dp, par.zero
    weights = _shard(conv.weights, n, dp, z >= 3)
    grads = _shard(conv.grads, n, dp, z >= 2)
    master = _shard(conv.master, n, dp, z >= 1)
    opt = _shard(conv.optimizer, n, dp, z >= 1)
    gpu, cpu = ModelStates(weights, master, grads, opt), ModelStates()
    if par.offload_optimizer:
        cpu = ModelStates(0, master, grads, opt)
        gpu = ModelStates(weights, 0, 0, 0)
    if par.offload_params:
        cpu = ModelStates(weights, cpu.master_weights, cpu.gradients, cpu.optimizer_states)
        gpu = ModelStates(0, gpu.master_weights, gpu.gradients, gpu.optimizer_states)
    return DeviceStates(gpu=gpu, cpu=cpu)


def shard_model_states(states: ModelStates, par: Parallel, *, replicated_optimizer_bytes: int = 0) -> DeviceStates:
    """Shard already-computed model states of one tp rank's parameters (e.g. `torch_model_states`
    of a stage, exact for Adafactor's shape-dependent state) by the ZeRO stage and offload of
    `par`. Bytes are split evenly (ceil): DeepSpeed/FSDP flatten each state into one padded buffer.

    `replicated_optimizer_bytes`: optimizer state every rank keeps whole, such as AdamW's scalar
    `step` per parameter tensor under FSDP2, where each rank steps its shard of every parameter
    (measured in tests/distributed). Partitioners that hand whole tensors to ranks (torch's
    ZeroRedundancyOptimizer) split those scalars with their tensors: leave it 0.
    """
    dp, z = par.dp, par.zero

    def cut(nbytes_: int, on: bool) -> int:
        return -(-nbytes_ // dp) if on else nbytes_

    whole = replicated_optimizer_bytes if z >= 1 else 0
    gpu = ModelStates(cut(states.weights, z >= 3), cut(states.master_weights, z >= 1),
                      cut(states.gradients, z >= 2), cut(states.optimizer_states - whole, z >= 1) + whole)
    cpu = ModelStates()
    if par.offload_optimizer:
        cpu = ModelStates(0, gpu.master_weights, gpu.gradients, gpu.optimizer_states)
        gpu = ModelStates(gpu.weights, 0, 0, 0)
    if par.offload_params:
        cpu = ModelStates(gpu.weights, cpu.master_weights, cpu.gradients, cpu.optimizer_states)
        gpu = ModelStates(0, 0, 0, 0)
    return DeviceStates(gpu=gpu, cpu=cpu)


# ---- pipeline parallelism --------------------------------------------------------------------

def layers_per_stage(n_layers: int, pp: int) -> tuple[int, ...]:
    """Layers of each pipeline stage; a remainder goes to the first stages (one extra each)."""
    if pp > n_layers:
        raise WorkloadError(f"--pp {pp} is larger than the model's {n_layers} layers")
    base, extra = divmod(n_layers, pp)
    return tuple(base + (1 if i < extra else 0) for i in range(pp))


def stage_params(per_layer: ParamSplit, n_layers: int, pp: int, stage: int, *,
                 first: ParamSplit = ParamSplit(0), last: ParamSplit = ParamSplit(0)) -> ParamSplit:
    """Parameters on pipeline `stage`: its layers, plus the embedding (`first`) on stage 0 and the
    final norm/head (`last`) on the last stage (untied: each stage owns what it uses)."""
    if not 0 <= stage < pp:
        raise WorkloadError(f"pipeline stage {stage} is outside 0..{pp - 1}")
    total = per_layer * layers_per_stage(n_layers, pp)[stage]
    if stage == 0:
        total = total + first
    if stage == pp - 1:
        total = total + last
    return total


def inflight_microbatches(pp: int, stage: int, n_micro: int, schedule: str = "1f1b") -> int:
    """Micro-batches whose activations a stage holds at once. 1F1B (PipeDream-Flush, Narayanan et
    al. 2021): stage i warms up with pp - i forwards, so the first stage holds pp (capped by the
    micro-batches there are); GPipe holds all of them."""
    if schedule == "gpipe":
        return n_micro
    if schedule != "1f1b":
        raise WorkloadError(f"pipeline schedule must be 1f1b or gpipe, got {schedule!r}")
    return min(pp - stage, n_micro)


def check_split(model, tp: int, pp: int) -> None:
    """--tp must divide every attention's heads (query and key/value: Megatron-LM gives each rank whole
    heads) and --pp the repeated layers (each stage holds the same number of layers), checked where
    the values enter, with the reason in the message."""
    if tp > 1:
        for path, heads, kv in _attention_heads(model.body):
            for name, n in (("heads", heads), ("key/value heads", kv)):
                if n % tp:
                    raise WorkloadError(f"--tp {tp} does not divide {path}'s {n} {name}: tensor parallelism gives "
                                        f"each rank whole heads (choose a divisor of {n})")
    if pp > 1:
        from layerwise.cost.memory import _repeat_layers

        layers = _repeat_layers(model.body)
        if not layers or layers % pp:
            raise WorkloadError(f"--pp {pp} does not divide the model's {layers} repeated layers: each pipeline "
                                f"stage holds the same number of layers" if layers else
                                f"--pp {pp}: the model has no repeated layers (a `repeat`) to split into stages")


def _attention_heads(block, path: str = "", seen=None):
    """(path, n_heads, n_kv_heads) of each distinct attention block (a repeat's template once)."""
    seen = set() if seen is None else seen
    if id(block) in seen:
        return
    seen.add(id(block))
    if block.type_name == "attention":
        yield path or "attention", block.n_heads, block.n_kv_heads or block.n_heads
    for names, child in block.child_groups():
        yield from _attention_heads(child, f"{path}.{names[0]}" if path else names[0], seen)
