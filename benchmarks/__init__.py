"""Benchmarks: each module has a ``main()`` that prints absolute figures and ratios against a
baseline measured in the same run. ``python -m benchmarks [module ...]`` runs them all."""
