"""Training data: dataset readers and checks, image decoding, augmentation, the batch
loader, anchor fitting, polyp-free (negative) samples and the synthetic zoom-out set."""
