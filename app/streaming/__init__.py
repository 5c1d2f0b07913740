"""The streaming pipeline (no Qt): sources, one-slot hand-offs, persistence, stats, recording."""
