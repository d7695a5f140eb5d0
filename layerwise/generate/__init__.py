"""Text generation from a trained decoder LM with its KV cache: plain (greedy or sampled) decoding
and speculative decoding with a smaller draft model (Leviathan et al. 2023; Chen et al. 2023)."""
