"""load_run(RUN_DIR, which): the trained Model, its TrainConfig and the module with weights loaded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from layerwise.spec.errors import LayerwiseError
from layerwise.spec.model import Model
from layerwise.train import checkpoint as ck
from layerwise.train import integrity
from layerwise.train.config import TrainConfig


@dataclass
class LoadedRun:
    model: Model  # the spec trained (after freeze/LoRA), or the merged one for which="merged"
    config: TrainConfig
    module: torch.nn.Module  # built from `model`, weights loaded, in eval mode
    folder: Path  # the checkpoint folder the weights came from
    step: int | None  # optimizer steps done at that checkpoint (None for merged/)
    warnings: list[str] = field(default_factory=list)  # a damaged last/ and the checkpoint used instead


def load_run(run_dir: str | Path, which: str = "best") -> LoadedRun:
    """which: "best", "last", "step-N" or "merged" (LoRA adapters folded in). "best" falls back to
    "last" when no validation ever ran; a damaged "last" falls back to the newest good checkpoint
    (with a warning). Every file is checked against its manifest before it is read."""
    from layerwise.spec import io as spec_io

    run_dir = Path(run_dir)
    if not (run_dir / "spec.yaml").exists() or not (run_dir / "config.yaml").exists():
        raise LayerwiseError(f"{run_dir}: not a run directory (expected spec.yaml and config.yaml; see docs/RUNS.md)")
    integrity.verify(run_dir / "config.yaml")
    config = TrainConfig.from_yaml(run_dir / "config.yaml")
    warnings: list[str] = []
    if which == "merged":
        folder = run_dir / "merged"
        if not folder.exists():
            raise LayerwiseError(f"{run_dir}: no merged/ (only LoRA runs with merge_lora write one)")
        integrity.verify(folder / "spec.yaml")
        integrity.verify(folder / "model.safetensors")
        model = spec_io.load(folder / "spec.yaml")
        tensors, step = ck.read_tensors(folder / "model.safetensors"), None
    else:
        integrity.verify(run_dir / "spec.yaml")
        model = spec_io.load(run_dir / "spec.yaml")
        folder = _folder(run_dir, which)
        try:
            tensors, state = ck.read_checkpoint(folder)
        except integrity.DamagedFileError as err:
            if which != "last":
                raise
            from layerwise.train.trainer import latest_good

            good, _ = latest_good(run_dir / "checkpoints")
            if good is None:
                raise
            warnings.append(f"{err}; using {good.name} instead")
            folder = good
            tensors, state = ck.read_checkpoint(folder)
        step = state.get("step")
    module = model.build()
    ck.load_module_state(module, tensors, str(folder))
    module.eval()
    return LoadedRun(model, config, module, folder, step, warnings)


def _folder(run_dir: Path, which: str) -> Path:
    if which not in ("best", "last") and not ck.STEP_DIR.match(which):
        raise LayerwiseError(f"--which {which!r}: expected best, last, step-N or merged")
    folder = run_dir / "checkpoints" / which
    if which == "best" and not folder.exists():
        folder = run_dir / "checkpoints" / "last"
    if not folder.exists():
        have = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith(".")) \
            if (run_dir / "checkpoints").exists() else []
        raise LayerwiseError(f"{run_dir}: no checkpoint {which!r} (have: {', '.join(have) or 'none'})")
    return folder
