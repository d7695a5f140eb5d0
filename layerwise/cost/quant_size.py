"""Predicted size of a model's saved file, float or quantized (pure Python, no torch).

The saved form is layerwise.compress.qfile: one safetensors file = 8-byte length + JSON header +
the tensors' bytes. Per quantization mode (docs/COMPRESS.md):
  none         every tensor fp32 (num_batches_tracked int64)
  dynamic      linear, lstm/gru weights: int8 codes + one fp32 scale per tensor; the position table
               (learned_positions) and a conv patch_embedding: int8 codes + fp32 scale per row/channel
  static       conv/linear: int8 codes + fp32 scale per output channel + fp32 bias + [scale, zp] of
               the output; a batchnorm right after a conv is folded into it (gone from the file)
  weight-int8  linear: int8 codes + fp32 scale per (output channel, group)
  weight-int4  linear: two int4 codes per byte + fp32 scale per (output channel, group)
Everything else stays fp32. A float model ("none") is a plain safetensors save (one header entry
per tensor); a quantized one is packed: one flat tensor per dtype + a zlib'd JSON index of names and
shapes (index_bytes, which qfile uses too). The tensor bytes are exact; the JSON header is computed
from the same names and shapes, with offsets estimated at the payload's digit count, so it is within
a few bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from layerwise.spec.base import Block

MODES = ("none", "dynamic", "static", "weight-int8", "weight-int4")
_BYTES = {"F32": 4, "I8": 1, "U8": 1, "I64": 8}
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_STATIC_FUSED_ROOT_SCALARS = 4  # FX graph: the input's and one re-quantization point's [scale, zp]


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # safetensors dtype: F32, I8, U8, I64
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = _BYTES[self.dtype]
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class LayerSize:
    path: str
    kind: str  # int8 | int4 | fp32
    params: int
    bytes: int


@dataclass(frozen=True)
class QuantSize:
    mode: str
    tensor_bytes: int  # codes + scales + float tensors
    header_bytes: int  # safetensors' 8-byte length + JSON header
    layers: tuple[LayerSize, ...]

    @property
    def total_bytes(self) -> int:
        return self.tensor_bytes + self.header_bytes


def quant_size(body: Block, mode: str = "none", group_size: int | None = None) -> QuantSize:
    """The predicted saved size of `body` under `mode` (group_size: weight-only modes; None =
    the default: per channel for int8, 32 for int4)."""
    if mode not in MODES:
        from layerwise.spec.errors import LayerwiseError

        raise LayerwiseError(f"quant_size: mode must be one of {', '.join(MODES)}, got {mode!r}")
    group = group_size if group_size is not None else (32 if mode == "weight-int4" else 0)
    tensors: list[Tensor] = []
    layers: list[LayerSize] = []
    for path, leaf, role in _leaves(body, "", ""):
        if role == "bn<conv" and mode == "static":
            continue  # folded into the conv before it
        kind, ts = _leaf_tensors(path, leaf, mode, group, followed_by_bn=role == "conv>bn")
        tensors += ts
        layers.append(LayerSize(path, kind, leaf.own_params().total, sum(t.nbytes for t in ts)))
    if mode == "static":
        tensors.append(Tensor("_qparams", "F32", (_STATIC_FUSED_ROOT_SCALARS,)))
    if mode == "none":  # a float model is a plain safetensors save: one header entry per tensor
        payload = sum(t.nbytes for t in tensors)
        return QuantSize(mode, payload, _header(tensors, payload), tuple(layers))
    stored = packed(tensors)  # quantized: one flat tensor per dtype + the index (compress.qfile.pack)
    payload = sum(t.nbytes for t in stored)
    return QuantSize(mode, payload, _header(stored, payload, PACKED_METADATA), tuple(layers))


# ---- the packed layout of a quantized file (layerwise.compress.qfile.pack) ----------------------
PACKED_FORMAT = "layerwise-packed-1"
PACKED_METADATA = {"format": PACKED_FORMAT}


def index_bytes(entries: list[list]) -> bytes:
    """[[name, dtype, shape], ...] -> the stored index: zlib'd compact JSON. qfile writes exactly this."""
    import json
    import zlib

    return zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 9)


