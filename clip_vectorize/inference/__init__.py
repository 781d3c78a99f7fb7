"""Texts and images to vectors: models, runtimes, batching, preprocessing. Knows nothing of HTTP."""
