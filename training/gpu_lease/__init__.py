"""A GPU lease, prepared in advance: the work of issue 11 that the two CPU cores cannot do.

A lease is short (about ten minutes of one H100/H200 with 16 cores, started bare, no
network) and only what is written to its output folder comes back (a few files of at most
16 MiB). So everything is decided here and tested on the CPU first:

- ``pack`` (here): a compact copy of the dataset that travels with the working tree
  (``carry``), since the data folder beside the repository does not;
- the runs of one lease -- the longer baseline and the per-change ablations of
  ``docs/accuracy.md`` -- are ``training.ablations.plan``'s; ``plan`` here fits their epochs
  to the lease's time;
- ``run`` (there): times one epoch of every run side by side, fits each run's epochs to the
  time left, trains them all at once on the one GPU (each in its own process group), stops
  them before the deadline, scores the finished ones on val and the zoom-out set, and writes
  one results file plus the baseline's weights (fp16) to the output folder as it goes.

    python -m training.gpu_lease pack --data ../shared/data/kvasir-seg        # here, once
    python -m training.gpu_lease run --out "$OUT" --minutes 8                 # on the lease
"""
