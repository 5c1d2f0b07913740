"""PolypScope's inference runtime: ONNX export (needs torch) and torch-free backends."""
