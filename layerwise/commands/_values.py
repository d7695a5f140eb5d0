"""Values checked where they enter, for every command at once: a float flag must be a finite
number (NaN and infinity are refused in one line naming the flag). Applied to the click command
tree typer builds, so no command can forget it. No torch here."""
from __future__ import annotations

import math

import click

from layerwise.spec.errors import LayerwiseError


class FiniteFloat(click.ParamType):
    """click's float (or float range), then NaN/inf refused as a LayerwiseError (one line, exit 2)."""

    def __init__(self, inner: click.ParamType):
        self.inner = inner
        self.name = inner.name

    def convert(self, value, param, ctx):
        number = self.inner.convert(value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            flag = param.opts[0] if param is not None and param.opts else "a number"
            raise LayerwiseError(f"{flag} {value}: must be a finite number")
        return number

    def get_metavar(self, *args, **kwargs):
        return self.inner.get_metavar(*args, **kwargs)


def finite_floats(cmd: click.Command) -> click.Command:
    """Every float parameter of `cmd` and its subcommands -> FiniteFloat (in place)."""
    for param in cmd.params:
        if isinstance(param.type, click.types.FloatParamType):
            param.type = FiniteFloat(param.type)
    for sub in getattr(cmd, "commands", {}).values():
        finite_floats(sub)
    return cmd
