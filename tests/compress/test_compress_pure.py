"""The size predictor and the command modules stay pure Python: importing them loads no torch."""
from __future__ import annotations

import subprocess
import sys


def test_quant_size_and_commands_do_not_import_torch():
    code = ("import sys, layerwise.cost.quant_size, layerwise.commands.compress, layerwise.commands.export; "
            "from layerwise.presets import get_preset; "
            "layerwise.cost.quant_size.quant_size(get_preset('digits-vit').body, 'weight-int4'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
