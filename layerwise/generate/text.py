"""A run's tokenizer, both ways: text -> ids for the prompt, ids -> text for the output. The run's
data.json says which (byte-level or BPE); a BPE run keeps its trained model in tokenizer.json
(docs/RUNS.md). Both files are checked against the run's manifest before they are read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerwise.spec.errors import LayerwiseError
from layerwise.train import integrity


@dataclass(frozen=True)
class RunText:
    kind: str  # "byte" or "bpe"
    bpe_json: str | None = None  # the tokenizers.Tokenizer model of a BPE run

    def _bpe(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.bpe_json)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8")) if self.kind == "byte" else self._bpe().encode(text).ids

    def decode(self, ids) -> str:
        if self.kind == "byte":
            return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")
        return self._bpe().decode(list(ids))


def run_text(run_dir: str | Path) -> RunText:
    run_dir = Path(run_dir)
    path = run_dir / "data.json"
    if not path.exists():
        raise LayerwiseError(f"{run_dir}: no data.json (not a run written by `layerwise train`)")
    integrity.verify(path)
    info = integrity.read_json(path, "the run's data description")
    kind = info.get("tokenizer", "") if isinstance(info, dict) else ""
    if kind == "byte":
        return RunText("byte")
    if kind == "bpe":
        integrity.verify(run_dir / "tokenizer.json")
        return RunText("bpe", (run_dir / "tokenizer.json").read_text())
    raise LayerwiseError(f"{run_dir}: trained on {kind or 'non-text'} data, not a text corpus; generate needs a "
                         f"language model trained on text")
