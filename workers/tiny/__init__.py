"""Tiny random models and images, built offline: for the tests, the benchmarks and `kcap demo`."""
