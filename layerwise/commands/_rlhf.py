"""`memory --rlhf ppo|dpo` and `verify --rlhf ppo|dpo`: the options and what they run."""
from __future__ import annotations

import typer

from layerwise.spec.errors import WorkloadError

RLHF_HELP = ("ppo|dpo: size an RLHF step - PPO's actor, critic, reference and reward models and the rollout's "
             "KV cache (--seq prompt, --new-tokens generated), or DPO's policy and reference (--batch pairs)")


def rlhf_option():
    return typer.Option(None, "--rlhf", help=RLHF_HELP)


def placement_option():
    return typer.Option(None, "--placement", help="--rlhf: colocated (one device, default) | separate (one per model)")


def ref_quant_option():
    return typer.Option(None, "--ref-quant", help="--rlhf: the frozen reference's weights none|int8|int4|nf4")


def check(rlhf, placement, ref_quant, **others) -> None:
    """--placement/--ref-quant need --rlhf; with --rlhf, the flags it does not use are refused."""
    if rlhf is None:
        for flag, value in (("--placement", placement), ("--ref-quant", ref_quant)):
            if value is not None:
                raise WorkloadError(f"{flag} applies to --rlhf ppo|dpo")
        return
    for flag, value in others.items():
        if value:
            raise WorkloadError(f"{flag} does not apply to --rlhf")


def memory_rlhf(spec, workload, rlhf: str, placement, ref_quant, json: bool) -> None:
    from layerwise.cost.rlhf import rlhf_memory
    from layerwise.report.console import print_json
    from layerwise.report.rlhf import render_rlhf

    report = rlhf_memory(spec, workload, rlhf, placement=placement or "colocated", ref_quant=ref_quant or "none")
    print_json(report.to_json()) if json else render_rlhf(report)


def verify_rlhf(spec, workload, rlhf: str, placement, ref_quant, json: bool) -> None:
    from layerwise.cost.rlhf import rlhf_memory
    from layerwise.report.console import print_json
    from layerwise.report.rlhf import render_verify_rlhf, verify_rlhf_json

    if ref_quant not in (None, "none"):
        raise WorkloadError(f"--ref-quant {ref_quant} does not apply to `layerwise verify --rlhf`: quantized "
                            f"weights are not measured; use `layerwise memory --rlhf`")
    placement = placement or "colocated"
    analytic = rlhf_memory(spec, workload, rlhf, placement=placement)
    try:
        from layerwise.measure.rlhf import measure_rlhf
    except ImportError as exc:
        raise WorkloadError(f"verify needs the measure reading (torch): {exc}") from None
    measured = measure_rlhf(spec, workload, rlhf, placement=placement)
    print_json(verify_rlhf_json(analytic, measured)) if json else render_verify_rlhf(spec.name, analytic, measured)
