"""Training-time augmentation, the stage between the readers and the loader.

- :mod:`~training.data.augment.pipeline`: the item type, the settings, the geometric and
  photometric transforms and :class:`~training.data.augment.pipeline.Augmenter`, which runs
  them in order on every training draw;
- steps that make what the data lacks: :mod:`~training.data.augment.zoom_out` (small
  polyps on wide mucosa), :mod:`~training.data.augment.copy_paste` (training polyps pasted
  onto other frames), :mod:`~training.data.augment.distractors` (air bubbles and residue
  painted as background);
- :mod:`~training.data.augment.multi_scale`: a random input size per batch;
- :mod:`~training.data.augment.preview`: a contact sheet of what a setting makes.
"""
