"""Training, evaluation and pruning of PolypScope's YOLOv3 (depends on ``models`` only)."""
