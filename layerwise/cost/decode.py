"""The decode steps of an inference with --new-tokens (a causal decoder LM with a KV cache): their
transient peak, which the prefill's can miss (a short prompt, many new tokens, attention reading
every cached position).

measure/step.py's _decode runs the prefill, then `new_tokens` calls of one token each at positions
S .. S + new_tokens - 1, all in one torch.no_grad() and one autocast region. During the call at
position `start`, besides the weights and the cache, these are alive: the prompt's ids (the
measured input), the previous call's logits (`out`, rebound only when the call returns: the
prefill's (B, S, V) during the first step, a (B, 1, V) after), the next token (B, 1) int64 (the
call's input), autocast's cast of every weight (cached since the prefill: the region never
closes) and the call's own forward, whose attention reads the cache's first start + 1 positions
(a full rolling window buffer: all of it). A step's transients grow with start; the first has the
prompt's logits: the first and the last steps are the candidates."""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.cost.precision import nbytes


@dataclass(frozen=True)
class DecodePeak:
    activations: int  # the live bytes at the step's peak besides the weights and the cache
    where: str  # the block path of that moment


def decode_peak(model, workload, prefill) -> DecodePeak:
    """The highest decode step. `prefill`: memory.trace_step's StepTrace of the prefill (its weight
    casts, its input ids)."""
    from layerwise.cost.memory import trace_step

    seq = model.input_shape(workload.batch, workload.seq, workload.image)[1]
    total = seq + workload.new_tokens
    casts = prefill.trace.cast_cache_bytes()
    prompt = prefill.trace.input_bytes
    best = DecodePeak(0, "")
    for start in sorted({seq, total - 1}):
        st = trace_step(replace(model, task="none"), replace(workload, seq=1), lumping=True, decode=(start, total))
        tr = st.trace
        out = tr.liveness.peak  # its own input (the next token) included
        logits = _logits_bytes(tr, st)  # the call's own (B, 1, V)
        carried = logits * seq if start == seq else logits  # the previous call's
        total_bytes = prompt + carried + casts + out
        if total_bytes > best.activations:
            best = DecodePeak(total_bytes, f"{tr.liveness.where} (decode at {start})")
    return best


def _logits_bytes(tr, st) -> int:
    """The model's output of one step: the last storage the forward made (memory.StepTrace's key)."""
    for key, n in reversed(tr.liveness.events):
        if key == st.output_key and n:
            return n
    raise AssertionError("the decode step's output was not traced")
