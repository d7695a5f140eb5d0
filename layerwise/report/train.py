"""Rendering of training: the start banner, a live progress bar (loss, lr, throughput, ETA), the
end-of-run summary, and `layerwise evaluate` tables. Driven by the trainer's events; stderr for
progress, stdout for results."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from layerwise.report.console import err, out
from layerwise.report.progress import Counted


def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class TrainReporter:
    """`on_event` for layerwise.train.trainer.train."""

    def __init__(self, quiet: bool = False, json: bool = False, threads: int | None = None):
        self.quiet = quiet or json  # quiet: no banner or progress; the summary still prints
        self.json = json  # the caller prints the result as JSON instead of the summary
        self.threads = threads
        self.progress: Counted | None = None
        self.last_val = ""
        self.rank = 0

    def __call__(self, kind: str, p: dict) -> None:
        if kind == "start":
            self.rank = p.get("rank", 0)
        if self.rank != 0:  # under torchrun only rank 0 reports
            return
        getattr(self, f"_{kind}", lambda p: None)(p)

    def _start(self, p: dict) -> None:
        d = p["data"]
        for w in p["warnings"]:
            err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
        if self.quiet:
            return
        sizes = ", ".join(f"{k} {v}" for k, v in d["sizes"].items())
        err.print(f"[bold]{p['model']}[/] ({p['task']}): {p['trainable_params']:,} trainable parameters; "
                  f"data {d['source']}: {sizes}" + (f"; {d['n_classes']} classes" if d.get("n_classes") else "")
                  + (f"; {d['tokenizer']} tokens, vocab {d['vocab_size']}" if d.get("tokenizer") else ""), highlight=False)
        if d.get("class_counts"):
            err.print(f"  train class counts: {d['class_counts']['train']}", highlight=False)
        err.print(f"  predicted peak memory of one step: {_bytes(p['predicted_peak_bytes'])}"
                  + (f"; world size {p['world']}" if p["world"] > 1 else "")
                  + (f"; {self.threads} torch thread(s)" if self.threads else ""), highlight=False)
        self.progress = Counted("train", p["total_steps"], unit="steps").__enter__()
        self.progress.start_at(p["start_step"])

    def _memory(self, p: dict) -> None:
        if self.progress:
            what = "allocator peak" if str(p["device"]).startswith("cuda") else "live tensor storage, tracked"
            self.progress.print(f"  measured peak memory (step 2, {what}): {_bytes(p['measured_peak_bytes'])}"
                                f" (predicted {_bytes(p['predicted_peak_bytes'])})")

    def _step(self, p: dict) -> None:
        if self.progress:
            info = f"loss {p['loss']:.4f} lr {p['lr']:.2e} {p['samples_per_s']:.0f} samples/s{self.last_val}"
            self.progress.update(p["step"], info)

    def _eval(self, p: dict) -> None:
        r = p["result"]
        self.last_val = f" | val loss {r['loss']:.4f}" + (f" acc {r['accuracy']:.3f}" if r["task"] in ("classify", "seq2seq") else
                                                          f" R2 {r['r2']:.3f}" if r["task"] == "regress" else
                                                          f" ppl {r['perplexity']:.2f}")
        if self.progress:
            self.progress.update(self.progress.done, self.progress.info.split(" | ")[0] + self.last_val)

    def _end(self, p: dict) -> None:
        self.close()
        if not self.json:
            summary(p["result"])

    def close(self) -> None:
        """Stop the bar (also when the run ends in an error)."""
        if self.progress:
            self.progress.__exit__(None, None, None)
            self.progress = None


def summary(r: dict) -> None:
    """End-of-run table on stdout."""
    t = Table(title=f"run {r['run_dir']}: {r['status']}", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value")
    t.add_row("steps", f"{r['steps']} / {r['total_steps']} (epoch {r['epoch']})")
    t.add_row("time", f"{r['train_seconds']:.1f} s, {r['samples_per_s']:.0f} samples/s")
    if r["best_metric"] is not None:
        t.add_row(f"best {r['monitor']}", f"{r['best_metric']:.4f} at step {r['best_step']}")
    for split in ("val", "test"):
        e = r.get(split)
        if e:
            t.add_row(f"{split} loss", f"{e['loss']:.4f}")
            if e.get("r2") is not None:
                t.add_row(f"{split} MSE / MAE / R2", f"{e['mse']:.4g} / {e['mae']:.4g} / {e['r2']:.4f}")
                continue
            t.add_row(f"{split} accuracy", f"{e['accuracy']:.4f}")
            if e.get("perplexity") is not None:
                t.add_row(f"{split} perplexity", f"{e['perplexity']:.3f}")
    t.add_row("peak memory", f"predicted {_bytes(r['predicted_peak_bytes'])}, measured {_bytes(r['measured_peak_bytes'])}")
    out.print(t)
    if r["status"] == "interrupted":
        out.print(f"interrupted: resume with `layerwise train ... --out {r['run_dir']} --resume`")


def eval_table(name: str, e: dict, class_names: list[str] | None = None) -> None:
    """`layerwise evaluate`: loss/accuracy (perplexity), per-class precision/recall/F1, macro-F1, confusion."""
    if e.get("r2") is not None:
        out.print(f"[bold]{escape(name)}[/]: {e['n']} samples, loss {e['loss']:.4f} (standardised), MSE {e['mse']:.4g}, "
                  f"MAE {e['mae']:.4g}, R2 {e['r2']:.4f}", highlight=False)
        return
    out.print(f"[bold]{escape(name)}[/]: {e['n']} {'tokens' if e['task'] in ('lm', 'mlm', 'seq2seq') else 'samples'}, loss {e['loss']:.4f}, "
              f"accuracy {e['accuracy']:.4f}" + (f", perplexity {e['perplexity']:.3f}" if e.get("perplexity") else "")
              + (f", macro-F1 {e['macro_f1']:.4f}" if e.get("macro_f1") is not None else ""),
              highlight=False)
    if not e.get("precision"):
        return
    names = class_names or [str(i) for i in range(len(e["precision"]))]
    t = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        t.add_column(col, justify="right")
    for i, (p, rc, f1) in enumerate(zip(e["precision"], e["recall"], e["f1"])):
        t.add_row(names[i] if i < len(names) else str(i), f"{p:.3f}", f"{rc:.3f}", f"{f1:.3f}", str(sum(e["confusion"][i])))
    out.print(t)
    c = Table(title="confusion (rows: true, columns: predicted)", title_justify="left")
    c.add_column("")
    for i in range(len(e["confusion"])):
        c.add_column(names[i] if i < len(names) else str(i), justify="right")
    for i, row in enumerate(e["confusion"]):
        c.add_row(names[i] if i < len(names) else str(i), *[str(v) for v in row])
    out.print(c)
