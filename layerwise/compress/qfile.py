"""The saved form of a (quantized) model: one safetensors file of integer codes, scales and the
float tensors that stay float. Its size is what `layerwise.cost.quant_size` predicts.

Layout per quantized layer at path P (weights are symmetric, so zero points are not stored):
  P.weight        int8 codes                  (weight-only: P.qweight, int8 or uint8 holding two
  P.weight_scale  fp32 per channel (static)   int4 codes per byte; P.scale fp32 (d_out, groups))
                  or per tensor (dynamic)
  P.bias          fp32
  P.out_qparams   fp32 [scale, zero_point] of the layer's int8 output (static only)
Float layers keep their state_dict names. Scalar buffers of a module (static activation quant
points of the FX graph) are packed into one fp32 tensor `P._qparams`, sorted by name.
Tied tensors are written once (safetensors refuses shared storage). Dynamic mode's weight-only
int8 tables (position table, ViT patch conv) are P.weight int8 + P.weight_scale fp32 (rows,).

A quantized model's file is packed (pack/unpack below): one flat tensor per dtype plus a zlib'd
JSON index of names and shapes, so the safetensors header has ~5 entries instead of one per tensor
(at 18k params the per-tensor header was ~4.6 kB of a 27 kB file). A float model is written plain.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from layerwise.compress.quantize import TABLE_ATTR, set_table
from layerwise.cost.quant_size import PACKED_FORMAT, index_bytes  # pure Python: one definition of the index


def _is_quantized_layer(m: nn.Module) -> bool:
    """torch.ao quantized Linear/Conv (static or dynamic) expose weight() as a method."""
    return callable(getattr(m, "weight", None)) and not isinstance(getattr(m, "weight", None), torch.Tensor) \
        and type(m).__module__.startswith("torch.ao.nn")


def _codes(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A quantized weight -> (int8 codes, fp32 scales (C,) or (1,))."""
    if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if q.q_per_channel_zero_points().abs().sum() != 0:
            raise ValueError("asymmetric per-channel weights are not expected from torch.ao defaults")
        scale = q.q_per_channel_scales().float()
    else:
        if q.q_zero_point() != 0:
            raise ValueError("asymmetric per-tensor weights are not expected from torch.ao defaults")
        scale = torch.tensor([q.q_scale()], dtype=torch.float32)
    return q.int_repr().contiguous(), scale.contiguous()


def quantized_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor for everything the model needs to be stored, as described above."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    skip: list[str] = []

    def put(name: str, t: torch.Tensor) -> None:
        t = t.detach()
        if t.is_quantized:
            raise ValueError(f"{name}: quantized tensor reached the float path")
        key = (t.data_ptr(), tuple(t.shape))
        if t.numel() and hash(key) in seen:  # tied weight: stored once
            return
        seen.add(hash(key))
        out[name] = t.reshape(1) if t.dim() == 0 else t.contiguous()

    for path, m in module.named_modules():
        if any(path == s or path.startswith(s + ".") for s in skip):
            continue
        pre = f"{path}." if path else ""
        if _is_quantized_layer(m):
            codes, scale = _codes(m.weight())
            out[pre + "weight"], out[pre + "weight_scale"] = codes, scale
            bias = m.bias() if callable(getattr(m, "bias", None)) else None
            if bias is not None:
                out[pre + "bias"] = bias.detach().float().contiguous()
            if isinstance(getattr(m, "scale", None), float) and ".dynamic." not in type(m).__module__:  # static: the output's qparams
                out[pre + "out_qparams"] = torch.tensor([m.scale, float(m.zero_point)], dtype=torch.float32)
            skip.append(path)
            continue
        if hasattr(m, "_all_weight_values") and hasattr(m, "_weight_bias"):  # dynamic LSTM/GRU
            wb = m._weight_bias()
            for name, q in wb["weight"].items():
                out[pre + name], out[pre + name + "_scale"] = _codes(q)
            for name, b in wb["bias"].items():
                out[pre + name] = b.detach().float().contiguous()
            skip.append(path)
            continue
        table = getattr(m, TABLE_ATTR, None)
        if table is not None:  # weight-only int8 table (dynamic mode): codes + per-row scales
            out[pre + "weight"], out[pre + "weight_scale"] = table
        scalars = []
        for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if t is None or (table is not None and name == "weight"):
                continue
            if t.dim() == 0 and name != "num_batches_tracked":
                scalars.append((name, float(t)))
            else:
                put(pre + name, t)
        if scalars:
            out[pre + "_qparams"] = torch.tensor([v for _, v in sorted(scalars)], dtype=torch.float32)
    return out


