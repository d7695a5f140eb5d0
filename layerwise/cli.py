"""The `layerwise` command line. Commands live in layerwise/commands/, one module per group."""
from __future__ import annotations

import functools
import importlib
import pkgutil
import sys

import typer

from layerwise.spec.errors import LayerwiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Design, size, prove, train, compress and export neural networks built from blocks.")


@functools.cache
def _register_commands() -> None:
    """Every command added to `app`, once per process: main() called again in process (tests, the
    fuzz campaign) must not register them again (typer keeps a list: each call grew it)."""
    import layerwise.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):  # shared helpers, not commands
            continue
        importlib.import_module(f"{pkg.__name__}.{mod.name}").register(app)


@functools.cache
def _command():
    """The click command tree, built once per process, float flags checked finite."""
    from layerwise.commands._values import finite_floats

    _register_commands()
    return finite_floats(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print in one or two lines and exit 2, never a traceback."""
    try:
        code = _command().main(args=argv, prog_name="layerwise", standalone_mode=False)
    except LayerwiseError as err:
        from layerwise.report.console import error

        error(str(err))
        return 2
    except KeyboardInterrupt:
        from layerwise.report.console import error

        error("interrupted")
        return 130
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.exceptions.Exit):
            return err.exit_code
        if isinstance(err, click.ClickException):
            err.show()
            return 2
        if isinstance(err, click.exceptions.Abort):
            return 1
        raise
    return code if isinstance(code, int) else 0  # typer.Exit(n) comes back as n


if __name__ == "__main__":
    sys.exit(main())
