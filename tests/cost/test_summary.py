"""The summary reading: the split by layer type charges projections to their family."""
from layerwise.cost.summary import summarize
from layerwise.presets import get_preset


def test_gpt2_by_type_matches_the_textbook_split():
    # GPT-2 small (d=768, L=12, d_ff=4d): attention = L·(4d² + 4d) (q, k, v, o with biases),
    # FFN = L·(8d² + 5d) (up 4d² + 4d, down 4d² + d), embeddings V·d, positions 1024·d,
    # LayerNorms (2 per layer + final) 2d each; the tied head adds nothing.
    d, L, V = 768, 12, 50257
    model = get_preset("gpt2")
    s = summarize(model.name, model.body, (1, 16))
    assert s.by_type == {"ffn": L * (8 * d * d + 5 * d), "embedding": V * d, "attention": L * (4 * d * d + 4 * d),
                         "learned_positions": 1024 * d, "layernorm": (2 * L + 1) * 2 * d}
    assert sum(s.by_type.values()) == s.params.total == 124_439_808


def test_layer_rows_are_subtree_totals():
    model = get_preset("digits-cnn")
    s = summarize(model.name, model.body, (2, 1, 8, 8))
    top = [r for r in s.layers if r.level == 1]
    assert sum(r.params for r in top) == s.params.total
    assert s.output_shape == (2, 10)
