"""The block protocol itself: composition, shape errors with paths, spec files, transforms."""
import pytest
import torch

from layerwise.blocks import Linear, Repeat, Residual, Sequential
from layerwise.measure.flops import count_flops
from layerwise.spec import FlopCtx, LayerwiseError, SpecError, block_class, walk
from layerwise.spec.io import dump, from_data, load, to_data
from layerwise.spec.transform import freeze


def _mlp():
    return Sequential(layers=(Linear(d_in=6, d_out=16), Residual(branch=Linear(d_in=16, d_out=16)),
                              Repeat(block=Linear(d_in=16, d_out=16, bias=False), n_layers=3),
                              Linear(d_in=16, d_out=4)))


def _unique_params(module):
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def test_composite_params_equal_built_module_and_names_follow_paths():
    spec = _mlp()
    module = spec.build()
    assert spec.params().total == _unique_params(module)
    leaves = {info.path for info in walk(spec, (2, 6)) if not info.block.children()}
    names = {n.rsplit(".", 1)[0] for n, _ in module.named_parameters()}
    assert names == leaves


def test_depth_counts_parameterised_layers_on_longest_path():
    # Linear, Residual(Linear): the skip adds none, Repeat of 3, Linear -> 1 + 1 + 3 + 1
    assert _mlp().depth() == 6


@pytest.mark.parametrize("name, layers", [("resnet-18", 18), ("resnet-34", 34), ("resnet-50", 50)])
def test_resnet_depth_is_the_number_in_its_name(name, layers):
    # He et al. 2015 (arXiv 1512.03385) Table 1 names ResNets by their weight layers (convs + fc),
    # the longest path; downsample shortcuts run alongside and BatchNorm only scales and shifts.
    from layerwise.presets import get_preset

    assert get_preset(name).body.depth() == layers


def test_shape_mismatch_names_the_path_and_both_shapes():
    spec = Sequential(layers=(Linear(d_in=6, d_out=16), Repeat(block=Linear(d_in=16, d_out=16), n_layers=2),
                              Residual(branch=Sequential(layers=(Linear(d_in=16, d_out=8), Linear(d_in=9, d_out=16))))))
    with pytest.raises(SpecError) as err:
        spec.out_shape((2, 6))
    assert str(err.value).startswith("2.branch.1: expected last dim 9, got 8")


def test_residual_branch_must_keep_shape():
    with pytest.raises(SpecError, match="0: residual branch must keep the shape"):
        Sequential(layers=(Residual(branch=Linear(d_in=4, d_out=5)),)).out_shape((1, 4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_in=0, d_out=3), "linear.d_in must be a positive integer, got 0"),
    (dict(d_in=3, d_out=-1), "linear.d_out must be a positive integer, got -1"),
    (dict(d_in=3, d_out=3, init="kaimin"), "did you mean 'kaiming'"),
])
def test_invalid_values_get_one_clear_message(kwargs, message):
    with pytest.raises(SpecError, match=message):
        Linear(**kwargs)


def test_unknown_block_type_suggests_the_close_one():
    with pytest.raises(SpecError, match="unknown block type 'lienar'; did you mean 'linear'"):
        block_class("lienar")


def test_analytic_flops_equal_flop_counter_with_and_without_input_grad():
    spec = _mlp()
    module = spec.build()
    for grad in (False, True):
        x = torch.randn(3, 5, 6, requires_grad=grad)
        measured = count_flops(module, x)
        analytic = spec.flops((3, 5, 6), FlopCtx(input_grad=grad))
        assert (analytic.fwd_matmul, analytic.bwd_matmul) == (measured.forward, measured.backward)


def test_frozen_layers_have_no_weight_gradient_flops_and_count_as_frozen():
    spec = freeze(_mlp(), patterns=("2.*",))
    assert spec.params().frozen == 3 * 16 * 16
    module = spec.build()
    assert sum(p.numel() for p in module.parameters() if not p.requires_grad) == 3 * 16 * 16
    x = torch.randn(4, 6)
    assert spec.flops((4, 6), FlopCtx(input_grad=False)).bwd_matmul == count_flops(module, x).backward


def test_spec_round_trips_through_yaml_and_json(tmp_path):
    spec = _mlp()
    assert from_data(to_data(spec)) == spec
    for name in ("spec.yaml", "spec.json"):
        dump(spec, tmp_path / name)
        assert load(tmp_path / name) == spec


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: sequential\nlayers:\n  - type: linear\n    d_in: 4\n    d_out: [1, 2\n")
    with pytest.raises(LayerwiseError, match=r"bad.yaml:\d+: YAML syntax error"):
        load(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("type: sequential\nlayers:\n  - type: linear\n    d_in: 4\n    d_out: 2\n  - type: lineer\n    d_in: 2\n    d_out: 2\n")
    with pytest.raises(SpecError, match=r"typo.yaml:6: layers.1: unknown block type 'lineer'; did you mean 'linear'"):
        load(typo)
    field = tmp_path / "field.yaml"
    field.write_text("type: linear\nd_in: 4\nd_uot: 2\n")
    with pytest.raises(SpecError, match="linear has no field 'd_uot'; did you mean 'd_out'"):
        load(field)


def test_spec_files_never_execute_code(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(LayerwiseError, match="YAML"):
        load(evil)


def test_a_freeze_pattern_that_matches_nothing_is_an_error_not_a_no_op():
    # "blocks.0.*" reads like a module path, but a decoder's layers share one spec template
    from layerwise.presets import get_preset

    body = get_preset("tiny-gpt").body
    with pytest.raises(SpecError, match=r"freeze pattern\(s\) \['blocks.0.\*'\] match no block; paths that can be frozen: block.attn.q_proj"):
        freeze(body, ("blocks.0.*",))
    frozen = freeze(body, ("block.ffn.*",)).params()
    assert frozen.frozen == 4 * (2 * 128 * 512 + 512 + 128)  # up and down projections of 4 layers


@pytest.mark.parametrize("field, value, expected", [
    ("bias", '"no"', "bias: expected true or false, got 'no'"),  # Python would read "no" as True
    ("bias", "1", "bias: expected true or false, got 1"),
    ("d_out", "true", "d_out: expected an integer, got True"),  # bool is an int subclass
])
def test_spec_files_take_booleans_as_booleans_and_integers_as_integers(tmp_path, field, value, expected):
    values = {"d_in": "4", "d_out": "8", "bias": "true", field: value}
    path = tmp_path / "m.yaml"
    path.write_text("type: linear\n" + "".join(f"{k}: {v}\n" for k, v in values.items()))
    with pytest.raises(SpecError, match=expected.replace("(", r"\(")):
        load(path)
