"""Runnable speed and accuracy comparisons; results land in BENCHMARKS.md."""
