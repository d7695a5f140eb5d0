"""layerwise.export"""