def packed(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors of a packed file: "_F32", "_I8", ... (each dtype's tensors concatenated) and
    "_index" (uint8)."""
    sizes: dict[str, int] = {}
    for t in tensors:
        sizes[t.dtype] = sizes.get(t.dtype, 0) + t.nbytes // _BYTES[t.dtype]
    index = index_bytes([[t.name, t.dtype, list(t.shape)] for t in tensors])
    return [Tensor("_" + d, d, (n,)) for d, n in sizes.items()] + [Tensor("_index", "U8", (len(index),))]


# ---- the tree --------------------------------------------------------------------------------
def _leaves(block: Block, path: str, role: str):
    """(path, leaf, role) for every leaf that holds tensors; role is "conv>bn" for a conv that a
    batchnorm directly follows in the same parent, "bn<conv" for that batchnorm, else ""."""
    kids = block.children()
    if not kids:
        if block.own_params().total or block.own_params().buffers:
            yield path, block, role
        return
    if block.own_params().total:  # a composite with its own tensors: counted as fp32
        yield path, _Own(block), ""
    types = [c.type_name for _, c in kids]
    for i, (name, child) in enumerate(kids):
        sub = f"{path}.{name}" if path else name
        conv_bn = i + 1 < len(kids) and types[i] in _CONVS and types[i + 1] in _BNS
        bn_conv = i > 0 and types[i - 1] in _CONVS and types[i] in _BNS
        yield from _leaves(child, sub, "conv>bn" if conv_bn else "bn<conv" if bn_conv else "")


_CONVS = ("conv1d", "conv2d")
_BNS = ("batchnorm1d", "batchnorm2d")


class _Own:
    """A composite's own parameters, seen as a leaf of unknown layout."""

    type_name = "own"

    def __init__(self, block):
        self.block = block

    def own_params(self):
        return self.block.own_params()


def _conv_shape(leaf) -> tuple[int, ...]:
    nd = 1 if leaf.type_name == "conv1d" else 2
    k = leaf.kernel if isinstance(leaf.kernel, (tuple, list)) else (leaf.kernel,) * nd
    return (leaf.c_out, leaf.c_in // getattr(leaf, "groups", 1), *k)


def _float_tensors(path: str, leaf) -> list[Tensor]:
    """The fp32 state_dict tensors of a leaf, by its type (docs/BLOCKS.md module names)."""
    p = f"{path}." if path else ""
    t = leaf.type_name
    if t == "linear":
        return [Tensor(p + "weight", "F32", (leaf.d_out, leaf.d_in))] + \
            ([Tensor(p + "bias", "F32", (leaf.d_out,))] if leaf.bias else [])
    if t in ("conv1d", "conv2d"):
        return [Tensor(p + "weight", "F32", _conv_shape(leaf))] + \
            ([Tensor(p + "bias", "F32", (leaf.c_out,))] if leaf.bias else [])
    if t in ("batchnorm1d", "batchnorm2d"):
        n = leaf.n_features
        aff = [Tensor(p + "weight", "F32", (n,)), Tensor(p + "bias", "F32", (n,))] if leaf.affine else []
        return aff + [Tensor(p + "running_mean", "F32", (n,)), Tensor(p + "running_var", "F32", (n,)),
                      Tensor(p + "num_batches_tracked", "I64", (1,))]
    if t == "rnn":
        return _rnn_tensors(p, leaf, "F32")
    if t in ("layernorm", "rmsnorm"):
        bias = t == "layernorm" and leaf.bias
        return [Tensor(p + "weight", "F32", (leaf.d_model,))] + ([Tensor(p + "bias", "F32", (leaf.d_model,))] if bias else [])
    if t == "embedding":
        return [Tensor(p + "weight", "F32", (leaf.vocab_size, leaf.d_model))]
    if t == "learned_positions":
        return [Tensor(p + "weight", "F32", (leaf.max_seq, leaf.d_model))]
    if t == "cls_token":
        return [Tensor(p + "weight", "F32", (1, 1, leaf.d_model))]
    if t == "patch_embedding":
        shape = (leaf.d_model, leaf.c_in, leaf.patch, leaf.patch) if leaf.kind == "conv" \
            else (leaf.d_model, leaf.c_in * leaf.patch * leaf.patch)
        return [Tensor(p + "proj.weight", "F32", shape)] + \
            ([Tensor(p + "proj.bias", "F32", (leaf.d_model,))] if leaf.bias else [])
    own = leaf.own_params()
    out = [Tensor(p + "weight", "F32", (own.total,))] if own.total else []
    return out + ([Tensor(p + "buffers", "F32", (own.buffers,))] if own.buffers else [])


def _rnn_tensors(p: str, leaf, wdtype: str) -> list[Tensor]:
    """torch.nn.RNN/LSTM/GRU names: rnn.weight_ih_l{k}[_reverse], weight_hh, bias_ih, bias_hh."""
    g, h = _GATES[leaf.kind], leaf.d_hidden
    dirs = ("", "_reverse") if leaf.bidirectional else ("",)
    out = []
    for k in range(leaf.n_layers):
        d_in = leaf.d_in if k == 0 else h * len(dirs)
        for s in dirs:
            for name, shape in ((f"weight_ih_l{k}{s}", (g * h, d_in)), (f"weight_hh_l{k}{s}", (g * h, h))):
                out.append(Tensor(f"{p}rnn.{name}", wdtype, shape))
                if wdtype == "I8":
                    out.append(Tensor(f"{p}rnn.{name}_scale", "F32", (1,)))
            if leaf.bias:
                out += [Tensor(f"{p}rnn.bias_ih_l{k}{s}", "F32", (g * h,)), Tensor(f"{p}rnn.bias_hh_l{k}{s}", "F32", (g * h,))]
    return out


def _leaf_tensors(path: str, leaf, mode: str, group: int, followed_by_bn: bool) -> tuple[str, list[Tensor]]:
    p = f"{path}." if path else ""
    t = leaf.type_name
    if mode == "dynamic" and t == "rnn" and leaf.kind in ("lstm", "gru"):
        return "int8", _rnn_tensors(p, leaf, "I8")
    lin = t == "linear" or (t == "patch_embedding" and leaf.kind == "linear")
    if t == "patch_embedding" and lin:
        p, leaf = p + "proj.", _LinearView(leaf.c_in * leaf.patch * leaf.patch, leaf.d_model, leaf.bias)
    if lin and mode == "dynamic":
        return "int8", _int8(p, (leaf.d_out, leaf.d_in), leaf.d_out if leaf.bias else 0, per_channel=False)
    if mode == "dynamic" and t == "learned_positions":  # weight-only int8 table, a scale per row
        return "int8", _int8(p, (leaf.max_seq, leaf.d_model), 0, per_channel=True)
    if mode == "dynamic" and t == "patch_embedding":  # the conv kind: weight-only int8, a scale per channel
        return "int8", _int8(p + "proj.", (leaf.d_model, leaf.c_in, leaf.patch, leaf.patch),
                             leaf.d_model if leaf.bias else 0, per_channel=True)
    if mode == "static" and (lin or t in ("conv1d", "conv2d")):
        shape = (leaf.d_out, leaf.d_in) if lin else _conv_shape(leaf)
        has_bias = leaf.bias or (not lin and followed_by_bn)
        out = _int8(p, shape, shape[0] if has_bias else 0, per_channel=True)
        return "int8", out + [Tensor(p + "out_qparams", "F32", (2,))]
    if lin and mode in ("weight-int8", "weight-int4"):
        return mode[-4:], _weight_only(p, leaf, 8 if mode == "weight-int8" else 4, group)
    return "fp32", _float_tensors(path, leaf)


class _LinearView:
    type_name = "linear"

    def __init__(self, d_in, d_out, bias):
        self.d_in, self.d_out, self.bias = d_in, d_out, bias


def _int8(p: str, shape, bias: int, per_channel: bool) -> list[Tensor]:
    out = [Tensor(p + "weight", "I8", tuple(shape)), Tensor(p + "weight_scale", "F32", (shape[0] if per_channel else 1,))]
    return out + ([Tensor(p + "bias", "F32", (bias,))] if bias else [])


def _weight_only(p: str, leaf, bits: int, group: int) -> list[Tensor]:
    g = group if group and leaf.d_in % group == 0 else leaf.d_in  # same fallback as compress.quantize
    codes = Tensor(p + "qweight", "I8", (leaf.d_out, leaf.d_in)) if bits == 8 \
        else Tensor(p + "qweight", "U8", (leaf.d_out, leaf.d_in // 2))
    out = [codes, Tensor(p + "scale", "F32", (leaf.d_out, leaf.d_in // g))]
    return out + ([Tensor(p + "bias", "F32", (leaf.d_out,))] if leaf.bias else [])


def _header(tensors: list[Tensor], payload: int, metadata: dict[str, str] | None = None) -> int:
    """8-byte length + the JSON header, padded with spaces to a multiple of 8 (safetensors format:
    {"__metadata__":{"k":"v"},"name":{"dtype":"F32","shape":[a,b],"data_offsets":[x,y]},...})."""
    digits = len(str(max(payload // 2, 1)))  # offsets: between 0 and payload; estimate a midpoint
    n = 2  # the braces
    if metadata:
        n += len('"__metadata__":{},') + sum(len(f'"{k}":"{v}",') for k, v in metadata.items()) - 1
    for t in tensors:
        shape = ",".join(str(d) for d in t.shape)
        n += len(f'"{t.name}":{{"dtype":"{t.dtype}","shape":[{shape}],"data_offsets":[,]}},') + 2 * digits
    n -= 1  # no comma after the last entry
    return 8 + n + (-n) % 8
