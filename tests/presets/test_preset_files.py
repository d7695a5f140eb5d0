"""Presets as editable files: `layerwise presets show NAME --yaml > my.yaml`, edited, loaded back."""
from __future__ import annotations

import json

import pytest
import yaml

from layerwise.cli import main
from layerwise.presets import PRESETS, get_preset
from layerwise.spec.io import dump, load


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_its_yaml_file(name, tmp_path, capsys):
    spec = get_preset(name)
    path = tmp_path / "my.yaml"
    dump(spec, path)
    assert load(path) == spec
    assert main(["presets", "show", name, "--yaml"]) == 0
    shown = tmp_path / "shown.yaml"
    shown.write_text(capsys.readouterr().out)
    assert load(shown) == spec
    assert main(["presets", "show", name, "--json"]) == 0
    as_json = tmp_path / "shown.json"
    as_json.write_text(capsys.readouterr().out)
    assert load(as_json) == spec


def test_an_edited_file_is_the_edited_model(tmp_path, capsys):
    assert main(["presets", "show", "tiny-gpt"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# tiny-gpt: ")  # the source travels with the file
    data = yaml.safe_load(text)
    data["body"]["n_layers"] = 2
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load(path).body == get_preset("tiny-gpt", n_layers=2).body
    assert main(["summary", str(path), "--json"]) == 0
    edited = json.loads(capsys.readouterr().out)["params"]["total"]
    assert edited == get_preset("tiny-gpt", n_layers=2).params().total < get_preset("tiny-gpt").params().total


def test_show_errors(capsys):
    assert main(["presets", "show", "lama-2-7b"]) == 2
    assert "did you mean 'llama-2-7b'" in capsys.readouterr().err
    assert main(["presets", "show", "tiny-gpt", "--yaml", "--json"]) == 2


def test_the_list_still_works(capsys):
    assert main(["presets", "--json"]) == 0
    assert {row["name"] for row in json.loads(capsys.readouterr().out)} == set(PRESETS)
