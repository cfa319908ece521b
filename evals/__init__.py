"""Evaluation: benchmarks, answer grading, control methods, metrics and plots (not built yet)."""
