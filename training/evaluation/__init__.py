"""Evaluation: inference over a split, COCO-style detection metrics, false alarms on
polyp-free frames, and the ``val`` command."""
