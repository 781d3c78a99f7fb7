"""Fixtures every test may use: tiny CLIP checkpoints built once per run, settings for them, a loaded encoder."""

import os
from pathlib import Path

# Before transformers/huggingface_hub are imported: they read these once, at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest

from support.models import PROJECTION_DIM, build_small_clip, build_tiny_clip
from support.multilingual import build_tiny_mclip, build_tiny_sentence_transformer, build_tiny_taiyi


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_settings(tiny_model_dir):
    """Settings for the tiny model on CPU, with the ONNX export cached beside it (never in the user's home)."""
    from config import Settings

    def settings(**overrides) -> Settings:
        return Settings(**{"model": str(tiny_model_dir), "device": "cpu",
                           "cache_dir": str(tiny_model_dir.parent / "cache"), **overrides})

    return settings


@pytest.fixture(scope="session")
def tiny_encoder(tiny_settings):
    from clip_encoder import ClipEncoder

    encoder = ClipEncoder.load(tiny_settings(batch_size=4))
    yield encoder
    encoder.close()


@pytest.fixture(scope="session")
def multilingual_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint of each published multilingual format, by format name, each of CLIP's dimension."""
    root = tmp_path_factory.mktemp("multilingual")
    builders = {"sentence-transformers": build_tiny_sentence_transformer, "m-clip": build_tiny_mclip,
                "bert-sequence-classification": build_tiny_taiyi}
    return {fmt: build(root / fmt, dimension=PROJECTION_DIM) for fmt, build in builders.items()}


@pytest.fixture(scope="session")
def tiny_multilingual_encoder(tiny_settings, multilingual_dirs):
    """The tiny CLIP with the tiny sentence-transformers tower as its multilingual encoder (routing auto)."""
    from clip_encoder import ClipEncoder

    tower = multilingual_dirs["sentence-transformers"]
    encoder = ClipEncoder.load(tiny_settings(batch_size=4, multilingual_model=str(tower)))
    yield encoder
    encoder.close()


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A few times heavier than the tiny model: slow enough that loopback clients can overload the service."""
    return build_small_clip(tmp_path_factory.mktemp("models") / "small-clip")
