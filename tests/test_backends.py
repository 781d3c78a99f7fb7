"""Inference backends: ONNX Runtime and torch agree; the ONNX export is cached and reused; auto picks and falls back."""

import logging

import numpy as np
import pytest
import torch

from clip_encoder import ClipEncoder
from clip_vectorize.errors import ModelLoadError
from clip_vectorize.inference import model_loading, onnx_export
from clip_vectorize.inference.model_loading import pick_backend
from clip_vectorize.inference.text_path import group_by_length
from config import Settings
from support.images import encode_image_bytes, photo_like

TEXTS = ["红色的宝马SUV", "a red car", "hello", "white sedan parked in the city at night", "x " * 60]


@pytest.fixture(scope="module")
def encoders(tiny_settings):
    onnx, torch_ = ClipEncoder.load(tiny_settings(backend="onnx")), ClipEncoder.load(tiny_settings(backend="torch"))
    yield onnx, torch_
    onnx.close()
    torch_.close()


def test_onnx_and_torch_backends_give_the_same_text_vectors(encoders):
    onnx, torch_ = encoders
    assert (onnx.backend_name, torch_.backend_name) == ("onnx", "torch")
    cosines = np.sum(onnx.encode_texts(TEXTS).vectors * torch_.encode_texts(TEXTS).vectors, axis=1)
    assert cosines.min() >= 0.99999


def test_onnx_and_torch_backends_give_the_same_image_vectors(encoders):
    onnx, torch_ = encoders
    pixels = np.stack([onnx.image.prepare(encode_image_bytes(photo_like(400, 300, seed=n))) for n in range(3)])
    cosines = np.sum(onnx.backend.encode_image(pixels) * torch_.backend.encode_image(pixels), axis=1)
    assert cosines.min() >= 0.99999


def test_auto_uses_onnx_on_cpu_and_torch_on_cuda():
    assert pick_backend("auto", "cpu") == "onnx"
    assert pick_backend("auto", "cuda") == "torch"
    with pytest.raises(ModelLoadError, match="CLIP_BACKEND=onnx runs on CPU only"):
        pick_backend("onnx", "cuda")


def test_a_restart_reuses_the_cached_export(tiny_model_dir, tmp_path, monkeypatch):
    first = onnx_export.cached_towers("clip", tiny_model_dir, tmp_path)
    monkeypatch.setattr(onnx_export, "export_in_child_process", lambda *args: pytest.fail("exported again"))
    assert onnx_export.cached_towers("clip", tiny_model_dir, tmp_path) == first


def test_new_weights_or_library_versions_make_a_new_export_key(tiny_model_dir, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for source in tiny_model_dir.iterdir():
        (model_dir / source.name).write_bytes(source.read_bytes())
    key = onnx_export.export_key("clip", model_dir)
    (model_dir / "model.safetensors").touch()  # same name, new mtime: a re-saved checkpoint
    assert onnx_export.export_key("clip", model_dir) != key
    key = onnx_export.export_key("clip", model_dir)
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert onnx_export.export_key("clip", model_dir) != key


def test_auto_falls_back_to_torch_when_the_onnx_export_fails(tiny_settings, monkeypatch, caplog):
    monkeypatch.setattr(model_loading, "cached_towers", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with caplog.at_level(logging.WARNING, logger="clip_vectorize.inference.model_loading"):
        encoder = ClipEncoder.load(tiny_settings())
    assert encoder.backend_name == "torch" and "falling back to torch" in caplog.text and "disk full" in caplog.text
    encoder.close()


def test_an_explicit_onnx_backend_that_fails_stops_startup(tiny_settings, monkeypatch):
    monkeypatch.setattr(model_loading, "cached_towers", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(ModelLoadError, match="CLIP_BACKEND=onnx.*disk full.*CLIP_CACHE_DIR"):
        ClipEncoder.load(tiny_settings(backend="onnx"))


def test_fp16_is_refused_on_cpu():
    with pytest.raises(ValueError, match="CLIP_PRECISION=fp16 needs the torch backend on CUDA"):
        Settings.from_env({"CLIP_PRECISION": "fp16", "DEVICE": "cpu"})


@pytest.mark.parametrize(
    "lengths, expected",
    [
        ([10, 11, 12, 13], [[0, 1, 2, 3]]),  # a few tokens of padding beat three more passes
        ([10, 36], [[0], [1]]),  # 26 tokens of padding cost more than a second pass
        ([30, 5, 31, 6], [[1, 3], [0, 2]]),  # grouped by length, whatever the input order
    ],
)
def test_texts_share_a_pass_only_while_padding_costs_less_than_a_pass(lengths, expected):
    assert group_by_length(lengths) == expected
