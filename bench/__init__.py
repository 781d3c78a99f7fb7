"""Benchmark of clip-vectorize against a naive Flask + transformers service (not a test; see bench/README.md)."""
