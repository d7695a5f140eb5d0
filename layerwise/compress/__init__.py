"""layerwise.compress"""
