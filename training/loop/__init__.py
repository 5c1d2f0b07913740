"""The training loop and what it optimises: the trainer, its loss, weight average,
distillation, precision, hard-negative mining, saved state and per-epoch log."""
