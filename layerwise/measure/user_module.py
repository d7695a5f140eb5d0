"""A user's own nn.Module, named on the command line as `FILE.py:factory` or `package.module:factory`.

Loading it runs the user's code: the file (or the one module named) is imported and the factory
called. Nothing else is imported on the user's behalf. Every failure becomes one LayerwiseError
naming the reference: a missing file, an import that raised, a missing factory, a factory that
raised (its message, one line), a factory that did not return an nn.Module, and a forward that
failed (a wrong input shape, or an operation fake tensors cannot run: then `--real` is suggested).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from layerwise.spec.errors import LayerwiseError


@dataclass(frozen=True)
class ModuleRef:
    """`target:factory`: target is a .py file or a dotted module name."""

    target: str
    factory: str

    @property
    def text(self) -> str:
        return f"{self.target}:{self.factory}"

    @property
    def name(self) -> str:
        """What reports call the model: the factory's name."""
        return self.factory

    @property
    def is_file(self) -> bool:
        return self.target.endswith(".py")


def is_module_ref(text: str) -> bool:
    """`a/b.py:build` or `pkg.mod:build` (a preset name, spec file or config.json has no colon)."""
    target, sep, factory = text.rpartition(":")
    if not sep or not factory.isidentifier() or not target:
        return False
    return target.endswith(".py") or all(part.isidentifier() for part in target.split("."))


def parse_ref(text: str) -> ModuleRef:
    if not is_module_ref(text):
        raise LayerwiseError(f"{text}: expected FILE.py:factory or package.module:factory")
    target, _, factory = text.rpartition(":")
    return ModuleRef(target, factory)


def load_factory(ref: ModuleRef) -> Callable:
    """Import the named file or module (running its code) and return its factory, checked to be
    callable. The factory itself is not called here."""
    module = _import_file(ref) if ref.is_file else _import_module(ref)
    factory = getattr(module, ref.factory, None)
    if factory is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f"; it defines {', '.join(found)}" if found else ""
        raise LayerwiseError(f"{ref.text}: {ref.target} has no {ref.factory!r}{hint}")
    if not callable(factory):
        raise LayerwiseError(f"{ref.text}: {ref.factory} is a {type(factory).__name__}, not a callable "
                             f"returning an nn.Module")
    return factory


def _import_file(ref: ModuleRef):
    path = Path(ref.target)
    if not path.is_file():
        raise LayerwiseError(f"{ref.target}: no such file")
    name = f"_layerwise_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # As `python FILE.py` would: the file's own folder is importable while it loads (its siblings).
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LayerwiseError(f"{ref.text}: importing {ref.target} raised {one_line(exc)}") from None
    finally:
        sys.path.remove(folder)
    return module


def _import_module(ref: ModuleRef):
    try:
        return importlib.import_module(ref.target)
    except ModuleNotFoundError as exc:
        if exc.name and ref.target.startswith(exc.name):
            raise LayerwiseError(f"{ref.text}: no module named {exc.name!r} (is it installed, or on PYTHONPATH?)") from None
        raise LayerwiseError(f"{ref.text}: importing {ref.target} raised {one_line(exc)}") from None
    except Exception as exc:
        raise LayerwiseError(f"{ref.text}: importing {ref.target} raised {one_line(exc)}") from None


def checked_factory(ref: ModuleRef, factory: Callable) -> Callable:
    """`factory` wrapped so that what it raises, or returns other than an nn.Module, becomes one
    LayerwiseError naming the reference."""
    from torch import nn

    def build():
        try:
            module = factory()
        except Exception as exc:
            if is_fake_limit(exc):
                raise fake_limit_error(ref.text, "building the module", exc) from None
            raise LayerwiseError(f"{ref.text}: the factory raised {one_line(exc)}") from None
        if not isinstance(module, nn.Module):
            raise LayerwiseError(f"{ref.text}: the factory returned a {type(module).__name__}, not an nn.Module")
        return module

    return build


def one_line(exc: BaseException) -> str:
    """`TypeError: the first line of its message`."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def is_fake_limit(exc: BaseException) -> bool:
    """An exception that means "fake tensors cannot run this" (data-dependent values or shapes,
    an operator without a fake implementation, a real tensor mixed in), not a bug in the model."""
    from torch._subclasses import fake_tensor as ft

    kinds = tuple(k for k in (getattr(ft, n, None) for n in (
        "DataDependentOutputException", "DynamicOutputShapeException", "UnsupportedOperatorException",
        "UnsupportedFakeTensorException", "MetadataMismatchError")) if isinstance(k, type))
    if isinstance(exc, kinds):
        return True
    try:
        from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    except ImportError:
        return False
    text = str(exc)
    return (isinstance(exc, GuardOnDataDependentSymNode) or "FakeTensor" in text or "fake tensor" in text
            or "tensor subclasses" in text)  # .numpy() on a fake tensor


def fake_limit_error(name: str, doing: str, exc: BaseException) -> LayerwiseError:
    return LayerwiseError(f"{name}: {doing} cannot run under fake tensors ({one_line(exc)}); "
                          f"measure it for real with --real")


def forward_error(name: str, shape: tuple[int, ...], tokens: bool, exc: BaseException, *, fake: bool) -> LayerwiseError:
    """What a failed forward (or step) of the user's module is reported as."""
    if fake and is_fake_limit(exc):
        return fake_limit_error(name, "its forward", exc)
    text = "x".join(map(str, shape)) + (" (token ids)" if tokens else "")
    return LayerwiseError(f"{name}: a step on input {text} raised {one_line(exc)} (is the input shape right?)")
