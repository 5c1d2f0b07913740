"""Measuring the runtime: latency on this machine, and the reports built from it.

- :mod:`~engine.benchmarks.latency`: times models side by side, interleaved in one process
  (``polypscope bench --vs`` runs it): ratios between models hold across machines where
  absolute times do not.
- :mod:`~engine.benchmarks.report`: ``make bench``, the tables of ``docs/performance.md``.
- :mod:`~engine.benchmarks.study_latency`: the pruning study's architectures, timed for its
  trade-off plot.
- :mod:`~engine.benchmarks.gpu` with :mod:`~engine.benchmarks.gpu_letterbox`: the prepared
  GPU measurement (CUDA and TensorRT paths, the letterbox on the GPU), run when a GPU is lent.

Nothing here is on the per-frame path; the app never imports it.
"""
