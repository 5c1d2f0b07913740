"""Evaluation: inference over a split, COCO-style detection metrics, false alarms on
polyp-free frames (and which frames several models share, ``alarm_overlap``), the
zoom-out set of small polyps (``zoom_out_set``), and the ``val`` command."""
