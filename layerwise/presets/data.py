"""Known architectures as data: name -> (family, keywords, source).

Keywords are those of the family's builder (presets/families.py); anything left out takes the
family default. Sources name where the numbers come from (paper, config.json, repo).
"""
from __future__ import annotations

_HF = "https://huggingface.co/{}/blob/main/config.json"
# BartForConditionalGeneration's wiring at its config.json values (layerwise.presets.hf_seq2seq)
# T5ForConditionalGeneration's wiring (layerwise.presets.hf_seq2seq; transformers 5 ties lm_head to `shared`)
_T5 = dict(vocab_size=32128, max_seq=512, bias=False, norm="rmsnorm", norm_eps=1e-6, norm_position="pre",
           positions="none", tie_embeddings=True, head_bias=False, dropout=0.1, rel_buckets=32, activation="relu")
_BART = dict(vocab_size=50265, max_seq=1024, pos_rows=1026, activation="gelu", norm_position="post", final_norm=False,
             positions="learned", embed_norm=True, tie_embeddings=True, head_bias=False, dropout=0.1, ffn_dropout=0.0)

# Shared keyword sets (the architecture; sizes are added per preset).
_GPT2 = dict(vocab_size=50257, max_seq=1024, norm="layernorm", activation="gelu_tanh", tie_embeddings=True)
_LLAMA = dict(norm="rmsnorm", norm_eps=1e-5, activation="silu", gated=True, ffn_bias=False, qkv_bias=False,
              o_bias=False, positions="rope", tie_embeddings=False)
_NEOX = dict(vocab_size=50304, max_seq=2048, norm="layernorm", activation="gelu", positions="rope", rotary_pct=0.25,
             parallel=True, shared_norm=False, tie_embeddings=False)
_BERT = dict(vocab_size=30522, max_seq=512, type_vocab_size=2, activation="gelu", norm_eps=1e-12)
_VIT = dict(image_size=224, patch=16, n_classes=1000, norm_eps=1e-6)

