"""The benchmark's model: full-size CLIP ViT-B/32 with random weights, built once into bench/.cache/.

Timings, memory and tokenization depend only on the architecture and the tokenizer, which ../shared provides
without the weights; random weights make the vectors meaningless but the cost real.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODEL = REPO_ROOT.parent / "shared" / "models" / "clip-vit-base-patch32"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
BUILT_MODEL = CACHE_DIR / "clip-vit-base-patch32-random"
NOT_COPIED = {"config.json", "README.md"}  # config.json is written by save_pretrained; README describes ../shared


class ModelUnavailable(RuntimeError):
    """Neither CLIP_MODEL nor ../shared/models/clip-vit-base-patch32 is there: the bench cannot run."""


def model_dir() -> Path:
    """$CLIP_MODEL as given, else the random-weight model built from ../shared (building it on first use)."""
    if os.environ.get("CLIP_MODEL"):
        chosen = Path(os.environ["CLIP_MODEL"]).expanduser()
        if not (chosen / "config.json").is_file():
            raise ModelUnavailable(f"CLIP_MODEL={chosen} has no config.json; point it at a Hugging Face CLIP directory")
        return chosen
    if (BUILT_MODEL / "config.json").is_file():
        return BUILT_MODEL
    if not (SHARED_MODEL / "config.json").is_file():
        raise ModelUnavailable(
            f"no model: {SHARED_MODEL} does not exist and CLIP_MODEL is not set. "
            "Set CLIP_MODEL to a local CLIP checkpoint in Hugging Face format."
        )
    build_random_model(SHARED_MODEL, BUILT_MODEL)
    return BUILT_MODEL


def build_random_model(src: Path, out_dir: Path) -> None:
    """Full-size CLIP from `src`'s config, seeded random weights, plus `src`'s tokenizer and preprocessor files."""
    import torch  # heavy; only needed the first time
    from transformers import CLIPConfig, CLIPModel

    print(f"building full-size random-weight CLIP from {src} into {out_dir} (once) ...", flush=True)
    staging = out_dir.with_name(out_dir.name + ".partial")  # renamed at the end: a killed build is never reused
    shutil.rmtree(staging, ignore_errors=True)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig.from_pretrained(src)).eval().save_pretrained(staging)
    for item in src.iterdir():
        if item.is_file() and item.name not in NOT_COPIED:
            shutil.copyfile(item, staging / item.name)
    staging.rename(out_dir)


def vector_dimension(directory: Path) -> int:
    """projection_dim from the checkpoint's config: the length every returned vector must have."""
    return int(json.loads((directory / "config.json").read_text())["projection_dim"])
