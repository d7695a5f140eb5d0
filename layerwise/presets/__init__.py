"""layerwise.presets"""