PRESETS: dict[str, tuple[str, dict, str]] = {
    # GPT-2 (Radford et al. 2019; tied head, pre-LN, learned positions)
    "gpt2": ("decoder", dict(_GPT2, d_model=768, n_layers=12, n_heads=12), _HF.format("openai-community/gpt2")),
    "gpt2-medium": ("decoder", dict(_GPT2, d_model=1024, n_layers=24, n_heads=16), _HF.format("openai-community/gpt2-medium")),
    "gpt2-large": ("decoder", dict(_GPT2, d_model=1280, n_layers=36, n_heads=20), _HF.format("openai-community/gpt2-large")),
    "gpt2-xl": ("decoder", dict(_GPT2, d_model=1600, n_layers=48, n_heads=25), _HF.format("openai-community/gpt2-xl")),
    # GPT-3 175B (Brown et al. 2020, "Language Models are Few-Shot Learners", arXiv 2005.14165, Table 2.1:
    # 96 layers, d_model 12288, 96 heads of 128, n_ctx 2048; GPT-2's architecture and 50257-token BPE).
    # Dense attention in every layer (the paper alternates dense and locally banded sparse layers; the
    # textbook memory figures this preset is checked against assume dense). The paper states no dropout
    # rate, so none is set (`memory --explain` adds dropout for the textbook set-up).
    "gpt3-175b": ("decoder", dict(_GPT2, d_model=12288, n_layers=96, n_heads=96, max_seq=2048),
                  "arXiv 2005.14165 (Brown et al. 2020) Table 2.1; GPT-2 architecture, dense attention"),
    # Llama 2 (Touvron et al. 2023, arXiv 2307.09288, Table 1; GQA for 70B)
    "llama-2-7b": ("decoder", dict(_LLAMA, vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                                   max_seq=4096), _HF.format("meta-llama/Llama-2-7b-hf")),
    "llama-2-13b": ("decoder", dict(_LLAMA, vocab_size=32000, d_model=5120, n_layers=40, n_heads=40, d_ff=13824,
                                    max_seq=4096), _HF.format("meta-llama/Llama-2-13b-hf")),
    "llama-2-70b": ("decoder", dict(_LLAMA, vocab_size=32000, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                                    d_ff=28672, max_seq=4096), _HF.format("meta-llama/Llama-2-70b-hf")),
    # Llama 3 (Dubey et al. 2024, arXiv 2407.21783, Table 3: vocab 128K, GQA 8, theta 500000)
    "llama-3-8b": ("decoder", dict(_LLAMA, vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                                   d_ff=14336, max_seq=8192, rope_base=500000.0), _HF.format("meta-llama/Meta-Llama-3-8B")),
    "llama-3-70b": ("decoder", dict(_LLAMA, vocab_size=128256, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                                    d_ff=28672, max_seq=8192, rope_base=500000.0), _HF.format("meta-llama/Meta-Llama-3-70B")),
    # Mistral 7B (Jiang et al. 2023, arXiv 2310.06825, Table 1; sliding window 4096)
    "mistral-7b": ("decoder", dict(_LLAMA, vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                                   d_ff=14336, max_seq=32768, sliding_window=4096), _HF.format("mistralai/Mistral-7B-v0.1")),
    # Mixtral 8x7B (Jiang et al. 2024, arXiv 2401.04088, Table 1: 8 experts, top-2)
    "mixtral-8x7b": ("decoder", dict(_LLAMA, vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                                     d_ff=14336, max_seq=32768, rope_base=1e6, n_experts=8, top_k=2),
                     _HF.format("mistralai/Mixtral-8x7B-v0.1")),
    # Qwen2 7B (Yang et al. 2024, arXiv 2407.10671, Table 1): bias on q, k, v only
    "qwen2-7b": ("decoder", dict(_LLAMA, vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
                                 d_ff=18944, max_seq=32768, rope_base=1e6, norm_eps=1e-6, qkv_bias=True),
                 _HF.format("Qwen/Qwen2-7B")),
    # Phi-2: parallel attention + MLP behind one LayerNorm, partial rotary (32 of 80 dims), biases
    # everywhere, untied head with a bias (transformers PhiForCausalLM)
    "phi-2": ("decoder", dict(vocab_size=51200, d_model=2560, n_layers=32, n_heads=32, d_ff=10240, max_seq=2048,
                              norm="layernorm", activation="gelu_tanh", positions="rope", rotary_pct=0.4, parallel=True,
                              tie_embeddings=False, head_bias=True), _HF.format("microsoft/phi-2")),
    # BERT (Devlin et al. 2018, arXiv 1810.04805, section 3): BertModel with pooler
    # GPT-NeoX / Pythia (Biderman et al. 2023): parallel attention + MLP with two LayerNorms, 25% rotary
    "pythia-160m": ("decoder", dict(_NEOX, d_model=768, n_layers=12, n_heads=12), _HF.format("EleutherAI/pythia-160m")),
    "pythia-1b": ("decoder", dict(_NEOX, d_model=2048, n_layers=16, n_heads=8), _HF.format("EleutherAI/pythia-1b")),
    # Falcon-7B: parallel attention + MLP behind one LayerNorm, multi-query attention, no biases, tied head
    "falcon-7b": ("decoder", dict(vocab_size=65024, d_model=4544, n_layers=32, n_heads=71, n_kv_heads=1, d_ff=18176,
                                  max_seq=2048, norm="layernorm", activation="gelu", qkv_bias=False, o_bias=False,
                                  ffn_bias=False, positions="rope", parallel=True, shared_norm=True,
                                  tie_embeddings=True), _HF.format("tiiuae/falcon-7b")),
    # Qwen3: Llama wiring with RMSNorm on each head's q and k; 16 heads x 128 > hidden 1024
    "qwen3-0.6b": ("decoder", dict(_LLAMA, vocab_size=151936, d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8,
                                   d_head=128, d_ff=3072, max_seq=40960, norm_eps=1e-6, rope_base=1e6, qk_norm="rmsnorm",
                                   tie_embeddings=True), _HF.format("Qwen/Qwen3-0.6B")),
    # Gemma 1 (Gemma Team 2024): GeGLU, head_dim 256, multi-query at 2B, tied 256k-token embedding
    "gemma-2b": ("decoder", dict(_LLAMA, vocab_size=256000, d_model=2048, n_layers=18, n_heads=8, n_kv_heads=1,
                                 d_head=256, d_ff=16384, max_seq=8192, norm_eps=1e-6, activation="gelu_tanh",
                                 tie_embeddings=True, scale_embeddings=True), _HF.format("google/gemma-2b")),
    # Qwen MoE: many small experts; Qwen1.5-MoE adds a sigmoid-gated shared expert, Qwen3-MoE has none
    "qwen1.5-moe-a2.7b": ("decoder", dict(_LLAMA, vocab_size=151936, d_model=2048, n_layers=24, n_heads=16, d_ff=1408,
                                          max_seq=8192, norm_eps=1e-6, rope_base=1e6, qkv_bias=True, n_experts=60,
                                          top_k=4, shared_d_ff=5632, shared_gate=True),
                          _HF.format("Qwen/Qwen1.5-MoE-A2.7B")),
    "qwen3-30b-a3b": ("decoder", dict(_LLAMA, vocab_size=151936, d_model=2048, n_layers=48, n_heads=32, n_kv_heads=4,
                                      d_head=128, d_ff=768, max_seq=40960, norm_eps=1e-6, rope_base=1e6,
                                      qk_norm="rmsnorm", n_experts=128, top_k=8), _HF.format("Qwen/Qwen3-30B-A3B")),
    # Gemma 2 / 3 (Gemma Team 2024, 2025): + a norm on each branch's output ("sandwich"); Gemma 3 + q/k norm.
    # Gemma 2: scores and logits soft-capped (50, 30), every 2nd layer global, the others a 4096 window;
    # Gemma 3: every 6th layer global (rope 1e6), the others a 512 window (rope 1e4).
    "gemma-2-2b": ("decoder", dict(_LLAMA, vocab_size=256000, d_model=2304, n_layers=26, n_heads=8, n_kv_heads=4,
                                   d_head=256, d_ff=9216, max_seq=8192, norm_eps=1e-6, activation="gelu_tanh",
                                   sandwich=True, tie_embeddings=True, scale_embeddings=True, query_scale=256,
                                   attn_softcap=50.0, logit_softcap=30.0, sliding_window=4096, global_every=2),
                   _HF.format("google/gemma-2-2b")),
    "gemma-3-1b": ("decoder", dict(_LLAMA, vocab_size=262144, d_model=1152, n_layers=26, n_heads=4, n_kv_heads=1,
                                   d_head=256, d_ff=6912, max_seq=32768, norm_eps=1e-6, activation="gelu_tanh",
                                   qk_norm="rmsnorm", sandwich=True, rope_base=1e6, tie_embeddings=True,
                                   scale_embeddings=True, query_scale=256, sliding_window=512, global_every=6,
                                   local_rope_base=10000.0), _HF.format("google/gemma-3-1b-pt")),
    "bert-base": ("encoder", dict(_BERT, d_model=768, n_layers=12, n_heads=12), _HF.format("google-bert/bert-base-uncased")),
    "bert-large": ("encoder", dict(_BERT, d_model=1024, n_layers=24, n_heads=16), _HF.format("google-bert/bert-large-uncased")),
    # ViT (Dosovitskiy et al. 2020, arXiv 2010.11929, Table 1); torchvision vit_b_16 / vit_l_16
    "vit-b-16": ("vit", dict(_VIT, d_model=768, n_layers=12, n_heads=12), "arXiv 2010.11929 Table 1; torchvision/models/vision_transformer.py vit_b_16"),
    "vit-l-16": ("vit", dict(_VIT, d_model=1024, n_layers=24, n_heads=16), "arXiv 2010.11929 Table 1; torchvision/models/vision_transformer.py vit_l_16"),
    # ResNet (He et al. 2015, arXiv 1512.03385, Table 1); torchvision v1.5 (stride on the 3x3 conv)
    # CLIP ViT-B/32's image tower (Radford et al. 2021): pre-LN before the blocks, quick_gelu, CLS-only final norm
    "clip-vit-b-32": ("vit", dict(image_size=224, patch=32, d_model=768, n_layers=12, n_heads=12, d_ff=3072, n_classes=0,
                                  activation="quick_gelu", norm_eps=1e-5, clip=True),
                      "https://huggingface.co/openai/clip-vit-base-patch32/blob/main/config.json (vision_config)"),
    "resnet-18": ("resnet", dict(layers=(2, 2, 2, 2)), "arXiv 1512.03385 Table 1; torchvision/models/resnet.py resnet18"),
    "resnet-34": ("resnet", dict(layers=(3, 4, 6, 3)), "arXiv 1512.03385 Table 1; torchvision/models/resnet.py resnet34"),
    "resnet-50": ("resnet", dict(layers=(3, 4, 6, 3), bottleneck=True), "arXiv 1512.03385 Table 1; torchvision/models/resnet.py resnet50"),
    # Small models that train in seconds on a CPU
    # max_seq 64: stdlib lines are <= ~80 bytes; at 256 a CLI run stayed at chance (val accuracy 0.500)
    "text-gru": ("text_rnn", dict(vocab_size=256, d_embed=64, d_hidden=128, n_classes=2, max_seq=64),
                 "layerwise demo: byte-level GRU text classifier (Cho et al. 2014, arXiv 1406.1078)"),
    "digits-cnn": ("cnn", dict(c_in=1, image_size=8, channels=(16, 32), hidden=64, n_classes=10),
                   "layerwise demo for sklearn.datasets.load_digits (8x8 grey digits, 10 classes)"),
    "digits-vit": ("vit", dict(image_size=8, patch=2, c_in=1, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_classes=10),
                   "layerwise demo: a tiny ViT (arXiv 2010.11929) for sklearn.datasets.load_digits"),
    "tiny-gpt": ("decoder", dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_seq=128),
                 "layerwise demo: a byte-level GPT-2-style LM (nanoGPT-sized)"),
    # Encoder-decoders (layerwise.blocks.seq2seq). The design notes' example (002 section 4.1.3):
    # nn.Transformer's encoder and decoder stacks at its defaults (= the base model of Vaswani et al.
    # 2017, arXiv 1706.03762 Table 3: d_model 512, 8 heads, 6 + 6 layers, d_ff 2048, dropout 0.1),
    # one embedding for source and target, an output nn.Linear; the paper's sinusoidal positions
    # (the notes' code has none, which leaves the encoder blind to order); its 37k shared BPE vocabulary
    "transformer-base": ("seq2seq", dict(vocab_size=37000, d_model=512, n_layers=6, n_heads=8, d_ff=2048, max_seq=512,
                                         dropout=0.1, attn_dropout=0.1),
                         "arXiv 1706.03762 Table 3 (base); torch.nn.Transformer defaults; design note 002 section 4.1.3"),
    # BART (Lewis et al. 2019, arXiv 1910.13461): post-norm, GELU, learned positions (+2 rows), layernorm_embedding
    "bart-base": ("seq2seq", dict(_BART, d_model=768, n_layers=6, n_heads=12, d_ff=3072), _HF.format("facebook/bart-base")),
    "bart-large": ("seq2seq", dict(_BART, d_model=1024, n_layers=12, n_heads=16, d_ff=4096),
                   _HF.format("facebook/bart-large")),
    # T5 (Raffel et al. 2019, arXiv 1910.10683): pre-norm RMSNorm, no biases, relative position bias (32 buckets)
    "t5-small": ("seq2seq", dict(_T5, d_model=512, n_layers=6, n_heads=8, d_head=64, d_ff=2048),
                 _HF.format("google-t5/t5-small")),
    "flan-t5-base": ("seq2seq", dict(_T5, d_model=768, n_layers=12, n_heads=12, d_head=64, d_ff=2048, gated=True,
                                     activation="gelu_tanh"), _HF.format("google/flan-t5-base")),
    # Mamba (Gu and Dao 2023, arXiv 2312.00752): selective state-space blocks, no attention
    "mamba-130m": ("mamba", dict(vocab_size=50280, d_model=768, n_layers=24), _HF.format("state-spaces/mamba-130m-hf")),
    # DeepSeek-V2-Lite (arXiv 2405.04434, appendix B; refdata/hf-configs/deepseek-v2-lite.json): MLA without a
    # query bottleneck, 64 routed experts (top 6) + 2 shared, the first layer dense; 15.7B parameters
    "deepseek-v2-lite": ("deepseek", dict(vocab_size=102400, d_model=2048, n_layers=27, n_heads=16, max_seq=163840,
                                          d_ff=10944, n_experts=64, top_k=6, d_expert=1408, n_shared=2, n_dense=1,
                                          scale=0.1147213867929261), _HF.format("deepseek-ai/DeepSeek-V2-Lite")),
    # DeepSeek-V3 (arXiv 2412.19437, sec. 4.2; refdata/hf-configs/deepseek-v3.json): MLA with a 1536-wide query
    # bottleneck, 256 routed experts (top 8 within the best 4 of 8 groups, sigmoid scores) + 1 shared, 3 dense
    # layers first; 671B parameters (the multi-token-prediction module not included, as in transformers)
    "deepseek-v3": ("deepseek", dict(vocab_size=129280, d_model=7168, n_layers=61, n_heads=128, max_seq=163840,
                                     d_ff=18432, q_rank=1536, n_experts=256, top_k=8, d_expert=2048, n_shared=1,
                                     n_dense=3, scoring="sigmoid", norm_topk=True, routed_scale=2.5, n_groups=8,
                                     topk_groups=4, scale=0.1352337788608801), _HF.format("deepseek-ai/DeepSeek-V3")),
    # A tiny DeepSeek-V3-shaped model for tests and the accuracy suites: q bottleneck, 8 experts in 4 groups,
    # sigmoid routing, one shared expert, one dense layer
    "tiny-deepseek": ("deepseek", dict(vocab_size=256, d_model=64, n_layers=3, n_heads=4, max_seq=256, d_ff=128,
                                       kv_rank=32, q_rank=48, d_nope=16, d_rope=8, d_v=16, n_experts=8, top_k=2,
                                       d_expert=32, n_shared=1, n_dense=1, scoring="sigmoid", norm_topk=True,
                                       routed_scale=2.5, n_groups=4, topk_groups=2),
                      "layerwise: DeepSeek-V3's wiring (refdata/hf-configs/deepseek-v3.json) at a test size"),
    "tiny-seq2seq": ("seq2seq", dict(vocab_size=11, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq=12,
                                     norm_position="pre"),
                     "layerwise demo: a pre-norm nn.Transformer-style encoder-decoder for reverse-digits / sort-digits"),
}
