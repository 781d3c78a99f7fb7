"""clip-vectorize: CLIP text and image vectors over HTTP. Areas: inference (no Flask), web (no torch)."""
