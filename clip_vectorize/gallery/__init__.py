"""The gallery: images from a folder or a manifest, their vectors in a Qdrant collection. No Flask."""
