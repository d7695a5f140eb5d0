"""Mamba's mixer in the saved-activation reading: not modelled. Refused by name rather than run as
a chain of its children (whose dataflow is not a chain), which would give wrong bytes."""
from __future__ import annotations

from layerwise.cost.act_trace import T, Trace
from layerwise.cost.activations import act
from layerwise.spec.errors import LayerwiseError


@act("mamba_block", "mamba_mixer", "selective_scan")
def _mamba(b, tr: Trace, x: T) -> T:
    raise LayerwiseError(f"{'.'.join(tr.path) or b.type_name}: the memory reading has no model of Mamba's "
                         f"selective scan yet; `layerwise measure` runs the built module")
