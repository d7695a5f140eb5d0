"""layerwise.train"""
