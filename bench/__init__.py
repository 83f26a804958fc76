"""Benchmarks: ``make bench`` (``python -m bench``) measures side by side and prints ratios."""
