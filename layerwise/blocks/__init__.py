"""Every block type, one small file per family; importing this package registers them all and
exposes each block class by its Python name (`from layerwise.blocks import Linear`)."""
import importlib
import pkgutil

from layerwise.spec.base import REGISTRY

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

globals().update({cls.__name__: cls for cls in REGISTRY.values()})
__all__ = sorted(cls.__name__ for cls in REGISTRY.values())
