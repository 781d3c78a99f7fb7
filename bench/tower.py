"""The encoder's towers alone, no HTTP: `python -m bench.tower --model DIR` prints one JSON object.

Shows what the runtime itself can do (batch-32 image throughput, batch-1 text latency), so the HTTP figures
can be read against it. Run from the repo root, where `config` and `clip_encoder` are importable, and while
no server is running, so the towers have the CPU to themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from transformers import CLIPImageProcessorPil

from clip_encoder import ClipEncoder
from clip_vectorize.inference.image_io import load_rgb_image
from clip_vectorize.inference.image_path import image_preparation
from config import Settings

TEXT_TOKENS = 12  # a typical search query: start token, 10 BPE tokens, end token


def load_encoder(model: str, backend: str, precision: str = "fp32") -> ClipEncoder:
    """The encoder as the service builds it (CLIP_* settings from the environment), with this model, backend and
    precision."""
    return ClipEncoder.load(Settings.from_env({**os.environ, "CLIP_MODEL": model, "DEVICE": "cpu",
                                               "CLIP_BACKEND": backend, "CLIP_PRECISION": precision}))


def parity_with_fp32(encoder: ClipEncoder, model: str) -> dict:
    """Lowest cosine of this encoder's tower outputs to fp32 ONNX's, on the same photo-like pixels and token ids."""
    reference = load_encoder(model, "onnx", "fp32")
    rng = np.random.default_rng(1)
    pixels = rng.normal(0, 1, (8, 3, 224, 224)).astype(np.float32)
    ids, mask = text_inputs(16)
    pairs = {"image": (encoder.backend.encode_image(pixels), reference.backend.encode_image(pixels)),
             "text": (encoder.backend.encode_text(ids, mask), reference.backend.encode_text(ids, mask))}
    reference.close()
    return {f"{tower}_min_cosine_to_fp32": float(np.min(np.sum(ours * theirs, axis=1)))
            for tower, (ours, theirs) in pairs.items()}


def timed(call: Callable[[], object], warmups: int, iterations: int) -> list[float]:
    """Seconds per call after `warmups` untimed calls (first-call allocation and kernel selection)."""
    for _ in range(warmups):
        call()
    durations = []
    for _ in range(iterations):
        began = time.perf_counter()
        call()
        durations.append(time.perf_counter() - began)
    return durations


def text_inputs(batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Token ids shaped like CLIP's tokenizer output: <start>, ordinary BPE ids, <end>; all attended."""
    ids = np.random.default_rng(0).integers(1000, 40000, (batch, TEXT_TOKENS), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 49406, 49407
    return ids, np.ones_like(ids)


def measure(encoder: ClipEncoder, image_iterations: int, text_iterations: int) -> dict:
    pixels = np.zeros((32, 3, 224, 224), np.float32)
    image_times = timed(lambda: encoder.backend.encode_image(pixels), 1, image_iterations)
    ids, mask = text_inputs()
    text_times = timed(lambda: encoder.backend.encode_text(ids, mask), 3, text_iterations)
    return {
        "image_batch": 32,
        "image_images_per_s": 32 * len(image_times) / sum(image_times),
        "image_batch_ms": [round(t * 1000, 1) for t in image_times],
        "text_tokens": TEXT_TOKENS,
        "text_batch1_p50_ms": statistics.median(text_times) * 1000,
        "text_batch1_min_ms": min(text_times) * 1000,
    }


def measure_preprocessing(encoder: ClipEncoder, model: str, jpeg: Path, iterations: int) -> dict:
    """The 12 MP JPEG through each path: time per image, and cosine of the fast path's vector to the exact one's."""
    blob = jpeg.read_bytes()
    processor = CLIPImageProcessorPil.from_pretrained(model, local_files_only=True)
    max_pixels = encoder.image.max_pixels
    paths = {}
    for mode in ("exact", "fast"):
        transform, draft_size = image_preparation(mode, processor)
        paths[mode] = (lambda transform=transform, draft_size=draft_size:
                       transform(load_rgb_image(blob, max_pixels, draft_size)))
    result = {f"{name}_ms": statistics.median(timed(path, 1, iterations)) * 1000 for name, path in paths.items()}
    vectors = encoder.backend.encode_image(np.stack([paths["exact"](), paths["fast"]()]).astype(np.float32))
    result["fast_vs_exact_cosine"] = float(vectors[0] @ vectors[1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--precision", default="fp32", help="fp32, int8 (onnx) or bf16 (torch)")
    parser.add_argument("--image-iterations", type=int, default=3)
    parser.add_argument("--text-iterations", type=int, default=30)
    parser.add_argument("--jpeg", type=Path, help="also time fast vs exact preprocessing of this JPEG")
    args = parser.parse_args()
    began = time.perf_counter()
    encoder = load_encoder(args.model, args.backend, args.precision)
    result = {"backend": encoder.backend_name, "precision": encoder.precision, "load_s": time.perf_counter() - began}
    result.update(measure(encoder, args.image_iterations, args.text_iterations))
    if args.precision != "fp32":
        result.update(parity_with_fp32(encoder, args.model))
    if args.jpeg:
        result["preprocessing"] = measure_preprocessing(encoder, args.model, args.jpeg, iterations=5)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
