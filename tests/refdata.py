"""Where the published reference data lives: ../shared/refdata beside the repository (CI clones the
repository with shared/ next to it); LAYERWISE_REFDATA overrides."""
import os
from pathlib import Path

REFDATA = Path(os.environ.get("LAYERWISE_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata"))
HF_CONFIGS = REFDATA / "hf-configs"
