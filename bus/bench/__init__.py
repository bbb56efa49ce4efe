"""Benchmarks: commands that print figures, as ratios to a baseline measured in the same run."""
