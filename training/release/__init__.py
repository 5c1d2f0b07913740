"""Shipping a trained model: scoring it once on test, choosing its operating threshold on
val, and writing its model card."""
