"""layerwise.measure"""
