"""Fuzzing: mutated spec files, Hugging Face config.json files and training configs, each read the
way a user reads them (summary, flops, memory through the CLI's main(); the training config's
loader). Every case answers or is one LayerwiseError line with exit 2, never a traceback, within a
hypothesis deadline. Fixed seed (derandomize) so a run is reproducible; bench/fuzz.py runs the long
random campaign.
"""
from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_specs import Pick, check_commands, check_train_config, hf_seeds, mutate, spec_seeds, train_seeds, write

SPECS, HF, TRAIN = spec_seeds(), hf_seeds(), train_seeds()
DIR = Path(tempfile.mkdtemp(prefix="layerwise-fuzz-"))


@pytest.fixture(autouse=True, scope="module")
def _imports_done():
    """Each reading's modules imported once before the timed cases: the deadline bounds a case's
    work, not the first import of the memory reading (a second or more on a loaded machine)."""
    check_commands(write(SPECS[0], DIR / "warm", as_json=False))
    check_commands(write(HF[0], DIR / "warm-hf", as_json=True))


def fuzz(examples: int):
    return settings(derandomize=True, database=None, deadline=timedelta(seconds=5), max_examples=examples,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutation(draw, seed):
    """`seed` with 1 to 3 mutations, and whether to write it as JSON (else YAML)."""
    pick = Pick(lambda n: draw(st.integers(0, n - 1)))
    return mutate(seed, pick, draw(st.integers(1, 3))), draw(st.booleans())


# 9 spec seeds x 150 + 5 HF configs x 100 + 3 training configs x 200 = 2,450 cases
@pytest.mark.parametrize("i", range(len(SPECS)))
@fuzz(150)
@given(data=st.data())
def test_mutated_spec_files_answer_or_refuse_in_one_line(i, data):
    spec, as_json = data.draw(mutation(SPECS[i]))
    check_commands(write(spec, DIR / f"spec{i}", as_json))


@pytest.mark.parametrize("i", range(len(HF)))
@fuzz(100)
@given(data=st.data())
def test_mutated_hf_configs_answer_or_refuse_in_one_line(i, data):
    config, _ = data.draw(mutation(HF[i]))
    check_commands(write(config, DIR / f"config{i}", as_json=True))


@pytest.mark.parametrize("i", range(len(TRAIN)))
@fuzz(200)
@given(data=st.data())
def test_mutated_training_configs_load_or_refuse_in_one_line(i, data):
    config, _ = data.draw(mutation(TRAIN[i]))
    check_train_config(write(config, DIR / f"train{i}", as_json=False))


def test_the_seeds_themselves_answer():
    # the mutations start from inputs that work: a case fails because of its mutation
    for i, spec in enumerate(SPECS):
        assert check_commands(write(spec, DIR / f"seed{i}", as_json=False)) == [0, 0, 0], i
    for i, config in enumerate(HF):
        assert check_commands(write(config, DIR / f"hf{i}", as_json=True)) == [0, 0, 0], i
    assert all(check_train_config(write(c, DIR / f"train{i}", as_json=False)) for i, c in enumerate(TRAIN))
