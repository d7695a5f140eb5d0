"""Ensembles: several runs' models averaging their predicted probabilities (`evaluate RUN RUN2 ...`);
regression models average their predictions.

The ensemble's output is the log of the mean of the members' softmax probabilities, so evaluate()'s
cross-entropy of it is the negative log-likelihood of the averaged prediction and its argmax the
averaged vote (soft voting, as scikit-learn's VotingClassifier(voting="soft") with equal weights).
"""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
from torch import nn

from layerwise.spec.errors import LayerwiseError
from layerwise.train.run import LoadedRun, load_run


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], task: str = "classify"):
        super().__init__()
        self.members, self.task = nn.ModuleList(members), task

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K) or (B, S, V) log-probabilities
        if self.task == "regress":  # (B, n_targets): the mean prediction
            return torch.stack([m(x).float() for m in self.members]).mean(0)
        logp = torch.stack([torch.log_softmax(m(x).float(), dim=-1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def load_ensemble(run_dirs: list[str], which: str) -> tuple[LoadedRun, Ensemble, list[LoadedRun]]:
    """-> (the first run, whose data and task the ensemble is evaluated on, the ensemble, every run).
    Runs whose task, input, outputs or data settings differ from the first's are refused, naming them."""
    runs = [load_run(d, which) for d in run_dirs]
    first = runs[0]
    shape = first.model.input_shape(1)
    for d, r in zip(run_dirs[1:], runs[1:]):
        if r.model.task != first.model.task:
            raise LayerwiseError(f"{d}: task {r.model.task!r}, but {run_dirs[0]} is {first.model.task!r}; "
                                 f"an ensemble averages runs of one task")
        if (r.model.input.kind, r.model.input_shape(1)) != (first.model.input.kind, shape):
            raise LayerwiseError(f"{d}: the model takes {r.model.input.kind} {r.model.input_shape(1)[1:]}, "
                                 f"{run_dirs[0]}'s takes {first.model.input.kind} {shape[1:]}")
        if r.model.out_shape(shape) != first.model.out_shape(shape):
            raise LayerwiseError(f"{d}: the model outputs {r.model.out_shape(shape)[1:]}, "
                                 f"{run_dirs[0]}'s {first.model.out_shape(shape)[1:]}")
        if asdict(r.config.data) != asdict(first.config.data):
            raise LayerwiseError(f"{d}: trained on other data settings than {run_dirs[0]} (config.yaml 'data'); "
                                 f"its test split would not be the same samples")
    return first, Ensemble([r.module for r in runs], first.model.task).eval(), runs
