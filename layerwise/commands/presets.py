"""`layerwise presets` (the list) and `layerwise presets show NAME --yaml|--json` (a preset as an
editable spec file: `layerwise presets show llama-2-7b --yaml > my.yaml`, edit, then
`layerwise memory my.yaml`)."""
from __future__ import annotations

import typer

from layerwise.spec.errors import LayerwiseError


def register(app: typer.Typer) -> None:
    group = typer.Typer(add_completion=False, invoke_without_command=True,
                        help="List the known architectures, or show one as an editable spec file.")

    @group.callback()
    def presets(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="JSON output")):
        """List the known architectures with their parameter counts and sources."""
        if ctx.invoked_subcommand is not None:
            if json:
                raise LayerwiseError("--json goes after the subcommand: layerwise presets show NAME --json")
            return
        from layerwise.presets import list_presets
        from layerwise.report.console import print_json
        from layerwise.report.presets import presets_json, render_presets

        rows = list_presets()
        print_json(presets_json(rows)) if json else render_presets(rows)

    @group.command()
    def show(
        name: str = typer.Argument(..., help="a preset name (`layerwise presets` lists them)"),
        yaml: bool = typer.Option(False, "--yaml", help="the spec as YAML (the default)"),
        json: bool = typer.Option(False, "--json", help="the spec as JSON"),
    ):
        """A preset as a spec file you can edit and load back (`layerwise memory my.yaml`)."""
        import sys

        from layerwise.presets import get_preset
        from layerwise.spec.io import dump_text

        if yaml and json:
            raise LayerwiseError("--yaml and --json: choose one")
        sys.stdout.write(dump_text(get_preset(name), "json" if json else "yaml"))

    app.add_typer(group, name="presets")