def save_model(module: nn.Module, path: str | Path, packed: bool | None = None) -> int:
    """Write the model's stored form to `path` (safetensors); returns the file size in bytes.
    packed=None: packed when the model holds integer codes (any quantized model), plain otherwise,
    so a float model is the ordinary safetensors save its size is measured by."""
    from safetensors.torch import save_file

    state = quantized_state(module)
    if packed is None:
        packed = any(t.dtype in (torch.int8, torch.uint8) for t in state.values())
    if packed:
        save_file(pack(state), str(path), metadata={"format": PACKED_FORMAT})
    else:
        save_file(state, str(path))
    return os.path.getsize(path)


# ---- the packed layout -------------------------------------------------------------------------
INDEX = "_index"
_DTYPES = {torch.float32: "F32", torch.int8: "I8", torch.uint8: "U8", torch.int64: "I64", torch.bool: "BOOL",
           torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.float64: "F64"}


def pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Name -> tensor  ->  one flat tensor per dtype ("_F32", "_I8", ...), each the concatenation of
    that dtype's tensors in index order, plus "_index" (uint8): which name, dtype and shape is where.
    ~60 header entries become a handful; the values are untouched."""
    entries, groups = [], {}
    for name, t in state.items():
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be packed")
        entries.append([name, _DTYPES[t.dtype], list(t.shape)])
        groups.setdefault(_DTYPES[t.dtype], []).append(t.reshape(-1))
    out = {"_" + d: torch.cat(ts) for d, ts in groups.items()}
    out[INDEX] = torch.frombuffer(bytearray(index_bytes(entries)), dtype=torch.uint8)
    return out


def unpack(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of pack (a plain file passes through unchanged)."""
    import json
    import zlib

    if INDEX not in tensors:
        return tensors
    entries = json.loads(zlib.decompress(tensors[INDEX].numpy().tobytes()))
    offset: dict[str, int] = {}
    out = {}
    for name, dtype, shape in entries:
        n = 1
        for d in shape:
            n *= d
        start = offset.get(dtype, 0)
        out[name] = tensors["_" + dtype][start:start + n].reshape(shape)
        offset[dtype] = start + n
    return out


def load_model(module: nn.Module, path: str | Path) -> nn.Module:
    """Fill `module` -- already quantized with the mode the file was saved from, e.g.
    `quantize(body.build(), mode, calibration=[any input of the right shape])` -- with the file's
    codes, scales and float tensors. Returns the module; raises LayerwiseError on a mismatch."""
    from layerwise.spec.errors import LayerwiseError
    from layerwise.train import integrity
    from layerwise.train.checkpoint import read_tensors

    if (Path(path).parent / integrity.MANIFEST).exists():  # an artefact of a run: check it first
        integrity.verify(Path(path))
    tensors = unpack(read_tensors(Path(path)))
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in tensors:
            raise LayerwiseError(f"{path}: no tensor {name!r}; was the file saved from this model and mode?")
        used.add(name)
        return tensors[name]

    skip: list[str] = []
    seen: set[int] = set()  # tied tensors were written once: load them once
    with torch.no_grad():
        for mpath, m in module.named_modules():
            if any(mpath == s or mpath.startswith(s + ".") for s in skip):
                continue
            pre = f"{mpath}." if mpath else ""
            if _is_quantized_layer(m):
                _load_layer(m, pre, take)
                skip.append(mpath)
                continue
            if hasattr(m, "_all_weight_values"):
                raise LayerwiseError(f"{path}: reloading dynamic LSTM/GRU files is not supported ({mpath})")
            table = getattr(m, TABLE_ATTR, None)
            if table is not None:
                set_table(m, take(pre + "weight").reshape(table[0].shape), take(pre + "weight_scale"))
            scalars = []
            for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
                if t is None or (table is not None and name == "weight"):
                    continue
                if t.dim() == 0 and name != "num_batches_tracked":
                    scalars.append(name)
                elif t.numel() == 0 or t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    t.copy_(take(pre + name).reshape(t.shape))
            if scalars:
                values = take(pre + "_qparams")
                for name, v in zip(sorted(scalars), values.tolist()):
                    t = getattr(m, name)
                    t.fill_(v)
    extra = sorted(set(tensors) - used)
    if extra:
        raise LayerwiseError(f"{path}: tensors the model does not have: {', '.join(extra[:5])}")
    return module


def _load_layer(m: nn.Module, pre: str, take) -> None:
    """A torch.ao quantized Linear/Conv: rebuild its quantized weight from codes and scales."""
    codes, scale = take(pre + "weight"), take(pre + "weight_scale")
    if m.weight().qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        q = torch._make_per_channel_quantized_tensor(codes, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
    else:
        q = torch._make_per_tensor_quantized_tensor(codes, float(scale[0]), 0)
    bias = take(pre + "bias") if m.bias() is not None else None
    m.set_weight_bias(q, bias)
    if isinstance(getattr(m, "scale", None), float) and ".dynamic." not in type(m).__module__:
        s, z = take(pre + "out_qparams").tolist()
        m.scale, m.zero_point = float(s), int(z)
