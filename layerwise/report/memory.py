"""Rendering of the memory reading: JSON (DESIGN.md keys), a component table, a terminal bar chart
of the peak's breakdown, the phase peaks, and `verify`'s side-by-side table."""
from __future__ import annotations

from layerwise.report.fmt import nbytes as human

COMPONENTS = ("weights", "master_weights", "gradients", "optimizer_states", "activations", "temporaries",
              "kv_cache")
CUDA_KEYS = ("cuda_allocated_bytes", "cuda_reserved_bytes")  # --device cuda: the caching allocator's view
BAR_WIDTH = 20
COLOURS = {"weights": "blue", "master_weights": "cyan", "gradients": "magenta", "optimizer_states": "yellow",
           "activations": "green", "temporaries": "red", "kv_cache": "bright_white"}


# ---- JSON ---------------------------------------------------------------------------------------
def memory_json(answer) -> dict:
    """`layerwise memory --json` (and POST /api/memory): the report, then what was asked besides."""
    data = answer.report.to_json()
    if answer.fit is not None:
        data["fit"] = answer.fit
    if answer.verdicts is not None:
        data["verdicts"] = [v.to_json() for v in answer.verdicts]
    if answer.timeline is not None:
        data["timeline"] = answer.timeline.to_json()
    if getattr(answer, "explanation", None) is not None:
        data["explain"] = answer.explanation.to_json()
    return data


def verify_json(analytic, measured) -> dict:
    """Both readings and, per component and for the peak, the error: (analytic - measured) bytes
    and relative to the measured value (null where the measured value is 0)."""
    a, m = analytic.to_json(), measured.to_json()
    error = {}
    for key in COMPONENTS:
        error[key] = _err(a["components"][key], m["components"][key])
    error["peak_bytes"] = _err(a["peak_bytes"], m["peak_bytes"])
    for key in CUDA_KEYS:
        if key in a and key in m:
            error[key] = _err(a[key], m[key])
    keep = ("peak_bytes", "peak_phase", "components", "device_overhead_bytes", "per_device", *CUDA_KEYS)
    return {"analytic": a, "measured": {k: m[k] for k in keep if k in m}, "error": error}


def _err(a: int, m: int) -> dict:
    return {"bytes": a - m, "relative": (a - m) / m if m else None}


# ---- terminal -----------------------------------------------------------------------------------
def render_memory(answer, workload) -> None:
    from rich.table import Table

    from layerwise.report.console import out

    report, fit = answer.report, answer.fit
    scope = "per device" if report.per_device else "one device"
    title = (f"{report.model}: {workload.mode}, batch {workload.batch}, {workload.precision}, "
             f"{workload.optimizer if workload.mode == 'train' else 'inference'}, {scope}")
    table = Table(title=title)
    table.add_column("component")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    comps = report.components.as_dict()
    total = report.peak_bytes
    for key in COMPONENTS:
        if comps[key] or key in ("weights", "activations"):
            share = f"{100 * comps[key] / total:.1f}%" if total else "-"
            table.add_row(key, f"{comps[key]:,}", human(comps[key]), share, _bar(comps[key], total, key))
    table.add_row("[bold]peak[/]", f"[bold]{total:,}[/]", f"[bold]{human(total)}[/]", "",
                  f"{report.peak_phase} ({report.peak_where or '-'})")
    out.print(table)
    out.print("phase peaks: " + ", ".join(f"{name} {human(total)}" for name, total in _phase_peaks(report)))
    if report.cuda_allocator is not None:
        out.print(allocator_line(report.cuda_allocator))
    if report.device_overhead_bytes:
        out.print(f"device overhead (CUDA context + allocator cache, an estimate, not in the peak): "
                  f"{human(report.device_overhead_bytes)}")
    if fit is not None:
        verdict = "fits" if fit["fits"] else "does not fit"
        seq = (f"; longest context that fits at batch {workload.batch}: {fit['max_seq']:,} tokens (the "
               f"model's max {fit['model_max_seq']:,})") if "max_seq" in fit else ""
        out.print(f"budget {human(fit['budget_bytes'])}: {verdict}; largest batch that fits: {fit['max_batch']}{seq}")
    for note in report.notes:
        out.print(f"note: {note}")
    if answer.timeline is not None:
        from layerwise.report.timeline import render_sparkline

        render_sparkline(answer.timeline)
    if answer.verdicts is not None:
        render_verdicts(answer.verdicts)


