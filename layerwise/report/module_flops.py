"""Rendering of a user module's FLOPs (FlopCounterMode per submodule)."""
from __future__ import annotations

from rich.table import Table

from layerwise.report.console import out
from layerwise.report.fmt import count, shape

CONVENTION = ("1 multiply-add = 2 FLOPs; FlopCounterMode on your module: matmul, convolution and attention "
              "only (norms, activations and the loss are not counted)")


def module_flops_json(name: str, mode: str, in_shape, types: dict, flops: dict) -> dict:
    return {
        "model": name, "mode": mode, "input_shape": list(in_shape),
        "forward": flops["forward"], "backward": flops["backward"], "total": flops["forward"] + flops["backward"],
        "matmul_forward": flops["forward"], "convention": CONVENTION,
        "per_layer": [{"path": path, "type": types.get(path, ""), "forward": f, "backward": b, "matmul_forward": f}
                      for path, (f, b) in flops["per_module"].items() if path],
    }


def render_module_flops(name: str, mode: str, in_shape, types: dict, flops: dict, max_level: int) -> None:
    train = mode == "train"
    table = Table(title=f"{name}: {'training step' if train else 'forward'} on {shape(in_shape)}",
                  title_justify="left")
    for col in ("module (path)", "type", "forward") + (("backward",) if train else ()):
        table.add_column(col, justify="left" if col in ("module (path)", "type") else "right")
    for path, (f, b) in flops["per_module"].items():
        level = path.count(".") + 1
        if not path or level > max_level:
            continue
        label = "  " * (level - 1) + path.rsplit(".", 1)[-1]
        table.add_row(label, types.get(path, ""), count(f), *((count(b),) if train else ()))
    out.print(table)
    total = flops["forward"] + flops["backward"]
    out.print(f"forward {count(flops['forward'])} ({flops['forward']:,})"
              + (f"; backward {count(flops['backward'])}; total {count(total)} ({total:,})" if train else ""))
    out.print(CONVENTION)
