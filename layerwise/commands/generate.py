"""`layerwise generate RUN_DIR --prompt TEXT [--draft RUN_DIR2 --lookahead K]`: text from a trained
language model, greedy or sampled, optionally with speculative decoding."""
from __future__ import annotations

from typing import Optional

import typer

from layerwise.commands._options import threads_option


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(
        run_dir: str = typer.Argument(..., help="a run directory of a language model (`layerwise train`)"),
        prompt: str = typer.Option(..., "--prompt", help="the text to continue"),
        new_tokens: int = typer.Option(64, "--new-tokens", help="tokens to generate"),
        draft: Optional[str] = typer.Option(None, "--draft", help="run directory of a smaller draft LM (same "
                                                                  "tokenizer): speculative decoding"),
        lookahead: Optional[int] = typer.Option(None, "--lookahead", help="draft tokens per round, K (needs --draft; "
                                                                          "default 4)"),
        temperature: float = typer.Option(0.0, "--temperature", help="0: greedy; > 0: sample"),
        top_k: int = typer.Option(0, "--top-k", help="sample from the k most likely tokens (0: all)"),
        top_p: float = typer.Option(1.0, "--top-p", help="sample from the smallest set reaching this probability"),
        seed: Optional[int] = typer.Option(None, "--seed", help="random seed of a sampled decode (default 0)"),
        which: str = typer.Option("best", "--which", help="checkpoint: best, last, step-N or merged"),
        threads: Optional[int] = threads_option(),
        json: bool = typer.Option(False, "--json", help="JSON output"),
    ):
        """Continue --prompt with the run's model and KV cache. With --draft, decode twice on this
        machine (plain, then speculative) and report the draft's acceptance rate and the speed-up."""
        from layerwise import threads as th
        from layerwise.generate.run import generate as run_generate
        from layerwise.generate.sampling import Sampling
        from layerwise.report.console import print_json
        from layerwise.report.generate import generate_json, render_generate
        from layerwise.spec.errors import LayerwiseError

        if lookahead is not None and draft is None:
            raise LayerwiseError("--lookahead: needs --draft RUN_DIR (the draft model that proposes the tokens)")
        sampling = Sampling(temperature, top_k, top_p)
        if seed is not None and sampling.greedy:
            raise LayerwiseError("--seed: greedy decoding draws no random numbers; give a --temperature > 0 to sample")
        seed = 0 if seed is None else seed
        th.use(threads, 0)  # one-token forwards are tiny: one thread unless told (README, Threads)
        r = run_generate(run_dir, prompt, new_tokens=new_tokens, sampling=sampling, seed=seed, draft_dir=draft,
                         lookahead=4 if lookahead is None else lookahead, which=which)
        if json:
            print_json(generate_json(r, run_dir=run_dir, draft_dir=draft, prompt=prompt, sampling=sampling, seed=seed))
        else:
            render_generate(r, sampling=sampling, seed=seed)
