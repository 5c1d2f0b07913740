"""Inference backends behind one small interface, one module each."""
