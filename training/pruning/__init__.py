"""Channel pruning that physically slims YOLOv3 (Taylor, random, L1, BN-scale criteria)."""
