"""layerwise.plan"""
