"""Fixtures every test may use: tiny CLIP checkpoints built once per run, settings for them, a loaded encoder."""

import os
from pathlib import Path

# Before transformers/huggingface_hub are imported: they read these once, at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest

from support.models import build_small_clip, build_tiny_clip


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
def small_model_dir(tmp_path_factory) -> Path:
    """A few times heavier than the tiny model: slow enough that loopback clients can overload the service."""
    return build_small_clip(tmp_path_factory.mktemp("models") / "small-clip")
