"""The gallery indexer, measured: `python -m bench.gallery` prints its figures and one JSON line.

Indexer throughput: `python -m clip_vectorize.gallery index` (as a user runs it, in its own process) on a folder of
generated 2 MP photos, with the full-size random ViT-B/32 (bench/.cache), at each precision given; images/s from
the indexer's own summary (first image read to last point written; the model load is apart). The stores alone, at
scale, are `python -m bench.store_scale`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.model import CACHE_DIR, REPO_ROOT, model_dir
from bench.photo import ensure_photo


def photo_folder(count: int) -> Path:
    """`count` distinct 2 MP JPEGs (the bench photo, shifted and tinted per copy so no two hash alike)."""
    folder = CACHE_DIR / f"gallery-2mp-{count}"
    if len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    base = np.asarray(Image.open(ensure_photo(CACHE_DIR, "2mp")).convert("RGB"), np.int16)
    for i in range(count):
        shifted = np.roll(base, shift=(i * 7, i * 13), axis=(0, 1)) + (i % 11) - 5
        Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)).save(folder / f"car-{i:04d}.jpg", quality=90)
    return folder


def index_throughput(folder: Path, model: Path, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "CLIP_MODEL": str(model), "DEVICE": "cpu", "CLIP_PRECISION": precision,
               "HF_HUB_OFFLINE": "1", "QDRANT_PATH": str(Path(work) / "qdrant_data"), "PYTHONPATH": str(REPO_ROOT)}
        env.setdefault("CLIP_CACHE_DIR", str(CACHE_DIR / "cache"))
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "clip_vectorize.gallery", "index", str(folder), "--quiet"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - began
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    match = re.search(r"indexed (\d+) \(([\d.]+) images/s\)", done.stderr)
    loaded = re.search(r"model loaded in ([\d.]+) s", done.stderr)
    return {"indexed": int(match[1]), "images_per_s": float(match[2]), "command_wall_s": round(wall, 1),
            "model_load_s": float(loaded[1]) if loaded else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--precisions", default="fp32,int8")
    args = parser.parse_args()
    folder, model = photo_folder(args.photos), model_dir()
    result = {"photos": args.photos, "photo": "2 MP JPEG q90",
              "indexer": {p: index_throughput(folder, model, p) for p in args.precisions.split(",")}}
    for precision, figures in result["indexer"].items():
        print(f"indexer {precision}: {figures}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
