"""Compression benchmark on sklearn's 8x8 digits (1797 images): CNN and ViT, int8 quantization,
50% structured pruning + fine-tuning, and a distilled student against the same spec trained alone.
The CNN's table also holds quantization-aware training (compress/qat.py) against static PTQ.
Prints one table per model. Run: .venv/bin/python bench/compress.py  (a few minutes on 2 cores;
ONLY_CNN=1: the CNN's table alone)."""
from __future__ import annotations

import copy
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "compress"))
import _compress_models as models  # noqa: E402

from layerwise.compress.finetune import FinetuneConfig, accuracy, train_loop  # noqa: E402
from layerwise.compress.qfile import save_model  # noqa: E402
from layerwise.compress.qat import qat  # noqa: E402
from layerwise.compress.quantize import quantize  # noqa: E402
from layerwise.compress.schedule import iterative_prune  # noqa: E402
from layerwise.compress.structured import prune_structured  # noqa: E402
from layerwise.cost.quant_size import quant_size  # noqa: E402
from layerwise.export.latency import measure_latency  # noqa: E402
from layerwise.report.compress import Row, render_lines, render_table  # noqa: E402

SHAPE = (1, 1, 8, 8)
QAT_EPOCHS = 2  # fake-quantized fine-tuning after the fp32 training (the second with observers frozen)


def digits(batch: int = 64):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1400], perm[1400:]
    train = [(x[tr[i:i + batch]], y[tr[i:i + batch]]) for i in range(0, len(tr), batch)]
    test = [(x[te[i:i + 256]], y[te[i:i + 256]]) for i in range(0, len(te), 256)]
    return train, test


def row(name, module, spec_params, flops, test, path, latency=True) -> Row:
    size = save_model(module, path)
    lat = measure_latency(module, torch.randn(32, 1, 8, 8), iters=30, compiled=False)[0].p50_ms if latency else None
    return Row(name, size, spec_params, flops, accuracy(module, test), lat)


