"""Rendering of `layerwise generate`: the text, then a few lines of decoding statistics; or JSON."""
from __future__ import annotations

from layerwise.report.console import out


def _decode_json(g) -> dict:
    return {"seconds": g.seconds, "tokens_per_s": g.tokens_per_s, "target_calls": g.target_calls}


def generate_json(r, *, run_dir, draft_dir, prompt: str, sampling, seed: int) -> dict:
    g = r.output
    data = {
        "run_dir": str(run_dir),
        "prompt": prompt,
        "prompt_tokens": len(r.prompt_ids),
        "text": r.text,
        "tokens": list(g.tokens),
        "new_tokens": len(g.tokens),
        "decoding": "greedy" if sampling.greedy else "sampled",
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "seed": None if sampling.greedy else seed,
        "plain": _decode_json(r.plain),
    }
    if r.speculative is None:
        return data
    s = r.speculative
    data["speculative"] = {**_decode_json(s), "draft_run_dir": str(draft_dir), "lookahead": r.lookahead,
                           "rounds": s.rounds, "drafted": s.drafted, "accepted": s.accepted,
                           "acceptance_rate": s.acceptance_rate, "tokens_per_round": len(s.tokens) / s.rounds}
    data["speedup"] = r.speedup
    if sampling.greedy:  # the guarantee, checked on this very run
        data["same_as_plain"] = s.tokens == r.plain.tokens
    return data


def render_generate(r, *, sampling, seed: int) -> None:
    out.print(r.text, markup=False, highlight=False)
    how = "greedy" if sampling.greedy else (f"sampled (temperature {sampling.temperature:g}, top-k {sampling.top_k}, "
                                             f"top-p {sampling.top_p:g}, seed {seed})")
    p = r.plain
    lines = [f"\n{len(r.output.tokens)} new tokens after a {len(r.prompt_ids)}-token prompt, {how}",
             f"plain decoding: {p.seconds:.3f} s, {p.tokens_per_s:,.1f} tokens/s ({p.target_calls} target forwards)"]
    s = r.speculative
    if s is not None:
        lines += [f"speculative (lookahead {r.lookahead}): {s.seconds:.3f} s, {s.tokens_per_s:,.1f} tokens/s "
                  f"({s.target_calls} target forwards)",
                  f"accepted {s.accepted} of {s.drafted} draft tokens ({s.acceptance_rate:.1%}), "
                  f"{len(s.tokens) / s.rounds:.2f} tokens per target forward; speed-up {r.speedup:.2f}x"]
        if sampling.greedy:
            lines.append("same tokens as plain greedy decoding: " + ("yes" if s.tokens == p.tokens else "NO"))
    out.print("\n".join(lines), markup=False, highlight=False)
