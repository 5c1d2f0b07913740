"""The pruning study: does a criterion beat random channels, and does pruning beat training
the small network from scratch? Stages, one module each:

- :mod:`~training.prune_study.variants`: what is run (criterion x ratio x seed, plus the
  from-scratch control) and the named grids;
- :mod:`~training.prune_study.runner`: prune, recalibrate and fine-tune each cell (or train
  the control), resumable, several at once, stopping itself before a deadline;
- :mod:`~training.prune_study.archive`: each finished variant's compact record (fp16 final
  weights, curve, recipe), kept in git, so that a lost work folder does not lose the study;
- :mod:`~training.prune_study.scoring`: val figures and fine-tuning curves per cell (test
  only when asked, once, for the final table);
- :mod:`~training.prune_study.statistics`: mean and sd over seeds, paired differences with
  t intervals;
- :mod:`~training.prune_study.report`: the tables, the curves and the trade-off plot.

Latency is measured by the runtime side (``python -m engine.benchmarks.study_latency``), since
training may not import the engine; the report shows it when that file exists.

    python -m training.prune_study --weights runs/baseline/best.safetensors \\
        --data ../shared/data/kvasir-seg --out runs/study --grid reduced --seeds 0 1 2
"""
