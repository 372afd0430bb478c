"""Benchmarks for pycoflux executor modes; see bench/README.md. Not part of the test suite."""
