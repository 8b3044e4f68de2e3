"""Benchmarks of what loraplane promises: each prints a table, writes bench/results/NAME.json,
and compares ratios measured in the same run (these machines are noisy)."""
