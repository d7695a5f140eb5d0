"""`--impl hf`: the measure reading of the model that transformers' own modeling code builds from a
config.json (the code most people train), with the same tracker and workload as our own build.

The class is the one whose structure the importer (layerwise/presets/hf.py) reads, so both
conventions describe the same parameters:
  decoders (llama, mistral, qwen2, qwen3, phi3, phi, gpt2, gpt_neox, opt, gemma, gemma2, gemma3_text,
      falcon, mixtral, qwen2_moe, qwen3_moe)  AutoModelForCausalLM,
      loss = model(input_ids, labels=labels).loss (HF's ForCausalLMLoss: fp32 logits, shifted labels)
  bert, roberta   AutoModel (the pooler included), loss = pooler_output.sum()
  t5, bart        AutoModelForSeq2SeqLM, loss = model(input_ids=source, labels=labels).loss: the
                  labels shifted right are the decoder input (source and decoder input both --seq long)
  vit             AutoModelForImageClassification (loss = model(pixels, labels=labels).loss) when the
                  config's architectures say so, else AutoModel (loss = pooler_output.sum())
Workload flags map to HF's own switches: `--attention` -> `attn_implementation`, `--checkpointing
full` -> `activation_checkpointing_enable()` (the 5.x name of `gradient_checkpointing_enable()`,
non-reentrant). Flags with no HF equivalent here are refused (`check_hf_workload`).
transformers is an optional extra (`pip install layerwise[hf]`), imported only here.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from typing import Callable

from layerwise.cost.hf import check_hf_attention, check_hf_config, not_covered
from layerwise.spec.applies import check_applies
from layerwise.spec.errors import LayerwiseError, WorkloadError
from layerwise.workload import Workload

# mixtral, qwen2_moe, qwen3_moe: transformers 5.23 runs their experts through torch._grouped_mm in fp32,
# whose meta function (fake tensors) accepts bf16 only: the tracker allocates its output instead
# (measure/tracker.py, `_grouped_mm_output`)
DECODERS = ("llama", "mistral", "qwen2", "phi3", "phi", "gpt2", "gpt_neox", "opt", "qwen3", "gemma", "gemma2",
            "gemma3_text", "falcon", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3",
            "mamba")
ENCODERS = ("bert", "roberta")
SEQ2SEQ = ("t5", "bart")
VISION = ("vit", "clip_vision_model")


def require_transformers():
    """The transformers package, or one line saying how to get it."""
    try:
        import transformers
    except ImportError:
        raise LayerwiseError("--impl hf needs transformers: pip install 'layerwise[hf]'") from None
    return transformers


def check_hf_workload(workload: Workload) -> None:
    """Settings `--impl hf` cannot honour: refused, one line naming the flag."""
    refused = (("--mode", workload.mode != "train", workload.mode),
               ("--checkpointing", workload.checkpointing == "selective", "selective"),
               ("--lora-rank", workload.lora_rank != 0, workload.lora_rank),
               ("--quant", workload.quant != "none", workload.quant),
               ("--new-tokens", workload.new_tokens != 0, workload.new_tokens))
    for flag, bad, value in refused:
        if bad:
            raise WorkloadError(f"{flag} {value} does not apply to --impl hf (transformers' modeling code is "
                                f"measured for a training step, full checkpointing or none, no adapters)")


def hf_config(data: dict, where: str):
    """transformers' config object for a config.json dict; one line naming the file if it refuses."""
    transformers = require_transformers()
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in (*DECODERS, *ENCODERS, *VISION, *SEQ2SEQ):
        raise not_covered(model_type, where, (*DECODERS, *ENCODERS, *VISION, *SEQ2SEQ))
    keys = copy.deepcopy({k: v for k, v in data.items() if k != "model_type"})  # transformers edits nested dicts
    try:
        with warnings.catch_warnings(), _quiet(transformers):
            warnings.simplefilter("ignore")
            return transformers.AutoConfig.for_model(model_type, **keys)
    except Exception as err:  # transformers raises ValueError, TypeError, KeyError... for bad configs
        raise LayerwiseError(f"{where}: transformers cannot build this config: {_one_line(err)}") from None


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


@dataclass(frozen=True)
class HFModel:
    """What the measure reading needs: a factory, the input it eats and how the loss is taken."""

    build: Callable[[], object]  # -> the nn.Module (built inside FakeTensorMode by the caller)
    kind: str  # tokens | image
    shape: tuple[int, ...]  # the input batch's shape
    vocab_size: int
    task: str  # lm | classify | none: which targets exist (registered as inputs)
    out_shape: tuple[int, ...]  # the output the targets are drawn from
    loss: Callable  # (module, x, targets) -> the scalar loss, as a user's training loop computes it


