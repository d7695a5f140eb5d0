"""Where the published reference data lives: refdata/ at the top of the repository (a copy of the
steering repo's shared/refdata, each figure with its source), so a clone alone passes its tests;
LAYERWISE_REFDATA overrides."""
import os
from pathlib import Path

REFDATA = Path(os.environ.get("LAYERWISE_REFDATA", Path(__file__).resolve().parents[1] / "refdata"))
HF_CONFIGS = REFDATA / "hf-configs"