def verdict_line(v) -> str:
    """'fits on h100-sxm (80.0 GiB) with 12.3 GiB to spare; largest batch 6; longest context 12,288'."""
    head = (f"fits on {v.gpu} ({human(v.memory_bytes)}) with {human(v.spare_bytes)} to spare" if v.fits else
            f"does not fit on {v.gpu} ({human(v.memory_bytes)}): {human(-v.spare_bytes)} short")
    context = f"; longest context {v.max_seq:,}" if v.max_seq is not None else ""
    return f"{head}; largest batch {v.max_batch:,}{context}"


def render_verdicts(verdicts) -> None:
    from layerwise.report.console import out

    if verdicts:
        out.print(f"per GPU (CUDA defaults; device overhead {human(verdicts[0].device_overhead_bytes)} "
                  f"estimated apart, included in the verdict):")
    for v in verdicts:
        out.print(f"  {verdict_line(v)}")


def render_verify(name: str, analytic, measured, lines=None) -> None:
    from rich.table import Table

    from layerwise.report.console import out

    data = verify_json(analytic, measured)
    table = Table(title=f"{name}: analytic vs measured (peak in {analytic.peak_phase} / {measured.peak_phase})")
    for col, justify in (("component", "left"), ("analytic", "right"), ("measured", "right"),
                         ("error", "right"), ("", "right")):
        table.add_column(col, justify=justify)
    a, m = analytic.components.as_dict(), measured.components
    for key in COMPONENTS:
        if a[key] or m[key]:
            table.add_row(key, f"{a[key]:,}", f"{m[key]:,}", f"{a[key] - m[key]:+,}", _pct(data["error"][key]))
    table.add_row("[bold]peak[/]", f"{analytic.peak_bytes:,}", f"{measured.peak_bytes:,}",
                  f"{analytic.peak_bytes - measured.peak_bytes:+,}", _pct(data["error"]["peak_bytes"]))
    for key, label in zip(CUDA_KEYS, ("CUDA allocated (est.)", "CUDA reserved (est.)")):
        if key in data["error"]:
            a_v, m_v = data["analytic"][key], data["measured"][key]
            table.add_row(label, f"{a_v:,}", f"{m_v:,}", f"{a_v - m_v:+,}", _pct(data["error"][key]))
    out.print(table)
    if lines is not None:
        from layerwise.report.timeline import render_boundaries, render_sparkline

        render_sparkline(lines[0], " analytic")
        render_sparkline(lines[1], " measured")
        render_boundaries(*lines)


def allocator_line(peaks) -> str:
    """The caching allocator's view (cost/cuda_alloc.py): named as an estimate."""
    return (f"CUDA caching allocator (estimate: PyTorch's rules replayed over the step's tensors): "
            f"allocated {peaks.allocated:,} B ({human(peaks.allocated)}, torch.cuda.max_memory_allocated), "
            f"reserved {peaks.reserved:,} B ({human(peaks.reserved)}, max_memory_reserved, {peaks.segments} segments)")


def _pct(err: dict) -> str:
    return "-" if err["relative"] is None else f"{100 * err['relative']:+.2f}%"


def _bar(value: int, total: int, key: str) -> str:
    """A horizontal bar of value/total, BAR_WIDTH cells wide, in the component's colour."""
    cells = round(BAR_WIDTH * value / total) if total else 0
    return f"[{COLOURS[key]}]{'█' * cells}[/]{'·' * (BAR_WIDTH - cells)}" if total else ""


def _phase_peaks(report) -> list[tuple[str, int]]:
    best: dict[str, int] = {}
    for phase in report.phases:
        best[phase.name] = max(best.get(phase.name, 0), phase.total)
    return list(best.items())