def bench_model(name, spec, train, test, tmp, epochs, qmodes):
    torch.manual_seed(0)
    module = spec.build()
    train_loop(module, train, FinetuneConfig(epochs=epochs, lr=2e-3, seed=0))
    rows = [row("original fp32", module, spec.params().total, spec.flops(SHAPE).fwd_matmul, test, f"{tmp}/f.st")]
    calib = [b[0] for b in train[:6]]
    for qmode in qmodes:
        q = quantize(module, qmode, calibration=calib)
        rows.append(row(f"quantized {qmode}", q, spec.params().total, spec.flops(SHAPE).fwd_matmul, test,
                        f"{tmp}/q.st"))
        if qmode == "static":  # quantization-aware training of the same model, converted to the same int8
            q = qat(module, train, epochs=QAT_EPOCHS, lr=1e-4, seed=0)
            rows.append(row(f"QAT int8, {QAT_EPOCHS} epochs", q, spec.params().total, spec.flops(SHAPE).fwd_matmul,
                            test, f"{tmp}/qat.st"))
    one_shot = accuracy(prune_structured(spec, module, SHAPE, 0.5).module, test)
    stages = iterative_prune(spec, module, SHAPE, 0.5, steps=2, finetune=lambda m: train_loop(
        m, train, FinetuneConfig(epochs=max(1, epochs // 2), lr=1e-3, seed=1)))
    body, p = stages[-1].body, stages[-1].module
    rows.append(row("pruned 50% structured, 2 stages + ft", p, body.params().total, body.flops(SHAPE).fwd_matmul,
                    test, f"{tmp}/p.st"))
    render_table(f"{name}: compression on digits (test n={sum(len(b[1]) for b in test)})", rows)
    lines = [f"  50% cut in one shot, before fine-tuning: {100 * one_shot:.2f}%; pruned module params "
             f"{sum(x.numel() for x in p.parameters())} = spec {body.params().total}"]
    for mode in qmodes:
        q = quant_size(spec, mode)
        fp32 = sum(layer.bytes for layer in q.layers if layer.kind == "fp32")
        lines.append(f"  {mode}: predicted file {q.total_bytes:,} B (header {q.header_bytes:,}, fp32 tensors {fp32:,})")
    render_lines(lines)
    return module


def bench_qat(train, test, tmp, epochs):
    """A model small enough that int8 costs accuracy (the distillation student): PTQ static, PTQ after
    the same extra fine-tuning QAT gets (so the extra epochs are not what is measured), and QAT."""
    spec = models.cnn(c1=2, c2=4)
    flops, params = spec.flops(SHAPE).fwd_matmul, spec.params().total
    torch.manual_seed(0)
    module = spec.build()
    train_loop(module, train, FinetuneConfig(epochs=epochs, lr=2e-3, seed=0))
    calib = [b[0] for b in train[:6]]
    tuned = copy.deepcopy(module)
    train_loop(tuned, train, FinetuneConfig(epochs=QAT_EPOCHS, lr=1e-4, seed=0))
    rows = [row("original fp32", module, params, flops, test, f"{tmp}/f.st"),
            row("PTQ static", quantize(module, "static", calibration=calib), params, flops, test, f"{tmp}/p.st"),
            row(f"fp32 +{QAT_EPOCHS} ep, then PTQ", quantize(tuned, "static", calibration=calib), params, flops, test,
                f"{tmp}/t.st"),
            row(f"QAT int8, {QAT_EPOCHS} epochs", qat(module, train, epochs=QAT_EPOCHS, lr=1e-4, seed=0), params, flops,
                test, f"{tmp}/q.st")]
    render_table(f"cnn c1=2 c2=4: QAT vs PTQ on digits (test n={sum(len(b[1]) for b in test)})", rows)


def bench_distill(teacher, train, test, epochs):
    student_spec = models.cnn(c1=2, c2=4)
    res = {}
    for label, alpha in (("alone", 0.0), ("distilled", 0.7)):
        torch.manual_seed(0)
        s = student_spec.build()
        train_loop(s, train, FinetuneConfig(epochs=epochs, lr=2e-3, seed=0, alpha=alpha, temperature=4.0),
                   teacher=teacher if alpha else None)
        res[label] = accuracy(s, test)
    diff = 100 * (res["distilled"] - res["alone"])
    verdict = "beats" if diff > 0 else "does NOT beat"
    render_lines([f"distillation (student cnn c1=2 c2=4, {student_spec.params().total} params; T=4, alpha=0.7): "
                  f"alone {100 * res['alone']:.2f}%, distilled {100 * res['distilled']:.2f}% -> distilled {verdict} "
                  f"alone by {diff:+.2f} pt"])


def main():
    torch.set_num_threads(1)  # latency columns: one thread, so other processes disturb them less
    from layerwise.presets import get_preset

    train, test = digits()
    epochs = int(os.environ.get("EPOCHS", "12"))
    with tempfile.TemporaryDirectory() as tmp:
        teacher = bench_model("digits-cnn", get_preset("digits-cnn").body, train, test, tmp, epochs, ["static"])
        bench_qat(train, test, tmp, epochs)
        if os.environ.get("ONLY_CNN") == "1":  # the CNN tables (PTQ static vs QAT) alone
            return
        bench_model("digits-vit", get_preset("digits-vit").body, train, test, tmp, epochs,
                    ["dynamic", "weight-int8", "weight-int4"])
        if os.environ.get("WIDE_VIT", "1") == "1":  # the same ViT 4x wider: the fp32 rest and header matter less
            bench_model("digits-vit d_model=128", get_preset("digits-vit", d_model=128, d_ff=256).body, train, test,
                        tmp, epochs, ["dynamic"])
        bench_distill(teacher, train, test, epochs)


if __name__ == "__main__":
    main()
