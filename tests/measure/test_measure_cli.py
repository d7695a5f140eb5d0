"""`layerwise measure` and the shared workload flags."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from layerwise.cli import main
from layerwise.commands._workload import parse_image, with_workload, workload_from_options
from layerwise.spec.errors import WorkloadError
from layerwise.workload import Workload

SPEC = """\
type: model
name: tiny
task: classify
input: {kind: features, shape: [16]}
body:
  type: sequential
  layers:
    - {type: repeat, n_layers: 2, block: {type: residual, branch: {type: linear, d_in: 16, d_out: 16}}}
    - {type: linear, d_in: 16, d_out: 4}
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return str(path)


def test_measure_json_has_the_design_keys(spec_file, capsys):
    assert main(["measure", spec_file, "--batch", "3", "--optimizer", "sgd", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"peak_bytes", "peak_phase", "components", "device_overhead_bytes", "per_device", "flops"} <= set(data)
    assert set(data["components"]) == {"weights", "master_weights", "gradients", "optimizer_states",
                                       "activations", "temporaries", "kv_cache"}
    assert sum(data["components"].values()) == data["peak_bytes"]
    n_params = 2 * (16 * 16 + 16) + 16 * 4 + 4
    assert data["components"]["weights"] == 4 * n_params
    assert data["components"]["optimizer_states"] == 0  # plain SGD keeps no state
    # classify on (3, 16): forward matmuls 2*3*(2*16*16 + 16*4)
    assert data["flops"]["forward"] == 2 * 3 * (2 * 16 * 16 + 16 * 4)


def test_measure_table_and_bad_flags(spec_file, capsys):
    assert main(["measure", spec_file, "--mode", "infer"]) == 0
    assert "peak" in capsys.readouterr().out
    assert main(["measure", spec_file, "--precision", "fp8"]) == 2
    assert "--precision" in capsys.readouterr().err
    assert main(["measure", spec_file, "--tp", "2"]) == 2
    assert main(["measure", spec_file, "--image", "224"]) == 2  # not an image model


def test_workload_from_options():
    w = workload_from_options(batch=4, seq=128, precision="bf16-mixed", optimizer_impl="foreach", image=None)
    assert w == Workload(batch=4, seq=128, precision="bf16-mixed", optimizer_impl="foreach")
    assert parse_image("224") == (224, 224) and parse_image("224x160") == (224, 160)
    for bad in ("0", "axb", "1x2x3"):
        with pytest.raises(WorkloadError, match="--image"):
            parse_image(bad)
    with pytest.raises(WorkloadError, match="--seq"):
        workload_from_options(seq=0)


def test_with_workload_adds_every_flag_to_a_typer_command():
    app = typer.Typer()
    seen = {}

    @app.command()
    @with_workload
    def probe(model: str = typer.Argument(...), *, workload: Workload):
        seen["model"], seen["workload"] = model, workload

    result = CliRunner().invoke(app, ["m", "--batch", "2", "--optimizer", "adam", "--grad-accum", "4",
                                      "--image", "32x16", "--device", "cuda"])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "m"
    assert seen["workload"] == Workload(batch=2, optimizer="adam", grad_accum=4, image=(32, 16), device="cuda")
