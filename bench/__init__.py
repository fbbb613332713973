"""Benchmarks. Each reports ratios against a baseline measured side by side in the same run,
because these machines are shared and noisy; run them as ``python -m bench.<name>``."""
