"""The CUDA path in one command: `python -m bench.cuda_check --model DIR [--multilingual DIR]`.

Loads the service's own encoder on CUDA at fp32 and at fp16 (torch, as DEVICE=cuda runs it), and reports for each
the lowest cosine of its text and image vectors to CPU fp32's on the same inputs, and the towers' throughput at
batch 1 and 32. Prints one JSON object. `--device cpu` runs the same steps on CPU (fp32 only), to check the script
itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too: the project is importable

from bench.tower import text_inputs  # noqa: E402
from clip_encoder import ClipEncoder  # noqa: E402
from config import Settings  # noqa: E402

BATCHES = (1, 32)


def load(model: str, multilingual: str | None, device: str, precision: str) -> ClipEncoder:
    env = {**os.environ, "CLIP_MODEL": model, "DEVICE": device, "CLIP_PRECISION": precision,
           "CLIP_BACKEND": "torch", "CLIP_MULTILINGUAL_MODEL": multilingual or ""}
    return ClipEncoder.load(Settings.from_env(env))


def outputs(encoder: ClipEncoder) -> dict[str, np.ndarray]:
    """Each tower's vectors for fixed inputs: 8 noise images, 16 token rows (CLIP's ids; the multilingual tower's
    own tokenizer for a few Chinese queries)."""
    pixels = np.random.default_rng(1).normal(0, 1, (8, 3, 224, 224)).astype(np.float32)
    ids, mask = text_inputs(16)
    result = {"image": encoder.backend.encode_image(pixels), "clip_text": encoder.backend.encode_text(ids, mask)}
    if "multilingual" in encoder.texts:
        result["multilingual_text"] = encoder.encode_texts(["红色的宝马SUV", "一辆白色轿车", "黑色越野车"],
                                                           "multilingual").vectors
    return result


def throughput(encoder: ClipEncoder, seconds: float = 3.0) -> dict[str, float]:
    """Items per second of each CLIP tower at batch 1 and 32, after a warm-up pass."""
    figures = {}
    for batch in BATCHES:
        pixels = np.zeros((batch, 3, 224, 224), np.float32)
        ids, mask = text_inputs(batch)
        calls = {"image": lambda pixels=pixels: encoder.backend.encode_image(pixels),
                 "text": lambda ids=ids, mask=mask: encoder.backend.encode_text(ids, mask)}
        for tower, call in calls.items():
            call()
            count, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds:
                call()
                count += batch
            figures[f"{tower}_batch{batch}_per_s"] = round(count / (time.perf_counter() - began), 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--multilingual")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    reference = outputs(load(args.model, args.multilingual, "cpu", "fp32"))
    report: dict[str, dict] = {}
    for precision in ("fp32", "fp16") if args.device == "cuda" else ("fp32",):
        encoder = load(args.model, args.multilingual, args.device, precision)
        ours = outputs(encoder)
        report[precision] = {f"{tower}_min_cosine_to_cpu_fp32": round(float(np.min(np.sum(
            ours[tower] * reference[tower], axis=1))), 6) for tower in reference}
        report[precision].update(throughput(encoder))
        encoder.close()
    print(json.dumps({"device": args.device, **report}))


if __name__ == "__main__":
    main()
