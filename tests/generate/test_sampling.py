"""The token filters against transformers' own logits warpers (TemperatureLogitsWarper,
TopKLogitsWarper, TopPLogitsWarper, applied in that order as `generate` does)."""
from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from layerwise.generate.sampling import Sampling, probabilities
from layerwise.spec.errors import LayerwiseError


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 10, 0.5),
                                                     (2.0, 1, 1.0), (1.0, 0, 0.05)])
def test_filters_match_transformers(temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(top_k)
    logits = torch.randn(3, 50, generator=gen) * 3
    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1:
        ref = TopPLogitsWarper(top_p)(None, ref)
    ours = probabilities(logits, Sampling(temperature, top_k, top_p))
    torch.testing.assert_close(ours, ref.softmax(-1), atol=1e-6, rtol=1e-5)


def test_greedy_is_the_one_hot_argmax():
    logits = torch.tensor([0.1, 2.0, -1.0])
    assert probabilities(logits, Sampling()).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("kw,flag", [({"temperature": -1.0}, "--temperature"), ({"top_k": 3}, "--top-k"),
                                     ({"temperature": 1.0, "top_p": 0.0}, "--top-p"),
                                     ({"temperature": 1.0, "top_k": -2}, "--top-k")])
def test_bad_sampling_settings_are_refused(kw, flag):
    with pytest.raises(LayerwiseError, match=flag):
        Sampling(**kw)
