"""The benchmark's models, full-size with random weights, built once into bench/.cache/: CLIP ViT-B/32 and the
multilingual text towers (sentence-transformers clip-ViT-B-32-multilingual-v1, Taiyi-CLIP's Chinese BERT).

Timings, memory and tokenization depend only on the architecture and the tokenizer, which ../shared provides
without the weights; random weights make the vectors meaningless but the cost real.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
SHARED_MODEL = SHARED_MODELS / "clip-vit-base-patch32"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
BUILT_MODEL = CACHE_DIR / "clip-vit-base-patch32-random"
NOT_COPIED = {"config.json", "README.md"}  # config.json is written by save_pretrained; README describes ../shared
MULTILINGUAL_SOURCES = {  # format -> its folder in ../shared (config and tokenizer, no weights)
    "sentence-transformers": "clip-ViT-B-32-multilingual-v1",
    "taiyi": "taiyi-clip-chinese-bert",
}


class ModelUnavailable(RuntimeError):
    """A model the bench needs is neither given (CLIP_MODEL) nor in ../shared/models to build from."""


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
    staged_build("CLIP", src, out_dir, lambda staging: _build_clip(src, staging))


def multilingual_dir(fmt: str) -> Path:
    """The random-weight multilingual tower of `fmt` (a key of MULTILINGUAL_SOURCES), built on first use."""
    src = SHARED_MODELS / MULTILINGUAL_SOURCES[fmt]
    out_dir = CACHE_DIR / f"{src.name}-random"
    if (out_dir / "config.json").is_file():
        return out_dir
    if not (src / "config.json").is_file():
        raise ModelUnavailable(f"no {fmt} tower: {src} does not exist")
    builders = {"sentence-transformers": _build_sentence_transformers, "taiyi": _build_taiyi}
    staged_build(f"{fmt} tower", src, out_dir, lambda staging: builders[fmt](src, staging))
    return out_dir


def staged_build(what: str, src: Path, out_dir: Path, build: Callable[[Path], None]) -> None:
    """`build(staging)`, then rename staging to `out_dir`: a killed build is never reused."""
    print(f"building full-size random-weight {what} from {src} into {out_dir} (once) ...", flush=True)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    build(staging)
    staging.rename(out_dir)


def _build_clip(src: Path, staging: Path) -> None:
    import torch  # heavy; only needed the first time
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    CLIPModel(CLIPConfig.from_pretrained(src)).eval().save_pretrained(staging)
    for item in src.iterdir():
        if item.is_file() and item.name not in NOT_COPIED:
            shutil.copyfile(item, staging / item.name)


def _build_sentence_transformers(src: Path, staging: Path) -> None:
    """The recipe of ../shared/models/clip-ViT-B-32-multilingual-v1/README.md: DistilBERT + Dense 768 -> 512."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    shutil.copytree(src, staging)
    DistilBertModel(DistilBertConfig.from_pretrained(src)).save_pretrained(staging)
    torch.save({"linear.weight": torch.randn(512, 768) * 0.02}, staging / "2_Dense" / "pytorch_model.bin")


def _build_taiyi(src: Path, staging: Path) -> None:
    """The recipe of ../shared/models/taiyi-clip-chinese-bert/README.md: BERT-base with 512 logits."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    shutil.copytree(src, staging)
    BertForSequenceClassification(BertConfig.from_pretrained(src)).save_pretrained(staging)


def vector_dimension(directory: Path) -> int:
    """projection_dim from the checkpoint's config: the length every returned vector must have."""
    return int(json.loads((directory / "config.json").read_text())["projection_dim"])
