"""layerwise.cost"""
