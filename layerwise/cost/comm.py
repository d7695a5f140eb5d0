"""Collective communication times (ring algorithms, as NCCL runs them on large messages).

For n ranks moving a buffer of B bytes, each rank sends (Thakur, Rabenseifner & Gropp 2005;
NCCL's "bus bandwidth" docs, nccl-tests PERFORMANCE.md):
  all-reduce       2(n-1)/n x B     (a reduce-scatter then an all-gather)
  reduce-scatter    (n-1)/n x B
  all-gather        (n-1)/n x B     (B = the gathered size)
  all-to-all        (n-1)/n x B     (B = what one rank holds before the exchange)
  point-to-point         B
over the slowest link of the group, at the link efficiency of cost/efficiency.py, plus a start-up
latency per step of the ring. Which link: a group whose ranks all sit in one node uses the
intra-node link (NVLink/NVSwitch or PCIe), else the inter-node one (InfiniBand/RoCE share per GPU).
Pure Python.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.cost.efficiency import Efficiency
from layerwise.cost.hardware import GPU
from layerwise.spec.errors import WorkloadError


@dataclass(frozen=True)
class Link:
    bandwidth: float  # bytes/s per direction, achieved (datasheet x efficiency)
    latency: float  # seconds per ring step


def group_link(gpu: GPU, span: int, eff: Efficiency) -> Link:
    """The link a group of ranks uses when consecutive members are `span` GPUs apart... in effect:
    `span` = how many GPUs the group covers (stride x size); within one node: intra, else inter."""
    if gpu.links is None:
        raise WorkloadError(f"--gpu {gpu.name}: no interconnect in the catalogue, so no communication time")
    bw = gpu.links.intra_node if span <= gpu.links.gpus_per_node else gpu.links.inter_node
    return Link(bw * eff.link, eff.latency_s)


def all_reduce(nbytes: float, n: int, link: Link) -> float:
    return 0.0 if n <= 1 else 2 * (n - 1) / n * nbytes / link.bandwidth + 2 * (n - 1) * link.latency


def reduce_scatter(nbytes: float, n: int, link: Link) -> float:
    return 0.0 if n <= 1 else (n - 1) / n * nbytes / link.bandwidth + (n - 1) * link.latency


all_gather = reduce_scatter  # same volume and steps


def all_to_all(nbytes: float, n: int, link: Link) -> float:
    return 0.0 if n <= 1 else (n - 1) / n * nbytes / link.bandwidth + (n - 1) * link.latency


def p2p(nbytes: float, link: Link) -> float:
    return nbytes / link.bandwidth + link.latency
