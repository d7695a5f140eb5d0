"""Search for training set-ups that fit a memory budget, best first. Pure Python."""
from layerwise.plan.search import Candidate, Plan, plan  # noqa: F401
