"""Shipping a trained model: whether a candidate replaces the default (``candidate``, val
and zoom-out only), then scoring the winner once on test, choosing its operating threshold
on val, and writing its model card (``ship``, ``model_card``)."""