def hf_model(data: dict, where: str, workload: Workload, spec) -> HFModel:
    """The HF model for `data`, fed the same input as our reading of it (`spec`: the importer's Model)."""
    transformers = require_transformers()
    check_hf_workload(workload)
    check_hf_attention(data, workload)
    check_applies(spec, workload)  # Mamba has no attention: --attention changes nothing, refused
    config = hf_config(data, where)
    check_hf_config(data)
    # what attn_implementation= sets; MambaForCausalLM has no attention and accepts "eager" only
    attention = "eager" if data["model_type"] == "mamba" else workload.attention
    config._attn_implementation = attention
    if workload.checkpointing == "full" and hasattr(config, "use_cache"):
        config.use_cache = False  # as transformers itself sets it (with a log line) when checkpointing
    shape = spec.input_shape(workload.batch, workload.seq, workload.image)
    model_type = data["model_type"]
    if model_type in DECODERS:
        auto, task, loss = "AutoModelForCausalLM", "lm", _labels_loss
    elif model_type in SEQ2SEQ:
        auto, task, loss = "AutoModelForSeq2SeqLM", "lm", _seq2seq_loss
    elif model_type == "vit" and spec.task == "classify":
        auto, task, loss = "AutoModelForImageClassification", "classify", _labels_loss
    else:
        auto, task, loss = "AutoModel", "none", _pooled_sum
    factory = getattr(transformers, auto)

    import torch
    from torch._guards import detect_fake_mode

    def build():
        with warnings.catch_warnings(), _quiet(transformers):
            warnings.simplefilter("ignore")
            try:  # under fake tensors: built on the meta device, where no initialisation runs (ViT's
                # reads values), then given fake parameters of the same shapes by the measure reading
                where_built = (torch.device("meta") if detect_fake_mode() is not None else contextlib.nullcontext())
                with _outside_fake_mode(), where_built:
                    module = factory.from_config(config, attn_implementation=attention,
                                                 dtype=torch.float32)
            except Exception as err:
                raise LayerwiseError(f"{where}: transformers cannot build {auto} from it: {_one_line(err)}") from None
            if workload.checkpointing == "full":
                enable = getattr(module, "activation_checkpointing_enable", None) or module.gradient_checkpointing_enable
                enable({"use_reentrant": False})
        return module

    out_shape = tuple(spec.out_shape(shape)) if task != "none" else ()
    return HFModel(build, spec.input.kind, shape, spec.input.vocab_size, task, out_shape, _quietly(loss, transformers))


def _quietly(loss, transformers):
    """The step's forward without transformers' log lines (MambaMixer's "falling back to its
    reference PyTorch implementation" on a machine without mamba_ssm, say)."""
    def run(module, x, targets):
        with _quiet(transformers):
            return loss(module, x, targets)
    return run


def _outside_fake_mode():
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    return unset_fake_temporarily()


@contextlib.contextmanager
def _quiet(transformers):
    """transformers' own log lines (e.g. "use_cache=True is incompatible with gradient
    checkpointing") stay out of our output while the model is built."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def _labels_loss(module, x, targets):
    """model(inputs, labels=targets).loss: HF's own loss function (ForCausalLMLoss shifts the labels
    and upcasts the logits to fp32; ForImageClassification: cross-entropy over num_labels)."""
    return module(x, labels=targets).loss


def _seq2seq_loss(module, x, targets):
    """model(input_ids=source, labels=targets).loss: our (B, S, 2) batch's source column; the model
    shifts the labels right into its decoder input (T5's / BART's shift_tokens_right), so both
    sides are S tokens long, as in our build's step."""
    return module(input_ids=x[..., 0], labels=targets).loss


def _pooled_sum(module, x, targets):
    """A backbone without a head (BertModel, ViTModel): the pooled output summed, as our reading
    sums its model's output for task 'none'."""
    return module(x).pooler_output.sum()


def measure_hf(name: str, workload: Workload, *, fake: bool = True, count_flops: bool = True,
               timeline: bool = False):
    """`layerwise measure CONFIG.json --impl hf`: (the importer's Model, the HF step measured)."""
    from layerwise.measure.step import measure_step
    from layerwise.presets.hf import hf_reference

    if not fake:
        raise WorkloadError("--real does not apply to --impl hf (its step runs under fake tensors)")
    data, spec = hf_reference(name)
    return spec, measure_step(hf_model(data, name, workload, spec), workload, count_flops=count_flops,
                              timeline=timeline)
