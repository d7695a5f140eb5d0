"""`layerwise serve`: a local web calculator over the same functions as the CLI (serve/api.py) and
its page (serve/static/, every asset shipped in the package: it works offline)."""
