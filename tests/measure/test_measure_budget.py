"""A model too big for this machine is refused before it is built, naming the bytes it needs and
the bytes available (layerwise/measure/budget.py); one that fits is measured as before."""
from __future__ import annotations

import contextlib
import io

import pytest

pytest.importorskip("torch")

from layerwise.cli import main  # noqa: E402
from layerwise.measure import budget  # noqa: E402
from layerwise.presets import get_preset  # noqa: E402
from layerwise.spec.errors import WorkloadError  # noqa: E402
from layerwise.workload import Workload  # noqa: E402


def test_a_million_layers_are_refused_before_building(tmp_path):
    spec = tmp_path / "big.yaml"
    from layerwise.spec.io import dump

    dump(get_preset("llama-2-7b", n_layers=10**6, d_model=64, n_heads=4, d_ff=128, vocab_size=100), spec)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["measure", str(spec)])
    assert code == 2
    message = " ".join(err.getvalue().split())
    # 9 per layer (q, k, v, o, two RMSNorms, gate, up, down) + embedding, final norm, head
    assert "9,000,003 parameter tensors" in message and "available" in message


def test_the_estimate_is_tensors_plus_host_objects(monkeypatch):
    model = get_preset("tiny-gpt")
    tensors = budget.parameter_tensors(model, Workload())
    assert tensors == len(dict(model.build().named_parameters()))
    need = tensors * budget.HOST_BYTES_PER_TENSOR + 1000
    monkeypatch.setattr(budget, "available_bytes", lambda: need - 1)
    with pytest.raises(WorkloadError, match="needs about"):
        budget.check_fits("measure", model, Workload(), tensor_bytes=1000)
    monkeypatch.setattr(budget, "available_bytes", lambda: need)
    budget.check_fits("measure", model, Workload(), tensor_bytes=1000)  # fits exactly: no error
