"""CLI command modules. Each defines `register(app)`; cli.py discovers them all.

A command module imports nothing heavy at module level (no torch): `layerwise summary` must stay
a pure-Python path. Import torch inside the command function that needs it.
"""
